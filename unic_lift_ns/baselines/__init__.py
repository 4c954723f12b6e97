"""Baseline methods re-implemented on the UniC-Lift backbone, each registered as its own `ns-train` method."""
