"""UniC-Lift for nerfstudio: lift inconsistent 2D instance masks to consistent 3D Gaussian labels."""

__version__ = "0.1.0"
