"""The label bound (unic_lift_ns.eval.label_bound): each Gaussian takes the GT object its centre shows most."""

from __future__ import annotations

import numpy as np

from unic_lift_ns.eval.label_bound import gt_gaussian_labels

from test_mask_split import SIZE, _top_down_views

NO_LABEL = 4096


def _gt_map(viewmat: np.ndarray, K: np.ndarray, left: int, right: int) -> np.ndarray:
    """The GT instance map of a top-down view: object ``left`` on x < 1, ``right`` on x >= 1 of the square
    [0, 2] x [0, 1] of the plane z = 0, background (0) around it."""
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
    x = centre[0] + (u - K[0, 2]) / K[0, 0] * centre[2]
    y = centre[1] - (v - K[1, 2]) / K[1, 1] * centre[2]
    gt = np.where(x < 1, left, right)
    gt[(x < 0) | (x > 2) | (y < 0) | (y > 1)] = 0
    return gt


def test_each_centre_takes_the_object_most_views_show_and_the_background_takes_none() -> None:
    rng = np.random.default_rng(0)
    viewmats, Ks = _top_down_views(5, rng)
    # two of the five views swap the objects: the majority still decides
    gt = [_gt_map(vm, K, *((9, 7) if view < 2 else (7, 9))) for view, (vm, K) in enumerate(zip(viewmats, Ks))]
    means = np.array([
        [0.5, 0.5, 0.0],  # object 7 in three views of five
        [1.5, 0.5, 0.0],  # object 9
        [1.0, 1.3, 0.0],  # on the background
        [0.5, 0.5, -1.0],  # under the first one, hidden in every view
        [40.0, 0.5, 0.0],  # in no view
    ])  # fmt: skip
    labels = gt_gaussian_labels(means, viewmats, Ks, gt, depth_tolerance=0.1, no_label=NO_LABEL)
    assert labels.dtype == np.int64
    assert labels.tolist() == [7, 9, NO_LABEL, NO_LABEL, NO_LABEL]


def test_no_views_leave_every_gaussian_without_a_label() -> None:
    labels = gt_gaussian_labels(np.zeros((3, 3)), np.zeros((0, 4, 4)), np.zeros((0, 3, 3)), [], 0.1, NO_LABEL)
    assert labels.tolist() == [NO_LABEL] * 3
