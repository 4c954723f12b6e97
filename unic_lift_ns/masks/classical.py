"""The weight-free fallback of ``unic-lift-masks``: SLIC superpixels merged by mean colour (scikit-image).

LOW QUALITY: segments follow colour, not objects (a two-coloured object is split, touching objects of one colour
merge). It exists for machines with no segmentation model at all; a learned segmenter is far better.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional

import numpy as np

from unic_lift_ns.masks.segmenter import CLASSICAL
from unic_lift_ns.masks.segments import Segments


@dataclass
class ClassicalOptions:
    """Settings of ``--model classical``."""

    superpixels: int = 400
    """Number of SLIC superpixels per image (before merging)."""
    compactness: float = 10.0
    """SLIC compactness: higher gives squarer superpixels, lower follows colour more closely."""
    merge_threshold: float = 18.0
    """Neighbouring superpixels whose mean colours (RGB, 0-255) differ by less than this are merged."""


class ClassicalSegmenter:
    """SLIC superpixels (``skimage.segmentation.slic``) merged by a region adjacency graph of mean colours
    (``skimage.graph.rag_mean_color`` + ``cut_threshold``). Knows no classes."""

    model = CLASSICAL
    revision: Optional[str] = None
    thing_classes: Optional[List[str]] = None

    def __init__(self, options: ClassicalOptions) -> None:
        self.options = options

    def segment(self, images: List[np.ndarray]) -> List[Segments]:
        return [self._segment_one(image) for image in images]

    def _segment_one(self, image: np.ndarray) -> Segments:
        from skimage import graph, segmentation

        superpixels = segmentation.slic(
            image, n_segments=self.options.superpixels, compactness=self.options.compactness, start_label=1
        )
        rag = graph.rag_mean_color(image, superpixels)
        merged = graph.cut_threshold(superpixels, rag, self.options.merge_threshold)
        labels = segmentation.relabel_sequential(merged + 1)[0]
        return Segments(labels=labels, scores=np.ones(int(labels.max()), dtype=np.float32))
