"""Reading and writing integer label maps (instance / semantic masks).

A label map is a single-channel HxW integer image. On disk it is either an 8- or 16-bit grayscale PNG
(or another single-channel integer image Pillow can read) or a ``.npy`` integer array. Everything is
returned as ``int64`` so that callers never have to care about the storage type.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image
from torch import Tensor

LABEL_MAP_SUFFIXES = (".png", ".npy")
"""Suffixes tried, in order, by :func:`find_label_map`."""

_INTEGER_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}
"""Pillow image modes that hold one integer channel."""


def read_label_map(path: Path) -> np.ndarray:
    """Read a label map as an ``int64`` array of shape (H, W).

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file does not hold a single-channel integer image.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Label map not found: {path}")
    if path.suffix == ".npy":
        try:
            labels = np.load(path, allow_pickle=False)
        except ValueError as err:
            raise ValueError(f"Cannot read label map {path}: {err}") from err
        if labels.dtype.kind not in "biu":
            raise ValueError(f"Label map {path} must hold integers, got dtype {labels.dtype}")
    else:
        with Image.open(path) as image:
            if image.mode not in _INTEGER_MODES:
                raise ValueError(
                    f"Label map {path} must be a single-channel integer image (8/16-bit grayscale), "
                    f"got Pillow mode {image.mode!r}"
                )
            labels = np.asarray(image)
    if labels.ndim != 2:
        raise ValueError(f"Label map {path} must have shape (H, W), got {labels.shape}")
    return labels.astype(np.int64)


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


def write_label_map(path: Path, labels: np.ndarray, bit_depth: Literal[8, 16] = 16) -> None:
    """Write a non-negative integer (H, W) label map as an 8- or 16-bit grayscale PNG.

    Raises:
        ValueError: if ``path`` is not a ``.png``, or ``labels`` is not a 2D integer array whose values
            fit in ``bit_depth`` bits.
    """
    path = Path(path)
    labels = np.asarray(labels)
    if bit_depth not in (8, 16):
        raise ValueError(f"bit_depth must be 8 or 16, got {bit_depth}")
    if path.suffix != ".png":
        raise ValueError(f"Label maps are written as PNG, got {path}")
    if labels.dtype.kind not in "biu" or labels.ndim != 2:
        raise ValueError(f"Label map for {path} must be a 2D integer array, got {labels.dtype} {labels.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= 2**bit_depth):
        raise ValueError(
            f"Labels of {path} span [{labels.min()}, {labels.max()}], which does not fit a {bit_depth}-bit PNG"
        )
    dtype = np.uint8 if bit_depth == 8 else np.uint16
    Image.fromarray(labels.astype(dtype)).save(path)
