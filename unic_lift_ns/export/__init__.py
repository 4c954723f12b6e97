"""Exporting UniC-Lift scenes: standard 3DGS PLY files, per-instance splats and point clouds, scene editing."""
