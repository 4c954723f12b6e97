"""A simulated off-the-shelf 2D instance segmenter.

It turns a ground-truth instance map into what a per-image segmenter (Detic, Mask2Former, SAM) would
give: IDs drawn independently per view (so they are inconsistent across views), and the typical errors
of such models. The noise model, in the order applied:

1. missed small objects: an object covering less than `miss_max_area` of the image is dropped
   (left unlabelled) with probability `miss_prob`;
2. merges: each pair of touching objects becomes one segment with probability `merge_prob`;
3. splits: each object larger than `split_min_area` is cut in two by a random line through its
   centroid with probability `split_prob`;
4. boundary jitter: labels are resampled through a smooth random displacement field of
   `jitter_px` pixels (ragged, slightly wrong boundaries);
5. unlabelled pixels: pixels within `unlabelled_band_px` of a boundary are set to 0 (ignore)
   with probability `unlabelled_prob`.

The background (floor) is one more segment, as a panoptic segmenter's "stuff" segment. Semantic masks
come from the same simulated segmenter: 0 = background, 1 = object, 255 = unlabelled.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple

import numpy as np
from scipy import ndimage

MAX_ID = 65535
SEMANTIC_BACKGROUND, SEMANTIC_OBJECT, SEMANTIC_IGNORE = 0, 1, 255


@dataclass(frozen=True)
class SegmenterNoise:
    """Error rates of the simulated 2D segmenter (see the module docstring for the order)."""

    miss_prob: float = 0.0
    """Probability of missing an object smaller than `miss_max_area`."""
    miss_max_area: float = 0.0
    """Area (fraction of the image) under which an object may be missed."""
    merge_prob: float = 0.0
    """Probability that two touching objects are merged into one segment."""
    split_prob: float = 0.0
    """Probability that an object is split into two segments."""
    split_min_area: float = 0.002
    """Only objects covering at least this fraction of the image are split."""
    jitter_px: float = 0.0
    """Amplitude (pixels) of the smooth boundary displacement."""
    unlabelled_prob: float = 0.0
    """Probability that a pixel near a boundary is left unlabelled (ID 0)."""
    unlabelled_band_px: int = 1
    """Half-width (pixels) of the boundary band where pixels may be left unlabelled."""


PRESETS: Dict[str, SegmenterNoise] = {
    "clean": SegmenterNoise(),
    "realistic": SegmenterNoise(miss_prob=0.5, miss_max_area=0.0015, merge_prob=0.15, split_prob=0.05, jitter_px=1.0,
                                unlabelled_prob=0.5, unlabelled_band_px=1),
    "hard": SegmenterNoise(miss_prob=0.8, miss_max_area=0.004, merge_prob=0.4, split_prob=0.2, jitter_px=2.5,
                           unlabelled_prob=0.8, unlabelled_band_px=2),
}  # fmt: skip


def _touching_pairs(labels: np.ndarray) -> np.ndarray:
    """Unique pairs (a, b), a < b, of different positive labels that are 4-neighbours somewhere."""
    pairs = []
    for a, b in ((labels[:, :-1], labels[:, 1:]), (labels[:-1, :], labels[1:, :])):
        sel = (a != b) & (a > 0) & (b > 0)
        pairs.append(np.stack([np.minimum(a[sel], b[sel]), np.maximum(a[sel], b[sel])], axis=-1))
    return np.unique(np.concatenate(pairs), axis=0)


def _merge(labels: np.ndarray, objects: np.ndarray, prob: float, rng: np.random.Generator) -> np.ndarray:
    parent = {int(k): int(k) for k in objects}

    def find(k: int) -> int:
        while parent[k] != k:
            k = parent[k]
        return k

    for a, b in _touching_pairs(np.where(np.isin(labels, objects), labels, 0)):
        if rng.random() < prob:
            ra, rb = find(int(a)), find(int(b))
            parent[max(ra, rb)] = min(ra, rb)
    lut = np.arange(labels.max() + 1)
    for k in parent:
        lut[k] = find(k)
    return lut[labels]


def _split(labels: np.ndarray, objects: np.ndarray, cfg: SegmenterNoise, rng: np.random.Generator) -> np.ndarray:
    out = labels.copy()
    next_id = int(labels.max()) + 1
    ys, xs = np.indices(labels.shape)
    areas = np.bincount(labels.ravel(), minlength=int(labels.max()) + 1)
    for k in objects:
        if areas[k] < cfg.split_min_area * labels.size or rng.random() >= cfg.split_prob:
            continue
        sel = labels == k
        angle = rng.uniform(0, np.pi)
        side = (xs - xs[sel].mean()) * np.cos(angle) + (ys - ys[sel].mean()) * np.sin(angle) > 0
        out[sel & side] = next_id
        next_id += 1
    return out


def _jitter(labels: np.ndarray, amplitude: float, rng: np.random.Generator) -> np.ndarray:
    h, w = labels.shape
    sigma = max(2.0, 0.02 * max(h, w))
    shift = []
    for _ in range(2):
        field = ndimage.gaussian_filter(rng.normal(size=(h, w)), sigma)
        shift.append(field / (field.std() + 1e-12) * amplitude)
    ys, xs = np.indices((h, w))
    yy = np.clip(np.rint(ys + shift[0]), 0, h - 1).astype(np.int64)
    xx = np.clip(np.rint(xs + shift[1]), 0, w - 1).astype(np.int64)
    return labels[yy, xx]


def simulate_segmenter(
    gt_instances: np.ndarray, noise: SegmenterNoise, rng: np.random.Generator
) -> Tuple[np.ndarray, np.ndarray]:
    """Simulated segmenter output for one view.

    Args:
        gt_instances: [H, W] ground-truth IDs, 0 = background, k > 0 = object k.
        noise: error rates.
        rng: this view's random generator (views are independent).

    Returns:
        instance mask [H, W] uint16 (random per-view IDs in 1..65535, 0 = unlabelled) and
        semantic mask [H, W] uint8 (0 background, 1 object, 255 unlabelled).
    """
    background = int(gt_instances.max()) + 1
    labels = np.where(gt_instances == 0, background, gt_instances).astype(np.int64)
    objects = np.setdiff1d(np.unique(labels), [background])

    areas = np.bincount(labels.ravel(), minlength=background + 1)
    missed = [k for k in objects if areas[k] < noise.miss_max_area * labels.size and rng.random() < noise.miss_prob]
    labels[np.isin(labels, missed)] = 0
    objects = np.setdiff1d(objects, missed)

    if noise.merge_prob > 0 and len(objects) > 1:
        labels = _merge(labels, objects, noise.merge_prob, rng)
    if noise.split_prob > 0:
        labels = _split(labels, np.setdiff1d(np.unique(labels), [0, background]), noise, rng)
    if noise.jitter_px > 0:
        labels = _jitter(labels, noise.jitter_px, rng)
    if noise.unlabelled_prob > 0:
        size = 2 * noise.unlabelled_band_px + 1
        band = ndimage.grey_dilation(labels, size=size) != ndimage.grey_erosion(labels, size=size)
        labels[band & (rng.random(labels.shape) < noise.unlabelled_prob)] = 0

    semantics = np.full(labels.shape, SEMANTIC_OBJECT, dtype=np.uint8)
    semantics[labels == background] = SEMANTIC_BACKGROUND
    semantics[labels == 0] = SEMANTIC_IGNORE

    segments = np.setdiff1d(np.unique(labels), [0])
    lut = np.zeros(int(labels.max()) + 1, dtype=np.uint16)
    lut[segments] = rng.choice(np.arange(1, MAX_ID + 1), size=len(segments), replace=False)
    return lut[labels], semantics
