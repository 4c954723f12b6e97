"""The "2D segmenter + tracking" baseline (Contrastive Lift, Table 4, variant 1).

A 2D segmenter labels every view independently, so its instance IDs are not consistent across views. This
baseline makes them consistent by tracking: walking the frames in capture order, the segments of frame i+1
are matched to the (already tracked) segments of frame i by Hungarian matching on their 2D IoU. A match is
kept only if its IoU exceeds ``min_iou``; unmatched segments start new tracks. Segments are only compared
between consecutive frames, so an object that leaves the view and comes back gets a new ID. Label 0
(unlabelled) is never tracked and stays 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.optimize import linear_sum_assignment

DEFAULT_MIN_IOU = 0.1
"""Matches with an IoU at or below this are dropped. The paper gives no threshold; 0.1 only rejects pairs
that barely touch, which otherwise the Hungarian matching would pair up when one object leaves the view
while another one enters it."""


def track_segments(label_maps: Sequence[np.ndarray], min_iou: float = DEFAULT_MIN_IOU) -> list[np.ndarray]:
    """Relabel per-view instance maps (in capture order) with track IDs 1, 2, ... consistent across views."""
    if not 0.0 <= min_iou < 1.0:
        raise ValueError(f"min_iou must lie in [0, 1), got {min_iou}")
    tracked: list[np.ndarray] = []
    next_id = 1
    for index, labels in enumerate(label_maps):
        labels = np.asarray(labels, dtype=np.int64)
        ids, inverse = np.unique(labels, return_inverse=True)
        new_ids = np.zeros_like(ids)
        if tracked:
            previous = tracked[-1]
            if previous.shape != labels.shape:
                raise ValueError(f"Frame {index} has shape {labels.shape}, frame {index - 1} has {previous.shape}")
            prev_ids, iou = _iou_matrix(ids, inverse, previous)
            rows, cols = linear_sum_assignment(iou, maximize=True)
            keep = iou[rows, cols] > min_iou
            new_ids[rows[keep]] = prev_ids[cols[keep]]
        fresh = (new_ids == 0) & (ids != 0)
        new_ids[fresh] = np.arange(next_id, next_id + fresh.sum())
        next_id += int(fresh.sum())
        new_ids[ids == 0] = 0
        tracked.append(new_ids[inverse].reshape(labels.shape))
    return tracked


def _iou_matrix(ids: np.ndarray, inverse: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """IoU between the segments of the current frame (its sorted ``ids`` and each pixel's index into them)
    and those of the previous tracked frame. Returns the previous frame's IDs and the (len(ids), len(prev_ids))
    IoU matrix, where rows and columns of label 0 are zero so that they are never kept as a match."""
    prev_ids, prev_inverse = np.unique(previous, return_inverse=True)
    num_ids, num_prev = len(ids), len(prev_ids)
    pair_index = inverse.ravel() * num_prev + prev_inverse.ravel()
    intersection = np.bincount(pair_index, minlength=num_ids * num_prev).reshape(num_ids, num_prev)
    union = intersection.sum(1, keepdims=True) + intersection.sum(0, keepdims=True) - intersection
    iou = intersection / union
    iou[ids == 0, :] = 0.0
    iou[:, prev_ids == 0] = 0.0
    return prev_ids, iou
