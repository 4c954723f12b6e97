"""LPIPS that never downloads: built on first use, only when the AlexNet weights are already cached."""

from __future__ import annotations

import math
import os

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor


def alexnet_weights_path() -> str:
    """Where torchvision keeps the AlexNet weights LPIPS needs (``$TORCH_HOME/hub/checkpoints``)."""
    from torchvision.models import AlexNet_Weights

    url = AlexNet_Weights.DEFAULT.url
    return os.path.join(torch.hub.get_dir(), "checkpoints", os.path.basename(url))


class LazyLPIPS:
    """Splatfacto builds torchmetrics' LPIPS eagerly, which downloads AlexNet. This wrapper builds it on the
    first evaluation instead, only from weights already on disk, and otherwise warns once and returns NaN (a float, so
    Splatfacto's own metric code runs unchanged; callers drop NaN metrics)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self._metric = None
        self._warned = False

    def _build(self) -> None:
        path = alexnet_weights_path()
        if not os.path.isfile(path):
            raise FileNotFoundError(f"AlexNet weights not found at {path}")
        from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

        self._metric = LearnedPerceptualImagePatchSimilarity(normalize=True)

    def __call__(self, gt: Tensor, pred: Tensor) -> float:
        """LPIPS of [1, 3, H, W] images in [0, 1], or NaN when unavailable."""
        if not self.enabled:
            return math.nan
        if self._metric is None:
            try:
                self._build()
            except Exception as err:  # noqa: BLE001 - any failure only disables the metric
                if not self._warned:
                    CONSOLE.print(f"[yellow]LPIPS unavailable ({err}); skipped.")
                    self._warned = True
                self.enabled = False
                return math.nan
        assert self._metric is not None
        self._metric.to(gt.device)
        return float(self._metric(gt, pred))
