"""Reading and writing integer label maps (instance / semantic masks).

A label map is a single-channel HxW integer image. On disk it is either an 8- or 16-bit grayscale PNG
(or another single-channel integer image Pillow can read) or a ``.npy`` integer array. Everything is
returned as ``int64`` so that callers never have to care about the storage type.
"""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from unic_lift_ns.errors import InputError

LABEL_MAP_SUFFIXES = (".png", ".npy")
"""Suffixes tried, in order, by :func:`find_label_map`."""

_INTEGER_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}
"""Pillow image modes that hold one integer channel."""


def read_label_map(path: Path) -> np.ndarray:
    """Read a label map as an ``int64`` array of shape (H, W).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        InputError: if the file cannot be read or does not hold a single-channel integer image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label map not found: {path}")
    try:
        labels = _read_integer_image(path)
    except (OSError, EOFError) as err:  # truncated or not an image / array file
        raise InputError(f"Cannot read label map {path}: {err}") from err
    if labels.ndim != 2:
        raise InputError(f"Label map {path} must have shape (H, W), got {labels.shape}")
    return labels.astype(np.int64)


def _read_integer_image(path: Path) -> np.ndarray:
    """The integer array of a ``.npy`` file or of a single-channel integer image."""
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise InputError(f"Cannot read label map {path}: {err}") from err
        if labels.dtype.kind not in "biu":
            raise InputError(f"Label map {path} must hold integers, got dtype {labels.dtype}")
        return labels
    with Image.open(path) as image:
        if image.mode not in _INTEGER_MODES:
            raise InputError(
                f"Label map {path} must be a single-channel integer image (8/16-bit grayscale), "
                f"got Pillow mode {image.mode!r}"
            )
        return np.asarray(image)


def resize_label_map(labels: Tensor, height: int, width: int) -> Tensor:
    """Resize a label map of shape (..., H, W) to (..., height, width) by nearest-neighbour sampling.

    Every output pixel takes the label of the input pixel under its centre, so labels are never averaged
    and the output holds a subset of the input's labels. Works for up- and down-scaling by any factor.
    """
    if height < 1 or width < 1:
        raise ValueError(f"Cannot resize a label map to {width}x{height}")
    in_height, in_width = labels.shape[-2:]
    if (in_height, in_width) == (height, width):
        return labels
    rows = _nearest_source_indices(in_height, height, labels.device)
    cols = _nearest_source_indices(in_width, width, labels.device)
    return labels[..., rows[:, None], cols[None, :]]


def same_aspect(size_a: Tuple[int, int], size_b: Tuple[int, int]) -> bool:
    """Whether one (H, W) size is a scaled copy of the other, each side rounded to whole pixels."""
    low = max((b - 1) / a for a, b in zip(size_a, size_b))
    high = min((b + 1) / a for a, b in zip(size_a, size_b))
    return low < high


def _nearest_source_indices(in_size: int, out_size: int, device: torch.device) -> Tensor:
    """Index of the input pixel under the centre of each output pixel along one axis."""
    centres = (torch.arange(out_size, device=device, dtype=torch.float64) + 0.5) * (in_size / out_size)
    return centres.floor().long().clamp(max=in_size - 1)


def find_label_map(folder: Path, stem: str) -> Path:
    """Return the label map of a view in ``folder``: ``<stem>.png`` if present, else ``<stem>.npy``."""
    folder = Path(folder)
    if not folder.is_dir():
        raise FileNotFoundError(f"Label map folder not found: {folder}")
    for suffix in LABEL_MAP_SUFFIXES:
        path = folder / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(f"No label map for view {stem!r} in {folder} (tried {', '.join(LABEL_MAP_SUFFIXES)})")


def fits_bit_depth(labels: np.ndarray, bit_depth: int) -> bool:
    """Whether every label of ``labels`` lies in [0, 2^bit_depth), i.e. fits a PNG of that bit depth."""
    return bool(not labels.size or (labels.min() >= 0 and labels.max() < 2**bit_depth))


def write_label_map(path: Path, labels: np.ndarray, bit_depth: Literal[8, 16] = 16) -> None:
    """Write a 2D integer label map as an 8- or 16-bit grayscale PNG (``.png``) or a ``.npy`` array.

    A ``.npy`` holds any integer labels, as ``int32`` when they fit and ``int64`` otherwise.

    Raises:
        ValueError: if ``path`` is neither ``.png`` nor ``.npy``, ``labels`` is not a 2D integer array, or a PNG
            is asked for labels that do not fit in ``bit_depth`` bits.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if path.suffix not in LABEL_MAP_SUFFIXES:
        raise ValueError(f"Label maps are written as {' or '.join(LABEL_MAP_SUFFIXES)}, got {path}")
    if labels.dtype.kind not in "biu" or labels.ndim != 2:
        raise ValueError(f"Label map for {path} must be a 2D integer array, got {labels.dtype} {labels.shape}")
    if path.suffix == ".npy":
        np.save(path, labels.astype(np.int32 if _fits_int32(labels) else np.int64))
        return
    if not fits_bit_depth(labels, bit_depth):
        raise ValueError(
            f"Labels of {path} span [{labels.min()}, {labels.max()}], which does not fit a {bit_depth}-bit PNG"
        )
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)


def write_label_maps(
    folder: Path, stems: Sequence[str], maps: Sequence[np.ndarray], bit_depth: Literal[8, 16] = 16
) -> List[Path]:
    """Write ``<stem>.png`` per map into ``folder`` (created if needed), or ``<stem>.npy`` for all of them when
    a label of any map does not fit a ``bit_depth``-bit PNG; returns the paths written."""
    suffix = ".png" if all(fits_bit_depth(np.asarray(m), bit_depth) for m in maps) else ".npy"
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{stem}{suffix}" for stem in stems]
    for path, labels in zip(paths, maps):
        write_label_map(path, labels, bit_depth)
    return paths


def _fits_int32(labels: np.ndarray) -> bool:
    """Whether every label fits an ``int32``."""
    info = np.iinfo(np.int32)
    return bool(not labels.size or (labels.min() >= info.min and labels.max() <= info.max))


def number_segments(labels: Tensor) -> Tuple[Tensor, int]:
    """``labels`` with its positive ids numbered 1..K in increasing order (ids ``<= 0`` become 0, the void), and K.

    Instance ids are arbitrary, so this changes no segment; the datamanager numbers every instance mask once, so
    that the losses can sum segments into K + 1 fixed slots without waiting for the device (``unique`` here does).
    """
    positive = labels > 0
    ids = torch.unique(labels[positive])
    numbered = torch.searchsorted(ids, labels) + 1
    return torch.where(positive, numbered, torch.zeros_like(labels)), int(ids.numel())


def segment_slots(segment_ids: Tensor, num_segments: Optional[int]) -> Tuple[Tensor, int]:
    """Each pixel's segment slot (0 = void for ids ``<= 0``, else 1..K) and K, for sums into K + 1 fixed slots.

    ``num_segments`` is the largest id of ids that :func:`number_segments` numbered (the datamanager's masks): then
    nothing waits for the device. None: any ids, numbered here (one sync).
    """
    if num_segments is None:
        return number_segments(segment_ids)
    return segment_ids.clamp(min=0), num_segments
