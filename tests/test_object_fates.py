"""The fates of GT objects under predicted label maps (unic_lift_ns.eval.object_fates) on hand-built maps."""

from __future__ import annotations

import numpy as np

from unic_lift_ns.eval.object_fates import ObjectFates, majority_labels, object_fates

NUM_CODES = 16


def test_majority_labels_takes_the_label_with_most_pixels_per_object():
    objects = np.array([0, 1, 1, 1, 2, 2, 2, 2])
    labels = np.array([9, 5, 7, 7, 3, 3, 4, 4])
    major = majority_labels(objects, labels)
    assert major[1] == 7 and major[2] in (3, 4) and 0 not in major


def test_object_fates_tells_own_shared_background_and_no_label_apart():
    # Six objects over two views of one row: 1 has its own label 5; 2 and 3 share label 6; 4 is predicted background
    # by the semantic head though its instance label is code 8; 5 is background with no code (label 0) under it;
    # 6 takes the no-code label 16 (no Gaussian votes for its pixels).
    gt = [np.array([[1, 1, 2, 2, 3, 4, 4, 5, 6, 0]]), np.array([[1, 2, 3, 3, 4, 5, 5, 6, 6, 0]])]
    inst = [np.array([[5, 5, 6, 6, 6, 8, 8, 0, 16, 0]]), np.array([[5, 6, 6, 6, 8, 0, 0, 16, 16, 0]])]
    sem = [np.array([[1, 1, 1, 1, 1, 0, 0, 0, 1, 0]]), np.array([[1, 1, 1, 1, 0, 0, 0, 1, 1, 0]])]
    fates = object_fates(inst, sem, gt, NUM_CODES)
    assert fates == ObjectFates(objects=6, own=1, shared=2, shared_labels=1, background=2, background_with_code=1,
                                no_label=1)  # fmt: skip
    assert fates.line().startswith("6 GT objects: 1 own label, 2 sharing 1 labels, 2 predicted background (1 of")

    # Class-agnostic (no semantic maps): nothing is background; object 4 owns code 8 and object 5 has label 0.
    agnostic = object_fates(inst, None, gt, NUM_CODES)
    assert (agnostic.own, agnostic.background, agnostic.no_label) == (2, 0, 2)
