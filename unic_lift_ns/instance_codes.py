"""Embedding-to-Label decoding (Sec. 3.3, last paragraph; appendix A.1), label colours and the instance overlay.

A rendered embedding ``V`` in R^d is decoded without clustering: ``b = 1[sigmoid(V) > 0.5]`` and
``l = sum_k b_k 2^(k-1)``, where bit ``k = 1`` (channel 0) is the least significant bit.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

MAX_BITS = 62
"""Largest embedding dimension whose labels fit in a non-negative int64."""

OVERLAY_DIM = 0.3
"""Brightness of the pixels outside the highlighted instance in the overlay."""

_GOLDEN = 0.6180339887498949
"""Fractional golden ratio: consecutive labels get hues about 0.38 of a turn apart."""

_SAT_VAL = ((0.95, 1.0), (0.6, 0.8), (1.0, 0.6), (0.45, 1.0))
"""(saturation, value) cycled with ``label % 4``; separates labels whose golden hues nearly coincide."""


def max_labels(d: int) -> int:
    """Number of distinct labels a d-dimensional embedding can encode (``2^d``)."""
    return 2**d


def _bit_weights(d: int, device: torch.device) -> Tensor:
    """``[2^0, ..., 2^(d-1)]`` as int64: weight of embedding channel k-1 is ``2^(k-1)``."""
    assert 0 < d <= MAX_BITS, f"embedding dimension must be in [1, {MAX_BITS}], got {d}"
    return torch.ones(d, dtype=torch.long, device=device) << torch.arange(d, device=device)


def embedding_to_label(v: Tensor, threshold: float = 0.5) -> Tensor:
    """Decode raw rendered embeddings into integer labels (Sec. 3.3, Embedding-to-label).

    Args:
        v: [..., d] raw (pre-sigmoid) embeddings, ``d <= 62`` (paper: d = 12).
        threshold: binarisation threshold on ``sigmoid(v)`` (paper: 0.5).

    Returns:
        [...] int64 labels ``l = sum_k 1[sigmoid(v_k) > threshold] 2^(k-1)`` in ``[0, 2^d)``.
    """
    bits = (torch.sigmoid(v) > threshold).long()
    return (bits * _bit_weights(v.shape[-1], v.device)).sum(-1)


def label_to_bits(labels: Tensor, d: int) -> Tensor:
    """Inverse of :func:`embedding_to_label`'s binary code: [...] int64 -> [..., d] float 0/1."""
    return ((labels.unsqueeze(-1) & _bit_weights(d, labels.device)) != 0).float()


def _hsv_to_rgb(hue: Tensor, sat: Tensor, val: Tensor) -> Tensor:
    """Vectorised HSV -> RGB, all inputs in [0, 1]; returns [..., 3]."""
    phase = torch.tensor([5.0, 3.0, 1.0], dtype=hue.dtype, device=hue.device)
    k = (phase + 6.0 * hue.unsqueeze(-1)) % 6.0
    ramp = torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)
    return val.unsqueeze(-1) * (1.0 - sat.unsqueeze(-1) * ramp)


def label_palette(labels: Tensor) -> Tensor:
    """Fixed, deterministic RGB colour per integer label, for viewer and image output.

    The hue is ``frac(l * 0.618...)`` (golden-ratio sequence) and (saturation, value) cycles with
    ``l % 4``, so neighbouring integers get very different colours and a label has the same colour
    in every view and run (64 consecutive labels are pairwise well separated).

    Args:
        labels: [...] int64 labels (non-negative).

    Returns:
        [...] x 3 float32 RGB in [0, 1] on ``labels.device``.
    """
    hue = (labels.double() * _GOLDEN) % 1.0
    sat_val = torch.tensor(_SAT_VAL, dtype=torch.float64, device=labels.device)[labels % len(_SAT_VAL)]
    return _hsv_to_rgb(hue, sat_val[..., 0], sat_val[..., 1]).float()


def instance_overlay(rgb: Tensor, labels: Tensor, opacity: float, highlighted: Optional[int] = None) -> Tensor:
    """Instance colours blended over RGB: ``(1 - a) rgb + a colour``.

    With a highlighted label, only that instance is blended; every other pixel is dimmed to ``OVERLAY_DIM`` rgb.

    Args:
        rgb: [H, W, 3] colours in [0, 1].
        labels: [H, W] or [H, W, 1] integer labels.
        opacity: a in [0, 1].
        highlighted: label to highlight, or None for all instances.
    """
    labels = labels.reshape(rgb.shape[:2]).long()
    blended = (1.0 - opacity) * rgb + opacity * label_palette(labels).to(rgb)
    if highlighted is None:
        return blended
    return torch.where((labels == highlighted).unsqueeze(-1), blended, OVERLAY_DIM * rgb)
