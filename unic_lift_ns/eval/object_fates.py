"""Where each ground-truth object ends up under predicted label maps: a label of its own, a label it shares, the
semantic background, or no label (see :func:`object_fates`). A diagnostic of PQ^scene's failures, which counts every
object once."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

BACKGROUND = -1
"""The label of pixels the semantic head predicts as background (class 0)."""


@dataclass(frozen=True)
class ObjectFates:
    """How many GT objects end up in each case; each object takes the label that holds most of its pixels."""

    objects: int
    """GT objects in the maps."""
    own: int
    """Objects whose label no other object takes."""
    shared: int
    """Objects whose label other objects take too (neighbours merged into one instance)."""
    shared_labels: int
    """Distinct labels the shared objects take."""
    background: int
    """Objects most of whose pixels are predicted background (semantic class 0)."""
    background_with_code: int
    """Of the background objects, those whose majority label without semantics is a code label: the semantic head,
    not the instance codes, lost them."""
    no_label: int
    """Objects whose label is 0 or a no-code label (>= 2^d: pixels no Gaussian votes for)."""

    def line(self) -> str:
        return (f"{self.objects} GT objects: {self.own} own label, {self.shared} sharing {self.shared_labels} labels, "
                f"{self.background} predicted background ({self.background_with_code} of them with a code label "
                f"without semantics), {self.no_label} without a label")  # fmt: skip


def most_frequent(keys: np.ndarray, values: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """The distinct ``keys`` (sorted) and, for each, the value it comes with most often (flat int arrays of one
    size; ties go to the smaller value)."""
    pairs, counts = np.unique(np.stack([keys, values]), axis=1, return_counts=True)
    order = np.lexsort((-counts, pairs[0]))  # by key, then most often first
    keys, values = pairs[0][order], pairs[1][order]
    first = np.unique(keys, return_index=True)[1]
    return keys[first], values[first]


def majority_labels(objects: np.ndarray, labels: np.ndarray) -> Dict[int, int]:
    """Object id -> the label that holds most of its pixels (``objects`` > 0 only; flat arrays of one size)."""
    keep = objects > 0
    owners, majority = most_frequent(objects[keep], labels[keep])
    return dict(zip(owners.tolist(), majority.tolist()))


def object_fates(
    instances: Sequence[np.ndarray], semantics: Optional[Sequence[np.ndarray]], gt_instances: Sequence[np.ndarray],
    num_codes: int,
) -> ObjectFates:  # fmt: skip
    """The fates of the GT objects (ids > 0 of ``gt_instances``) under predicted instance maps and, where the run
    predicts them, semantic maps (class 0 = background), pooled over all views; labels 0 and >= ``num_codes`` carry
    no code."""
    gt = np.concatenate([g.ravel() for g in gt_instances]).astype(np.int64)
    raw = np.concatenate([p.ravel() for p in instances]).astype(np.int64)
    thing = raw if semantics is None else np.where(np.concatenate([s.ravel() for s in semantics]) != 0, raw, BACKGROUND)
    major, major_raw = majority_labels(gt, thing), majority_labels(gt, raw)
    no_code = {o for o, label in major.items() if label == 0 or label >= num_codes}
    background = {o for o, label in major.items() if label == BACKGROUND}
    takers = Counter(major.values())
    shared = {o for o, label in major.items() if o not in no_code | background and takers[label] > 1}
    coded = sum(0 < major_raw[o] < num_codes for o in background)
    return ObjectFates(len(major), len(major) - len(shared | background | no_code), len(shared),
                       len({major[o] for o in shared}), len(background), coded, len(no_code))  # fmt: skip
