"""`unic-lift-bench`: train every method and ablation with one budget on generated scenes and tabulate the scores."""
