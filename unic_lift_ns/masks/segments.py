"""One view's 2D segments and the rule that turns them into the label maps training reads.

A segmenter returns candidate segments: overlapping boolean masks (Segment Anything) or a label map whose segments
do not overlap (a panoptic model, superpixels). :func:`paint_label_maps` applies one documented rule to both:

1. Candidates smaller than ``min_area`` pixels are dropped.
2. Overlaps (masks only) are resolved by ``order``: ``"area"`` paints the largest mask first and the smallest
   last, so a small object inside a larger mask keeps its pixels and the larger mask keeps the rest; ``"score"``
   paints the lowest score first, so the segmenter's most confident mask wins every pixel it claims.
3. A segment whose remaining visible area is below ``min_area`` becomes unlabelled (0).
4. Holes: a connected region of unlabelled pixels that does not touch the image border, borders exactly one
   segment and has at most ``fill_holes_below`` pixels takes that segment's ID; every other unlabelled pixel stays
   0 (ignored by the losses).
5. At most ``max_segments`` segments are kept (``2^d - 1`` for a d-dim embedding, UniC-Lift's Eq. 3 bit
   decoding): the largest by visible area; the rest become 0 and the result says how many were dropped.
6. IDs are 1..n by decreasing visible area. Semantic map (where the segmenter knows classes): the segment's class
   (1 for every thing class with ``per_class=False``, else 1 + its index among the thing classes), 0 for stuff,
   255 for unlabelled pixels, as the datamanager reads it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Optional

import numpy as np
from scipy import ndimage

SEMANTIC_STUFF, SEMANTIC_UNLABELLED = 0, 255
"""Semantic mask values of background/stuff pixels and of unlabelled pixels."""


@dataclass
class Segments:
    """Candidate segments of one view, either as overlapping ``masks`` or as a non-overlapping ``labels`` map.

    Exactly one of ``masks`` and ``labels`` is set; per-segment arrays are indexed like ``masks`` (segment ``i``)
    or by label - 1 (label ``i + 1`` of ``labels``, 0 = none)."""

    scores: np.ndarray
    """float [N]: the segmenter's confidence of each segment (1 where it has none)."""
    masks: Optional[np.ndarray] = None
    """bool [N, H, W]: possibly overlapping masks."""
    labels: Optional[np.ndarray] = None
    """int [H, W]: non-overlapping segments 1..N, 0 where none."""
    thing_class: Optional[np.ndarray] = None
    """int [N]: index of the segment's thing class (0..K-1), -1 for stuff; None when the segmenter knows no
    classes (no semantic map is written)."""

    def __post_init__(self) -> None:
        if (self.masks is None) == (self.labels is None):
            raise ValueError("Segments need exactly one of masks and labels")
        count = len(self.masks) if self.masks is not None else int(self.labels.max(initial=0))
        if len(self.scores) != count or (self.thing_class is not None and len(self.thing_class) != count):
            raise ValueError(f"Segments: {count} segments but {len(self.scores)} scores")

    @property
    def shape(self) -> tuple:
        """(H, W) of the view."""
        return (self.masks if self.masks is not None else self.labels).shape[-2:]


@dataclass
class LabelMaps:
    """The label maps of one view, as written to ``instance_masks/`` and ``semantic_masks/``."""

    instance: np.ndarray
    """uint16 [H, W]: 0 = unlabelled, 1..n segments by decreasing area."""
    semantic: Optional[np.ndarray]
    """uint8 [H, W] (0 stuff, 1.. thing classes, 255 unlabelled), None without classes."""
    num_candidates: int
    """Candidates the segmenter returned."""
    num_dropped: int
    """Segments dropped by the ``max_segments`` cap (step 5)."""


def paint_label_maps(
    segments: Segments,
    min_area: int,
    max_segments: int,
    fill_holes_below: int = 0,
    order: Literal["area", "score"] = "area",
    per_class: bool = False,
) -> LabelMaps:
    """Apply the module's rule (steps 1-6) to one view's ``segments``."""
    if max_segments < 1 or max_segments > np.iinfo(np.uint16).max:
        raise ValueError(f"max_segments must be in [1, 65535], got {max_segments}")
    painted = _paint(segments, min_area, order)  # steps 1-2: 0 = none, i + 1 = candidate i
    areas = np.bincount(painted.ravel(), minlength=len(segments.scores) + 1)
    areas[0] = 0
    painted[(areas < max(min_area, 1))[painted]] = 0  # step 3
    painted = _fill_holes(painted, fill_holes_below)  # step 4
    areas = np.bincount(painted.ravel(), minlength=len(segments.scores) + 1)
    areas[0] = 0
    present = np.flatnonzero(areas)
    by_area = present[np.argsort(-areas[present], kind="stable")]
    kept, dropped = by_area[:max_segments], by_area[max_segments:]  # step 5
    new_id = np.zeros(len(areas), dtype=np.int64)
    new_id[kept] = np.arange(1, len(kept) + 1)  # step 6
    instance = new_id[painted].astype(np.uint16)
    semantic = None
    if segments.thing_class is not None:
        thing = np.asarray(segments.thing_class, dtype=np.int64)
        classes = np.where(thing < 0, SEMANTIC_STUFF, (thing + 1) if per_class else 1)
        if classes.max(initial=0) >= SEMANTIC_UNLABELLED:
            raise ValueError(f"{classes.max()} thing classes do not fit an 8-bit semantic mask (255 = unlabelled)")
        lookup = np.concatenate([[SEMANTIC_UNLABELLED], classes]).astype(np.uint8)
        semantic = np.where(instance > 0, lookup[painted], SEMANTIC_UNLABELLED).astype(np.uint8)
    return LabelMaps(instance, semantic, num_candidates=len(segments.scores), num_dropped=len(dropped))


def _paint(segments: Segments, min_area: int, order: Literal["area", "score"]) -> np.ndarray:
    """Steps 1-2: an int map of candidate index + 1 (0 = none)."""
    if segments.labels is not None:  # no overlaps: step 3 drops the small segments
        return np.array(segments.labels, dtype=np.int64)
    masks = np.asarray(segments.masks, dtype=bool)
    painted = np.zeros(segments.shape, dtype=np.int64)
    areas = masks.reshape(len(masks), -1).sum(axis=1)
    if order == "area":
        sequence = np.argsort(-areas, kind="stable")  # largest first, smallest painted last (on top)
    elif order == "score":
        sequence = np.argsort(np.asarray(segments.scores), kind="stable")  # most confident painted last
    else:
        raise ValueError(f"order must be 'area' or 'score', got {order!r}")
    for i in sequence:
        if areas[i] >= min_area:
            painted[masks[i]] = i + 1
    return painted


def _fill_holes(painted: np.ndarray, max_area: int) -> np.ndarray:
    """Step 4: give small enclosed unlabelled regions bordered by a single segment that segment's ID."""
    if max_area <= 0:
        return painted
    holes, count = ndimage.label(painted == 0)
    if count == 0:
        return painted
    sizes = np.bincount(holes.ravel())
    on_edge = set(np.unique(np.concatenate([holes[0], holes[-1], holes[:, 0], holes[:, -1]])).tolist())
    filled = painted.copy()
    for h, box in enumerate(ndimage.find_objects(holes), start=1):
        if sizes[h] > max_area or h in on_edge:
            continue
        grown = tuple(slice(max(s.start - 1, 0), s.stop + 1) for s in box)
        hole = holes[grown] == h
        ring = ndimage.binary_dilation(hole) & ~hole
        neighbours = np.unique(painted[grown][ring])
        if len(neighbours) == 1 and neighbours[0] != 0:
            filled[grown][hole] = neighbours[0]
    return filled
