"""What a 2D segmenter backend of ``unic-lift-masks`` provides, and how ``--model`` picks one."""

from __future__ import annotations

from typing import List, Optional, Protocol

import numpy as np

from unic_lift_ns.masks.segments import Segments

CLASSICAL = "classical"
"""``--model`` value of the weight-free fallback (superpixels merged by colour)."""


class Segmenter(Protocol):
    """A 2D segmenter: RGB images in, candidate segments out."""

    model: str
    """What ``--model`` named (a model id, a local folder or ``classical``)."""
    revision: Optional[str]
    """The model's revision (hub commit hash) where known."""
    thing_classes: Optional[List[str]]
    """Names of the thing classes ``Segments.thing_class`` indexes; None when the model knows no classes."""

    def segment(self, images: List[np.ndarray]) -> List[Segments]:
        """Segments of each uint8 [H, W, 3] RGB image, at the image's size."""
        ...
