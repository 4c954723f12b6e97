"""The models: the segmentation backbone (Splatfacto plus rendered per-Gaussian features) and UniC-Lift on it;
the baselines' models (in ``unic_lift_ns.baselines``) subclass the backbone too."""
