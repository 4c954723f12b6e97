"""The CUDA branch of rasterisation (gsplat's ``rasterization`` and our feature pass), run on CPU with the reference
kernels, against the CPU backend on the same Gaussians."""

from __future__ import annotations

import sys
from dataclasses import fields
from contextlib import nullcontext
from typing import Dict, Optional, Tuple

import pytest
import torch
from torch import Tensor

import random_gaussians
from random_gaussians import Scene
from unic_lift_ns.rasterization import GsplatKernels, rasterize, rasterize_torch, rasterize_with_features, use_kernels
from unic_lift_ns.rasterization.reference_kernels import reference_kernels

W, H, N, C = 40, 32, 300, 2


def random_scene(seed: int, D: int = 3, sh_degree: Optional[int] = None) -> Scene:
    """N Gaussians in front of C cameras (W x H) that shift sideways: ``(params, viewmats, Ks)``."""
    return random_gaussians.random_scene(N, C, W, H, seed, D, sh_degree, log_scale=-2.5)


def dense(info: Dict, values: Tensor) -> Tensor:
    """[C, N, ...] from dense or packed (``camera_ids``, ``gaussian_ids``) per-view values."""
    if info["gaussian_ids"] is None:
        return values
    out = values.new_zeros((C, N) + values.shape[1:])
    out[info["camera_ids"], info["gaussian_ids"]] = values
    return out


def render(scene: Scene, cuda_branch: bool, **kwargs) -> Tuple[Tensor, Tensor, Tensor, Dict[str, Tensor], Dict]:
    """``(render, alpha, radii [C, N], grads, info)`` of a random weighted loss; ``grads`` holds the leaves' and
    ``means2d``'s (and ``absgrad`` with ``absgrad=True``) as [C, N, 2]."""
    params, viewmats, Ks = scene
    leaves = {k: v.clone().requires_grad_(True) for k, v in params.items()}
    args = (*leaves.values(), viewmats, Ks, W, H)
    if cuda_branch:
        with use_kernels(reference_kernels()):
            image, alpha, info = rasterize(*args, **kwargs)
    else:
        image, alpha, info = rasterize_torch(*args, **kwargs)
    info["means2d"].retain_grad()
    weights = torch.randn(image.shape, generator=torch.Generator().manual_seed(0))
    ((image * weights).sum() + alpha.square().sum()).backward()
    grads = {k: v.grad for k, v in leaves.items()}
    grads["means2d"] = dense(info, info["means2d"].grad)
    if kwargs.get("absgrad"):
        grads["absgrad"] = dense(info, info["means2d"].absgrad)
    return image.detach(), alpha.detach(), dense(info, info["radii"]), grads, info


def rel_err(a: Tensor, b: Tensor) -> float:
    return ((a - b).norm() / b.norm().clamp(min=1e-12)).item()


@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(render_mode="RGB+ED", absgrad=True),
        dict(render_mode="RGB", rasterize_mode="antialiased", sh_degree=3),
        dict(render_mode="RGB+D", D=15, backgrounds=True, near_plane=2.5, far_plane=4.5),
    ],
    ids=["RGB+ED-absgrad", "SH3-antialiased", "D15-backgrounds"],
)
def test_cuda_branch_matches_cpu_backend(kwargs, packed):
    kwargs = dict(kwargs, packed=packed)
    D = kwargs.pop("D", 3)
    if kwargs.pop("backgrounds", False):
        kwargs["backgrounds"] = torch.rand(C, D, generator=torch.Generator().manual_seed(2))
    scene = random_scene(seed=D, D=D, sh_degree=kwargs.get("sh_degree"))

    image, alpha, radii, grads, info = render(scene, cuda_branch=True, **kwargs)
    ref_image, ref_alpha, ref_radii, ref_grads, _ = render(scene, cuda_branch=False, **kwargs)

    assert "isect_offsets" in info  # gsplat's rasterization ran
    assert (info["gaussian_ids"] is not None) == packed
    assert (radii > 0).sum() > N // 2
    torch.testing.assert_close(radii, ref_radii, rtol=0, atol=0)
    # the same compositing code, over gsplat's tile lists instead of our pixel blocks: float rounding only
    torch.testing.assert_close(image, ref_image, rtol=1e-4, atol=5e-5)
    torch.testing.assert_close(alpha, ref_alpha, rtol=1e-4, atol=5e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 1e-4, name


@pytest.mark.parametrize("packed", [False, True])
def test_features_in_the_cuda_branch_match_cpu_backend_and_never_reach_geometry(packed):
    """Feature maps and gradients of the CUDA branch's feature pass against the CPU backend's shared pass; the
    geometry gradients are those of the colours alone."""
    params, viewmats, Ks = random_scene(seed=5)
    features = torch.rand(N, 12, generator=torch.Generator().manual_seed(6))

    def run(cuda_branch: bool, with_features: bool = True):
        leaves = {k: v.clone().requires_grad_(True) for k, v in {**params, "features": features}.items()}
        geometry = [leaves[k] for k in ("means", "quats", "scales", "opacities", "colors")]
        g = torch.Generator().manual_seed(1)
        with use_kernels(reference_kernels()) if cuda_branch else nullcontext():
            if with_features:
                image, feats, alpha, info = rasterize_with_features(
                    *geometry, leaves["features"], viewmats, Ks, W, H, packed=packed, absgrad=True
                )
            else:
                image, alpha, info = rasterize(*geometry, viewmats, Ks, W, H, packed=packed, absgrad=True)
        info["means2d"].retain_grad()
        loss = (image * torch.randn(image.shape, generator=g)).sum()
        if with_features:
            loss = loss + (feats * torch.randn(feats.shape, generator=g)).sum()
        loss.backward()
        grads = {k: v.grad for k, v in leaves.items() if v.grad is not None}
        grads["means2d"] = dense(info, info["means2d"].grad)
        grads["absgrad"] = dense(info, info["means2d"].absgrad)
        return (feats.detach() if with_features else None), grads, info

    feats, grads, info = run(cuda_branch=True)
    ref_feats, ref_grads, _ = run(cuda_branch=False)
    _, colour_grads, _ = run(cuda_branch=True, with_features=False)

    assert "isect_offsets" in info
    torch.testing.assert_close(feats, ref_feats, rtol=1e-4, atol=5e-5)
    assert grads.keys() == ref_grads.keys()
    for name, grad in grads.items():
        assert rel_err(grad, ref_grads[name]) < 1e-4, name
    for name, grad in colour_grads.items():
        torch.testing.assert_close(grads[name], grad, msg=name)


def test_use_kernels_restores_the_previous_choice_after_an_error():
    params, viewmats, Ks = random_scene(seed=0)
    args = (*params.values(), viewmats, Ks, W, H)
    kernels = reference_kernels()
    with pytest.raises(RuntimeError, match="inner"):
        with use_kernels(kernels):
            with pytest.raises(RuntimeError, match="outer"):
                with use_kernels(kernels):
                    raise RuntimeError("outer")
            assert "isect_offsets" in rasterize(*args)[2]
            raise RuntimeError("inner")
    assert "isect_offsets" not in rasterize(*args)[2]  # the CPU backend again


def test_gsplat_kernels_run_gsplats_own_rasterization():
    import gsplat.rendering

    assert GsplatKernels.gsplat().rasterization() is gsplat.rendering.rasterization
    rebound = reference_kernels().rasterization()
    assert rebound is not gsplat.rendering.rasterization and rebound is reference_kernels().rasterization()
    assert rebound.__code__ is gsplat.rendering.rasterization.__code__
    assert rebound.__globals__["rasterize_to_pixels"] is reference_kernels().rasterize_to_pixels
    for field in fields(GsplatKernels):  # gsplat's module is untouched
        assert vars(gsplat.rendering)[field.name] is getattr(GsplatKernels.gsplat(), field.name), field.name


def test_gsplat_kernels_do_not_load_the_cuda_extension():
    if "gsplat.cuda._backend" in sys.modules:
        pytest.skip("gsplat's CUDA extension was loaded before this test, so it cannot tell")
    GsplatKernels.gsplat().rasterization()
    assert "gsplat.cuda._backend" not in sys.modules
