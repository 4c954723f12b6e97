"""What a perfect labelling of a training's Gaussians would score: each Gaussian takes the ground-truth object its
centre shows in most train views. Every decoding, clustering or not, labels the same Gaussians, so this bounds them
all; what it misses is what the Gaussians, their blending and (where a pixel's class comes from it) the semantic
head lose (a diagnostic of #29's hard rows, not a method: it reads the scene's GT)."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from unic_lift_ns.eval.object_fates import most_frequent
from unic_lift_ns.mask_split import visible_segments


def gt_gaussian_labels(
    means: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    gt_instances: Sequence[np.ndarray],
    depth_tolerance: float,
    no_label: int,
) -> np.ndarray:
    """[N] int64: the GT object id (> 0) that each centre shows in most of the views that show it, seen like the mask
    split sees the train masks (:func:`~unic_lift_ns.mask_split.visible_segments`: in the image, in front of the
    camera, not behind a nearer centre), or ``no_label`` where the background (id 0) wins or no view shows it.

    Args:
        means: [N, 3] Gaussian centres.
        viewmats: [V, 4, 4] world-to-camera matrices (OpenCV axes).
        Ks: [V, 3, 3] intrinsics, in pixels of ``gt_instances``.
        gt_instances: V GT instance maps [H, W] (0 = background).
        depth_tolerance: a centre at most this far behind the nearest centre on its pixel is visible.
        no_label: the label of Gaussians without an object.
    """
    means = np.asarray(means, dtype=np.float64)
    hits, objects = [], []
    for viewmat, K, gt in zip(np.asarray(viewmats, np.float64), np.asarray(Ks, np.float64), gt_instances):
        index, shifted = visible_segments(means, viewmat, K, np.asarray(gt, np.int64) + 1, depth_tolerance)
        hits.append(index)
        objects.append(shifted - 1)  # the background is a segment too: it must be able to win
    labels = np.full(len(means), no_label, dtype=np.int64)
    if not hits:
        return labels
    gaussians, winners = most_frequent(np.concatenate(hits), np.concatenate(objects))
    labels[gaussians] = np.where(winners > 0, winners, no_label)
    return labels
