"""A user's corrections of instance labels (issue #30): merge, split and delete, replayed in order on per-Gaussian
labels, so they are exact and need no retraining.

* ``merge``: the Gaussians of ``label`` take label ``into``.
* ``split``: the Gaussians of ``label`` fall apart into their 3D components (:func:`unic_lift_ns.collisions.
  label_components`, the collision split's components); the largest keeps the label, every other one of at least
  ``min_size`` Gaussians gets a d-bit code no Gaussian has (as the collision split gives).
* ``delete``: the Gaussians of ``label`` become background, label 2^d (the label nearest-code gives Gaussians that
  do not vote; no code has it).

They are stored as ``instance_corrections.json`` in the run directory (:data:`CORRECTIONS_FILE`), written
atomically over nothing or over a file of ours (:mod:`unic_lift_ns.safe_files`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Optional, Tuple, get_args

import numpy as np
import torch
from torch import Tensor

from unic_lift_ns.collisions import free_codes, label_components, median_neighbour_distance, recode_groups
from unic_lift_ns.errors import InputError
from unic_lift_ns.safe_files import write_json

CORRECTIONS_FILE = "instance_corrections.json"
"""Name of the corrections file in a run directory."""
GENERATOR = "unic-lift-corrections"
"""The corrections file's "generator": only a file that says so is replaced."""
Operation = Literal["merge", "split", "delete"]
"""What a correction does (see the module docstring)."""


@dataclass(frozen=True)
class Correction:
    """One operation on the labels."""

    op: Operation
    """merge, split or delete."""
    label: int
    """The label it changes."""
    into: Optional[int] = None
    """With merge: the label the Gaussians of ``label`` take."""


@dataclass(frozen=True)
class Corrections:
    """The operations in the order they were made; immutable, so that a model's cache can key on them."""

    operations: Tuple[Correction, ...] = ()
    """Replayed first to last."""

    def then(self, correction: Correction) -> Corrections:
        """These corrections and one more."""
        return Corrections(self.operations + (correction,))

    def undone(self) -> Corrections:
        """These corrections without the last one."""
        return Corrections(self.operations[:-1])

    @torch.no_grad()
    def apply(self, labels: Tensor, means: Tensor, num_bits: int, radius_factor: float = 5.0, min_size: int = 5
              ) -> Tensor:  # fmt: skip
        """[N] int64 labels with every operation replayed; ``means`` [N, 3] are the Gaussians' centres (for split),
        labels are d = ``num_bits``-bit codes plus background 2^d. A split joins centres ``radius_factor`` median
        nearest-neighbour distances apart into 3D components; one of fewer than ``min_size`` Gaussians keeps the
        label (the model passes its collision_radius and collision_min_gaussians)."""
        labels = labels.clone()
        for correction in self.operations:
            chosen = labels == correction.label
            if correction.op == "merge":
                labels[chosen] = correction.into
            elif correction.op == "delete":
                labels[chosen] = 2**num_bits
            else:
                split = _split(means[chosen], correction.label, labels, num_bits, radius_factor, min_size)
                labels[chosen] = split.to(labels)
        return labels

    def to_dict(self) -> dict:
        return {"operations": [{k: v for k, v in vars(c).items() if v is not None} for c in self.operations]}

    def save(self, run_dir: Path) -> Path:
        """Write ``run_dir/instance_corrections.json`` atomically (over nothing or an earlier one of ours)."""
        return write_json(Path(run_dir) / CORRECTIONS_FILE, self.to_dict(), GENERATOR)


def _split(means: Tensor, label: int, labels: Tensor, num_bits: int, radius_factor: float, min_size: int) -> Tensor:
    """Labels of the Gaussians ``means`` of ``label`` after its split into 3D components (see
    :meth:`Corrections.apply`)."""
    points = means.detach().cpu().double().numpy()
    split = np.full(len(points), label, dtype=np.int64)
    if len(points) < 2:
        return torch.from_numpy(split)
    radius = radius_factor * median_neighbour_distance(points)
    components = label_components(points, np.zeros(len(points), dtype=np.int64), radius)
    sizes = np.bincount(components)
    big = np.flatnonzero(sizes >= min_size)  # smaller parts keep the label; the largest part does in any case
    codes = recode_groups(sizes[big], free_codes(labels.cpu().numpy(), num_bits))[0]
    for component, code in zip(big, codes):
        if code >= 0:
            split[components == component] = code
    return torch.from_numpy(split)


def load_corrections(path: Path) -> Corrections:
    """Read a corrections file; a file that is not one raises :class:`InputError` naming it and what is wrong."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise InputError(f"{path}: not a corrections file ({error}); move it away to start without corrections")
    entries = data.get("operations") if isinstance(data, dict) and data.get("generator") == GENERATOR else None
    if not isinstance(entries, list):
        raise InputError(f"{path}: not a corrections file of unic-lift (no \"generator\": \"{GENERATOR}\" and "
                         "\"operations\" list); move it away to start without corrections")  # fmt: skip
    return Corrections(tuple(_correction(entry, f"{path}: operation {i + 1}") for i, entry in enumerate(entries)))


def _correction(entry: object, where: str) -> Correction:
    """One operation of a corrections file, checked."""
    if not isinstance(entry, dict) or entry.get("op") not in get_args(Operation):
        raise InputError(f"{where}: expected {{\"op\": one of {', '.join(get_args(Operation))}, \"label\": ...}}")
    labels = [entry.get("label")] + ([entry.get("into")] if entry["op"] == "merge" else [])
    if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in labels):
        raise InputError(f"{where}: labels must be non-negative integers, got {entry}")
    return Correction(entry["op"], entry["label"], entry.get("into") if entry["op"] == "merge" else None)

