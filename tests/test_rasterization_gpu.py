"""Parity of the pure-PyTorch rasteriser (run on CPU) with gsplat's CUDA ``rasterization``."""

from __future__ import annotations

import pytest
import torch

from random_gaussians import random_scene
from unic_lift_ns.rasterization import rasterize, rasterize_torch, rasterize_with_features

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def run(device: str, params, viewmats, Ks, width, height, **kwargs):
    leaves = {k: v.to(device).requires_grad_(True) for k, v in params.items()}
    fn = rasterize_torch if device == "cpu" else rasterize
    render, alpha, info = fn(
        leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["colors"],
        viewmats.to(device), Ks.to(device), width, height, **kwargs,
    )  # fmt: skip
    info["means2d"].retain_grad()
    g = torch.Generator().manual_seed(0)
    weights = torch.randn(render.shape, generator=g).to(device)
    ((render * weights).sum() + alpha.square().sum()).backward()
    grads = {k: v.grad.cpu() for k, v in leaves.items()}
    N = len(params["means"])
    grads["means2d"] = dense(info, info["means2d"].grad, N)
    if kwargs.get("absgrad"):
        grads["absgrad"] = dense(info, info["means2d"].absgrad, N)
    return render.detach().cpu(), alpha.detach().cpu(), dense(info, info["radii"], N), grads


def dense(info, values: torch.Tensor, N: int) -> torch.Tensor:
    """[C, N, ...] on CPU from dense or packed (``camera_ids``, ``gaussian_ids``) per-view values."""
    if info["gaussian_ids"] is None:
        return values.cpu()
    out = values.new_zeros((info["n_cameras"], N) + values.shape[1:])
    out[info["camera_ids"].long(), info["gaussian_ids"].long()] = values
    return out.cpu()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(render_mode="RGB+ED", absgrad=True),
        dict(render_mode="RGB", rasterize_mode="antialiased", sh_degree=3),
        dict(render_mode="RGB+D", D=15, packed=True, backgrounds=True),
    ],
)
def test_parity_with_gsplat(kwargs):
    kwargs = dict(kwargs)
    D, sh_degree = kwargs.pop("D", 3), kwargs.get("sh_degree")
    width, height = 160, 120
    params, viewmats, Ks = random_scene(3000, 2, width, height, seed=D, D=D, sh_degree=sh_degree)
    kwargs.setdefault("packed", False)
    if kwargs.pop("backgrounds", False):
        kwargs["backgrounds"] = torch.rand(2, D)

    def with_device(device):
        kw = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in kwargs.items()}
        return run(device, params, viewmats, Ks, width, height, **kw)

    render, alpha, radii, grads = with_device("cpu")
    ref_render, ref_alpha, ref_radii, ref_grads = with_device("cuda")

    # float rounding may flip ceil() of a radius (or a culling test) for a handful of Gaussians
    assert (radii != ref_radii).float().mean() < 1e-2
    assert ((radii - ref_radii).abs() > 1).float().mean() < 1e-3
    # gsplat uses fast-math exp and sequential float32 transmittance products: allow small differences
    assert (render - ref_render).abs().quantile(0.999) < 1e-3
    assert (alpha - ref_alpha).abs().max() < 5e-3
    assert rel_err(render, ref_render) < 1e-3
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 2e-2, name


@pytest.mark.parametrize("packed", [False, True])
def test_features_share_the_colour_pass_on_cuda_like_on_cpu(packed):
    """``rasterize_with_features`` on CUDA (gsplat's rasterize_to_pixels on the colour pass's intersections)
    against the CPU rasteriser's shared pass: feature maps, feature gradients, and geometry gradients that come
    from the colours alone."""
    width, height = 96, 80
    params, viewmats, Ks = random_scene(2000, 2, width, height, seed=5)
    features = torch.rand(2000, 12, generator=torch.Generator().manual_seed(6))

    def run_features(device):
        leaves = {k: v.to(device).requires_grad_(True) for k, v in {**params, "features": features}.items()}
        render, feats, alpha, info = rasterize_with_features(
            leaves["means"], leaves["quats"], leaves["scales"], leaves["opacities"], leaves["colors"],
            leaves["features"], viewmats.to(device), Ks.to(device), width, height, packed=packed,
        )  # fmt: skip
        g = torch.Generator().manual_seed(1)
        weights = torch.randn(render.shape, generator=g).to(device)
        feature_weights = torch.randn(feats.shape, generator=g).to(device)
        ((render * weights).sum() + (feats * feature_weights).sum()).backward()
        return feats.detach().cpu(), {k: v.grad.cpu() for k, v in leaves.items()}

    feats, grads = run_features("cpu")
    ref_feats, ref_grads = run_features("cuda")
    assert rel_err(feats, ref_feats) < 1e-3
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 2e-2, name
