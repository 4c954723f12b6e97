"""LPIPS never downloads: without cached AlexNet weights it is skipped (NaN) with one warning."""

from __future__ import annotations

import math

import torch

from unic_lift_ns.lazy_lpips import LazyLPIPS, alexnet_weights_path


def test_lpips_skipped_without_cached_weights(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))  # restored after the test
    assert alexnet_weights_path().startswith(str(tmp_path))
    lpips = LazyLPIPS()
    image = torch.rand(1, 3, 16, 16)
    assert math.isnan(lpips(image, image))
    assert math.isnan(lpips(image, image))
    out = capsys.readouterr().out
    assert out.count("LPIPS unavailable") == 1 and "alexnet" in out.lower()
    assert not list(tmp_path.rglob("*.pth"))  # nothing was downloaded


def test_lpips_disabled_is_silent(capsys):
    assert math.isnan(LazyLPIPS(enabled=False)(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)))
    assert "LPIPS" not in capsys.readouterr().out
