"""Pure-PyTorch rasteriser, stage by stage against gsplat 1.4.0's pure-PyTorch references run on CPU.

Projection, tile intersection and spherical harmonics are compared with gsplat's ``_torch_impl``
functions. gsplat's compositing reference (``_rasterize_to_pixels``) needs its CUDA kernels and
nerfacc's CUDA scans, so compositing and the end-to-end renders are compared with a dense per-pixel
front-to-back loop fed by gsplat's projection reference.
"""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_offset_encode,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from unic_lift_ns.rasterization import compositing, rasterize, rasterize_torch, rasterize_with_features, torch_backend
from unic_lift_ns.rasterization.compositing import rasterize_to_pixels
from unic_lift_ns.rasterization.intersection import isect_tiles
from unic_lift_ns.rasterization.projection import fully_fused_projection

W, H = 24, 20  # non-square, two tiles by two tiles (the second ones partial)


# ----------------------------------------------------------------------------------- reference


def ref_project(means, quats, scales, viewmats, Ks, width, height, mode="classic", covars=None):
    """gsplat's pure-PyTorch projection, as its ``_rasterization`` calls it."""
    if covars is None:
        covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, comp = _fully_fused_projection(
        means, covars, viewmats, Ks, width, height, calc_compensations=mode == "antialiased"
    )
    return {"radii": radii, "means2d": means2d, "depths": depths, "conics": conics, "comp": comp}


def ref_composite(means2d, conics, colors, opacities, radii, depths, width, height, tile_size=16):
    """Every pixel x every Gaussian, explicit front-to-back loop.

    Returns renders [C, H, W, D], alphas [C, H, W, 1] and where the early stop fired [C, H, W].
    """
    ys, xs = torch.meshgrid(torch.arange(height) + 0.5, torch.arange(width) + 0.5, indexing="ij")
    renders, alphas, stopped = [], [], []
    for c in range(means2d.shape[0]):
        T = torch.ones(height, width)
        done = torch.zeros(height, width, dtype=torch.bool)
        acc = torch.zeros(height, width, colors.shape[-1])
        for g in torch.argsort(depths[c], stable=True).tolist():
            r = radii[c, g].item()
            if r <= 0:
                continue
            mx, my = means2d[c, g]
            # gsplat only visits the tiles overlapping the radius square around the mean
            tx0, tx1 = math.floor((mx.item() - r) / tile_size), math.ceil((mx.item() + r) / tile_size)
            ty0, ty1 = math.floor((my.item() - r) / tile_size), math.ceil((my.item() + r) / tile_size)
            tile_x, tile_y = (xs // tile_size), (ys // tile_size)
            in_rect = (tile_x >= tx0) & (tile_x < tx1) & (tile_y >= ty0) & (tile_y < ty1)
            dx, dy = mx - xs, my - ys
            a, b, cc = conics[c, g]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp(opacities[c, g] * torch.exp(-sigma), max=0.999)
            valid = in_rect & (sigma >= 0) & (alpha >= 1 / 255) & ~done
            next_T = T * (1 - alpha)
            stop = valid & (next_T <= 1e-4)
            done = done | stop
            use = valid & ~stop
            acc = acc + torch.where(use, alpha * T, 0.0)[..., None] * colors[c, g]
            T = torch.where(use, next_T, T)
        renders.append(acc)
        alphas.append(1 - T[..., None])
        stopped.append(done)
    return torch.stack(renders), torch.stack(alphas), torch.stack(stopped)


def ref_rasterize(means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, mode="classic",
                  render_mode="RGB", backgrounds=None, tile_size=16, covars=None):  # fmt: skip
    proj = ref_project(means, quats, scales, viewmats, Ks, width, height, mode=mode, covars=covars)
    C = len(viewmats)
    opac = opacities.expand(C, -1)
    if mode == "antialiased":
        opac = opac * proj["comp"]
    feats = colors.expand(C, -1, -1)
    if render_mode != "RGB":
        feats = torch.cat([feats, proj["depths"][..., None]], -1)
    render, alpha, proj["stopped"] = ref_composite(proj["means2d"], proj["conics"], feats, opac, proj["radii"],
                                                   proj["depths"], width, height, tile_size)  # fmt: skip
    if backgrounds is not None:
        bg = torch.cat([backgrounds, torch.zeros(C, render.shape[-1] - backgrounds.shape[-1])], -1)
        render = render + (1 - alpha) * bg[:, None, None]
    if render_mode == "RGB+ED":
        render = torch.cat([render[..., :-1], render[..., -1:] / alpha.clamp(min=1e-10)], -1)
    return render, alpha, proj


# ---------------------------------------------------------------------------------- scenes


def make_cameras(C=2, width=W, height=H):
    viewmats = torch.eye(4).repeat(C, 1, 1)
    angle = torch.linspace(0, 0.3, C)
    viewmats[:, 0, 0], viewmats[:, 0, 2] = torch.cos(angle), torch.sin(angle)
    viewmats[:, 2, 0], viewmats[:, 2, 2] = -torch.sin(angle), torch.cos(angle)
    viewmats[:, 0, 3] = torch.linspace(0, -0.2, C)
    Ks = torch.tensor([[22.0, 0, width / 2 + 0.7], [0, 21.0, height / 2 - 0.4], [0, 0, 1]]).repeat(C, 1, 1)
    return viewmats, Ks


def make_scene(N=16, D=3, seed=0, opacity=(0.2, 0.95)):
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(N, 3, generator=g) * torch.tensor([0.5, 0.4, 0.3]) + torch.tensor([0.0, 0.0, 2.5])
    quats = torch.randn(N, 4, generator=g)
    scales = torch.exp(torch.randn(N, 3, generator=g) * 0.5 - 2.3)
    opacities = opacity[0] + (opacity[1] - opacity[0]) * torch.rand(N, generator=g)
    colors = torch.rand(N, D, generator=g)
    return [t.requires_grad_(True) for t in (means, quats, scales, opacities, colors)]


def weighted_loss(render, alpha, seed=1):
    g = torch.Generator().manual_seed(seed)
    colour_weights = torch.randn(render.shape, generator=g)
    return (render * colour_weights).sum() + (alpha * torch.randn(alpha.shape, generator=g)).sum()


def assert_close(actual, expected, rtol=1e-4):
    actual, expected = actual.detach(), expected.detach()
    scale = max(expected.abs().max().item(), 1e-6)
    torch.testing.assert_close(actual, expected, rtol=rtol, atol=rtol * scale)


@pytest.fixture(params=["default", "tiny-batches"])
def batching(request, monkeypatch):
    """Run with the default schedule, and with 4x4-pixel blocks, 1-block batches and 3-Gaussian chunks."""
    if request.param == "tiny-batches":
        monkeypatch.setattr(torch_backend, "BLOCK_SIZE", 4)
        monkeypatch.setattr(compositing, "MAX_BATCH_ELEMS", 1)
        monkeypatch.setattr(compositing, "CHUNK_GAUSSIANS", 3)
    return request.param


# ------------------------------------------------------------------------------ stage tests


@pytest.mark.parametrize("mode", ["classic", "antialiased"])
def test_projection_matches_gsplat_reference(mode):
    means, quats, scales, _, _ = make_scene(N=20)
    with torch.no_grad():
        means[0, 2] = -1.0  # behind the cameras
        means[1, 0] = 40.0  # far off-screen
    viewmats, Ks = make_cameras()
    aa = mode == "antialiased"
    covars, _ = _quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    ours = fully_fused_projection(means, covars, viewmats, Ks, W, H, calc_compensations=aa)
    ref = _fully_fused_projection(means, covars, viewmats, Ks, W, H, calc_compensations=aa)
    assert ours.radii.dtype == torch.int32 and ours.radii.shape == (2, 20)
    torch.testing.assert_close(ours.radii, ref[0])
    ok = ref[0] > 0
    assert ok.sum() >= 10 and not ok[:, :2].any()
    assert all(torch.isfinite(t).all() for t in ours if t is not None)  # culled entries stay finite
    fields = [1, 2, 3, 4] if aa else [1, 2, 3]  # means2d, depths, conics (, compensations)
    for i in fields:
        assert_close(ours[i][ok], ref[i][ok], rtol=1e-5)

    g = torch.Generator().manual_seed(0)
    weights = [torch.randn(ref[i][ok].shape, generator=g) for i in fields]

    def loss(outputs):
        return sum((outputs[i][ok] * w).sum() for i, w in zip(fields, weights))

    grads = torch.autograd.grad(loss(ours), (means, quats, scales), retain_graph=True)
    ref_grads = torch.autograd.grad(loss(ref), (means, quats, scales))
    for got, want in zip(grads, ref_grads):
        assert want.abs().max() > 0
        assert_close(got, want, rtol=1e-4)


@pytest.mark.parametrize("tile_size,block", [(16, 16), (16, 8), (16, 4), (12, 12), (12, 6)])
def test_intersections_refine_gsplat_tile_lists(tile_size, block):
    """Each block's list is the depth-ordered list of gsplat's ``_isect_tiles`` for its tile, less Gaussians that
    stay below alpha 1/255 on all of the block's pixels."""
    width, height = 40, 36
    means, quats, scales, opacities, _ = make_scene(N=30, seed=12)
    viewmats, Ks = make_cameras(2, width, height)
    with torch.no_grad():
        p = ref_project(means, quats, scales, viewmats, Ks, width, height)
    C, N = p["radii"].shape
    tile_w, tile_h = math.ceil(width / tile_size), math.ceil(height / tile_size)
    ref_tiles_per_gauss, isect_ids, ref_ids = _isect_tiles(p["means2d"], p["radii"], p["depths"], tile_size, tile_w,
                                                           tile_h)  # fmt: skip
    ref_offsets = _isect_offset_encode(isect_ids, C, tile_w, tile_h).flatten().tolist() + [len(ref_ids)]
    opac = opacities.detach().expand(C, N)
    tiles_per_gauss, ids, counts = isect_tiles(
        p["means2d"].reshape(-1, 2), p["radii"].reshape(-1), p["depths"].reshape(-1), p["conics"].reshape(-1, 3),
        opac.reshape(-1), torch.arange(C).repeat_interleave(N), C, tile_size, block, width, height,
    )  # fmt: skip
    torch.testing.assert_close(tiles_per_gauss.reshape(C, N), ref_tiles_per_gauss)

    blocks_x, blocks_y = math.ceil(width / block), math.ceil(height / block)
    assert counts.shape == (C * blocks_x * blocks_y,) and len(ids) > 0
    k, dropped = tile_size // block, 0
    for i, got in enumerate(ids.split(counts.tolist())):
        cam, by, bx = i // (blocks_x * blocks_y), (i // blocks_x) % blocks_y, i % blocks_x
        tile = (cam * tile_h + by // k) * tile_w + bx // k
        want, got = ref_ids[ref_offsets[tile] : ref_offsets[tile + 1]].tolist(), got.tolist()
        assert [g for g in want if g in set(got)] == got
        rows = torch.arange(by * block, min((by + 1) * block, height)) + 0.5
        cols = torch.arange(bx * block, min((bx + 1) * block, width)) + 0.5
        ys, xs = torch.meshgrid(rows, cols, indexing="ij")  # pixel centres of the block
        for g in set(want) - set(got):
            (mx, my), (a, b, c) = p["means2d"].reshape(-1, 2)[g], p["conics"].reshape(-1, 3)[g]
            dx, dy = mx - xs, my - ys
            alpha = opac.reshape(-1)[g] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
            assert alpha.max() < 1 / 255
            dropped += 1
    assert dropped > 0


def test_compositing_matches_per_pixel_reference(batching):
    """The compositing stage alone on gsplat's projected Gaussians: values, and its analytic backward against
    autograd through the dense reference."""
    means, quats, scales, opacities, _ = make_scene(N=18, seed=9)
    viewmats, Ks = make_cameras()
    with torch.no_grad():
        p = ref_project(means, quats, scales, viewmats, Ks, W, H)
    C, N = p["radii"].shape
    p["means2d"][:, 0], p["depths"][:, 0] = torch.tensor([6.5, 5.5]), 0.1  # frontmost, centred on a pixel
    assert (p["radii"][:, 0] > 0).all()
    g = torch.Generator().manual_seed(9)
    means2d, conics = p["means2d"].requires_grad_(True), p["conics"].requires_grad_(True)
    opac = opacities.detach().expand(C, N).clone()
    opac[:, :4] = 0.9999  # reaches gsplat's 0.999 alpha clamp
    opac.requires_grad_(True)
    colors = torch.rand(C, N, 5, generator=g).requires_grad_(True)
    bg = torch.rand(C, 5, generator=g)
    block = torch_backend.BLOCK_SIZE
    _, ids, counts = isect_tiles(
        means2d.reshape(-1, 2), p["radii"].reshape(-1), p["depths"].reshape(-1), conics.reshape(-1, 3),
        opac.reshape(-1), torch.arange(C).repeat_interleave(N), C, 16, block, W, H,
    )  # fmt: skip
    render, alpha = rasterize_to_pixels(means2d, conics, colors, opac, W, H, block, ids, counts, backgrounds=bg)
    ref_render, ref_alpha, _ = ref_composite(means2d, conics, colors, opac, p["radii"], p["depths"], W, H)
    ref_render = ref_render + (1 - ref_alpha) * bg[:, None, None]
    assert render.shape == (C, H, W, 5) and alpha.shape == (C, H, W, 1) and alpha.max() > 0.5
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)
    leaves = (means2d, conics, opac, colors)
    grads = torch.autograd.grad(weighted_loss(render, alpha), leaves)
    ref_grads = torch.autograd.grad(weighted_loss(ref_render, ref_alpha), leaves)
    for got, want in zip(grads, ref_grads):
        assert want.abs().max() > 0
        assert_close(got, want, rtol=1e-4)


@pytest.mark.parametrize("degree,per_camera", [(0, False), (1, False), (2, True), (3, False)])
def test_sh_colours_match_gsplat_reference(degree, per_camera):
    """Rendering SH coefficients equals rendering gsplat's ``_spherical_harmonics`` colours along camera -> mean,
    shifted by 0.5 and clamped at 0 as in gsplat's ``rasterization``: values and gradients."""
    g = torch.Generator().manual_seed(degree)
    coeffs = (2 * torch.randn(*((2,) if per_camera else ()), 7, 16, 3, generator=g)).requires_grad_(True)
    means, quats, scales, opacities, _ = make_scene(N=7, seed=degree)
    viewmats, Ks = make_cameras()
    geometry = (means, quats, scales, opacities)
    render, alpha, _ = rasterize_torch(*geometry, coeffs, viewmats, Ks, W, H, sh_degree=degree, packed=False)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    direct = _spherical_harmonics(degree, means[None] - campos[:, None], coeffs.expand(2, 7, -1, -1))
    colors = torch.clamp_min(direct + 0.5, 0.0)  # per camera [C, N, 3]
    assert (colors == 0).any() and (colors > 0).any()
    expected, expected_alpha, _ = rasterize_torch(*geometry, colors, viewmats, Ks, W, H, packed=False)
    assert_close(render, expected, rtol=1e-5)
    grads = torch.autograd.grad(weighted_loss(render, alpha), (means, coeffs))
    ref_grads = torch.autograd.grad(weighted_loss(expected, expected_alpha), (means, coeffs))
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, rtol=1e-4)
    n_bases = (degree + 1) ** 2
    assert (grads[1][..., :n_bases, :] != 0).any() and (grads[1][..., n_bases:, :] == 0).all()


def test_sh_degree_zero_renders_splatfacto_colours():
    """Splatfacto stores colours as ``RGB2SH(rgb)``: degree-0 SH must render exactly those colours."""
    from nerfstudio.models.splatfacto import RGB2SH

    means, quats, scales, opacities, rgb = make_scene(N=9, seed=10)
    coeffs = torch.zeros(9, 16, 3)
    coeffs[:, 0] = RGB2SH(rgb.detach())
    viewmats, Ks = make_cameras()
    render, _, _ = rasterize_torch(means, quats, scales, opacities, coeffs, viewmats, Ks, W, H, sh_degree=0)
    expected, _, _ = rasterize_torch(means, quats, scales, opacities, rgb, viewmats, Ks, W, H)
    assert expected.max() > 0.3
    assert_close(render, expected, rtol=1e-5)


def test_cpu_rendering_does_not_load_gsplat_cuda_extension():
    code = (
        "import sys, torch\n"
        "from unic_lift_ns.rasterization import rasterize\n"
        "K = torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]])\n"
        "colors = torch.zeros(1, 16, 3)\n"
        "out = rasterize(torch.tensor([[0.0, 0, 2]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1),\n"
        "                torch.tensor([0.9]), colors, torch.eye(4)[None], K, 16, 16, sh_degree=3)\n"
        "assert out[1].max() > 0.5\n"
        "assert 'gsplat.cuda._backend' not in sys.modules, 'CUDA extension loaded'\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


# ------------------------------------------------------------------------------- end to end


@pytest.mark.parametrize(
    "D,render_mode,mode,packed,with_bg",
    [
        (3, "RGB", "classic", False, False),
        (15, "RGB+ED", "antialiased", True, True),
        (3, "RGB+D", "classic", True, False),
    ],
)
def test_render_and_gradients_match_reference(batching, D, render_mode, mode, packed, with_bg):
    means, quats, scales, opacities, colors = make_scene(N=18, D=D, seed=D)
    viewmats, Ks = make_cameras()
    bg = torch.rand(2, D) if with_bg else None
    params = (means, quats, scales, opacities, colors)

    render, alpha, info = rasterize_torch(*params, viewmats, Ks, W, H, packed=packed, render_mode=render_mode,
                                          rasterize_mode=mode, backgrounds=bg)  # fmt: skip
    ref_render, ref_alpha, proj = ref_rasterize(*params, viewmats, Ks, W, H, mode=mode, render_mode=render_mode,
                                                backgrounds=bg)  # fmt: skip
    assert render.shape == (2, H, W, D + (render_mode != "RGB")) and alpha.shape == (2, H, W, 1)
    assert alpha.max() > 0.5
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)

    *grads, m2d_grad = torch.autograd.grad(weighted_loss(render, alpha), [*params, info["means2d"]])
    *ref_grads, ref_m2d_grad = torch.autograd.grad(weighted_loss(ref_render, ref_alpha), [*params, proj["means2d"]])
    for name, got, want in zip(("means", "quats", "scales", "opacities", "colors"), grads, ref_grads):
        assert want.abs().max() > 0, name
        assert_close(got, want, rtol=1e-4)

    if packed:
        cams, gids = info["camera_ids"], info["gaussian_ids"]
        assert info["means2d"].shape == (len(cams), 2)
        assert_close(m2d_grad, ref_m2d_grad[cams, gids], rtol=1e-4)
    else:
        assert m2d_grad.shape == (2, 18, 2)
        assert_close(m2d_grad, ref_m2d_grad * (proj["radii"][..., None] > 0), rtol=1e-4)


def test_early_termination_matches_reference(batching):
    """Many nearly opaque, overlapping Gaussians: pixels saturate (T < 1e-4) part way down the list."""
    means, quats, scales, opacities, colors = make_scene(N=20, seed=3, opacity=(0.85, 0.99))
    with torch.no_grad():
        means[:, :2] *= 0.3
        scales.mul_(3.0)
    viewmats, Ks = make_cameras()
    params = (means, quats, scales, opacities, colors)
    render, alpha, _ = rasterize_torch(*params, viewmats, Ks, W, H, packed=False)
    ref_render, ref_alpha, proj = ref_rasterize(*params, viewmats, Ks, W, H)
    assert proj["stopped"].sum() > 20
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)
    grads = torch.autograd.grad(weighted_loss(render, alpha), params)
    ref_grads = torch.autograd.grad(weighted_loss(ref_render, ref_alpha), params)
    for got, want in zip(grads, ref_grads):
        assert_close(got, want, rtol=1e-4)


def test_large_gaussian_spanning_tiles(batching):
    """One big splat covering all 12 tiles of a 60x40 image (plus small ones) renders like the reference."""
    width, height = 60, 40
    means, quats, scales, opacities, colors = make_scene(N=6, seed=5, opacity=(0.3, 0.35))
    with torch.no_grad():
        means[0] = torch.tensor([0.05, -0.02, 2.0])
        quats[0] = torch.tensor([1.0, 0.0, 0.0, 0.0])
        scales[0] = torch.tensor([1.2, 1.0, 0.5])
        opacities[0] = 0.9
    viewmats, Ks = make_cameras(1, width, height)
    params = (means, quats, scales, opacities, colors)
    render, alpha, info = rasterize_torch(*params, viewmats, Ks, width, height, packed=False)
    ref_render, ref_alpha, _ = ref_rasterize(*params, viewmats, Ks, width, height)
    assert info["tiles_per_gauss"][0, 0] == 12
    assert (ref_alpha > 0).all()
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)
    for got, want in zip(
        torch.autograd.grad(weighted_loss(render, alpha), params),
        torch.autograd.grad(weighted_loss(ref_render, ref_alpha), params),
    ):
        assert_close(got, want, rtol=1e-4)


def test_tile_size_not_multiple_of_block(batching):
    means, quats, scales, opacities, colors = make_scene(N=12, seed=4)
    viewmats, Ks = make_cameras(1)
    params = (means, quats, scales, opacities, colors)
    render, alpha, info = rasterize_torch(*params, viewmats, Ks, W, H, packed=False, tile_size=12)
    ref_render, ref_alpha, _ = ref_rasterize(*params, viewmats, Ks, W, H, tile_size=12)
    assert info["tile_width"] == 2 and info["tile_height"] == 2
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)


def test_only_tiles_within_radius_are_visited(batching):
    """Like gsplat, a pixel outside the tiles overlapping the radius square gets nothing, even if alpha >= 1/255."""
    width, height = 48, 16
    viewmats, Ks = torch.eye(4)[None], torch.tensor([[[20.0, 0, 24], [0, 20.0, 8], [0, 0, 1]]])
    params = [
        torch.tensor([[-0.52, 0.0, 2.0]]), torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.4),
        torch.tensor([0.99]), torch.ones(1, 3),
    ]  # fmt: skip
    render, alpha, info = rasterize_torch(*params, viewmats, Ks, width, height, packed=False)
    (mx, my), radius, (a, b, c) = info["means2d"][0, 0], info["radii"][0, 0], info["conics"][0, 0]
    assert math.ceil((mx + radius).item() / 16) == 2  # tiles 0 and 1 only
    dx, dy = mx - 32.5, my - 8.5  # first pixel centre of tile 2
    assert 0.99 * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy)) > 1 / 255
    assert alpha[0, 8, 31] > 0 and alpha[0, 8, 32] == 0
    ref_render, ref_alpha, _ = ref_rasterize(*params, viewmats, Ks, width, height)
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)


def test_feature_only_gradients_with_detached_geometry(batching):
    """The model composites embeddings with detached geometry: only the feature gradient is needed."""
    means, quats, scales, opacities, colors = make_scene(N=14, D=12, seed=6)
    viewmats, Ks = make_cameras()
    geometry = [t.detach() for t in (means, quats, scales, opacities)]
    render, alpha, _ = rasterize_torch(*geometry, colors, viewmats, Ks, W, H, packed=False)
    ref_render, ref_alpha, _ = ref_rasterize(*geometry, colors, viewmats, Ks, W, H)
    assert_close(render, ref_render, rtol=1e-5)
    (got,) = torch.autograd.grad(weighted_loss(render, alpha), colors)
    (want,) = torch.autograd.grad(weighted_loss(ref_render, ref_alpha), colors)
    assert_close(got, want, rtol=1e-4)


@pytest.mark.parametrize("render_mode, packed, with_bg", [("RGB+ED", False, False), ("RGB", True, True)])
def test_features_share_the_colour_pass_and_never_reach_geometry(batching, render_mode, packed, with_bg):
    """Features composited in the colour pass equal a second pass with detached geometry, in values and in every
    gradient: geometry (and ``means2d``, the densification statistic) get exactly the colour-only gradients."""
    means, quats, scales, opacities, colors = make_scene(N=30, seed=11)
    features = torch.rand(30, 12, generator=torch.Generator().manual_seed(12)).requires_grad_(True)
    viewmats, Ks = make_cameras()
    leaves = [means, quats, scales, opacities, colors, features]
    kwargs = dict(render_mode=render_mode, packed=packed, absgrad=True)
    if with_bg:
        kwargs["backgrounds"] = torch.tensor([[0.2, 0.3, 0.4], [0.5, 0.1, 0.0]])


    render, feats, alpha, info = rasterize_with_features(*leaves[:5], features, viewmats, Ks, W, H, **kwargs)
    loss = weighted_loss(render, alpha) + weighted_loss(feats, alpha.detach(), seed=2)
    info["means2d"].retain_grad()
    loss.backward()
    shared = [t.grad.clone() for t in leaves] + [info["means2d"].grad.clone(), info["means2d"].absgrad.clone()]
    for t in leaves:
        t.grad = None

    ref, ref_alpha, ref_info = rasterize_torch(*leaves[:5], viewmats, Ks, W, H, **kwargs)
    geometry = [t.detach() for t in leaves[:4]]
    ref_feats, _, _ = rasterize_torch(*geometry, features, viewmats, Ks, W, H, packed=packed)
    ref_info["means2d"].retain_grad()
    (weighted_loss(ref, ref_alpha) + weighted_loss(ref_feats, ref_alpha.detach(), seed=2)).backward()
    separate = [t.grad.clone() for t in leaves] + [ref_info["means2d"].grad, ref_info["means2d"].absgrad]

    assert "render_features" not in info and feats.shape == (2, H, W, 12)
    assert_close(render, ref, rtol=1e-5)
    assert_close(feats, ref_feats, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-6)
    for got, want in zip(shared, separate):
        assert_close(got, want, rtol=1e-4)
    assert shared[5].abs().sum() > 0  # the features did get gradients


def test_covars_input_matches_reference():
    """Full 3D covariances (random, not from quaternions) render and differentiate like gsplat's reference."""
    means, _, _, opacities, colors = make_scene(N=10, seed=8)
    A = torch.randn(10, 3, 3, generator=torch.Generator().manual_seed(8)) * 0.08
    covars = (A @ A.transpose(-1, -2) + 1e-4 * torch.eye(3)).requires_grad_(True)
    viewmats, Ks = make_cameras()
    params = (means, opacities, colors, covars)
    render, alpha, _ = rasterize_torch(means, None, None, opacities, colors, viewmats, Ks, W, H, packed=False,
                                       covars=covars)  # fmt: skip
    ref_render, ref_alpha, _ = ref_rasterize(means, None, None, opacities, colors, viewmats, Ks, W, H, covars=covars)
    assert alpha.max() > 0.5
    assert_close(render, ref_render, rtol=1e-5)
    assert_close(alpha, ref_alpha, rtol=1e-5)
    grads = torch.autograd.grad(weighted_loss(render, alpha), params)
    ref_grads = torch.autograd.grad(weighted_loss(ref_render, ref_alpha), params)
    for got, want in zip(grads, ref_grads):
        assert want.abs().max() > 0
        assert_close(got, want, rtol=1e-4)


def test_quaternions_are_wxyz_rotations():
    """(quats, scales) render like the covariances R diag(scales^2) R^T built from scipy's rotations."""
    from scipy.spatial.transform import Rotation

    means, quats, scales, opacities, colors = make_scene(N=10, seed=8)
    rot = torch.from_numpy(Rotation.from_quat(quats.detach().numpy()[:, [1, 2, 3, 0]]).as_matrix()).float()
    covars = rot @ torch.diag_embed(scales.detach() ** 2) @ rot.transpose(-1, -2)
    viewmats, Ks = make_cameras()
    expected = rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    actual = rasterize_torch(means, None, None, opacities, colors, viewmats, Ks, W, H, covars=covars)
    assert expected[1].max() > 0.5
    assert_close(actual[0], expected[0], rtol=1e-5)
    assert_close(actual[1], expected[1], rtol=1e-5)


def test_culling_behind_far_and_offscreen():
    means, quats, scales, opacities, colors = make_scene(N=5, seed=7)
    with torch.no_grad():
        means[0] = torch.tensor([0.0, 0.0, -2.0])  # behind the camera
        means[1] = torch.tensor([0.0, 0.0, 0.005])  # in front of the camera but before the near plane
        means[2] = torch.tensor([50.0, 0.0, 2.0])  # far off-screen to the right
        means[3] = torch.tensor([0.0, 0.0, 30.0])  # beyond the far plane below
        means[4] = torch.tensor([0.0, 0.0, 2.0])  # visible
    viewmats, Ks = make_cameras(1)
    params = (means, quats, scales, opacities, colors)
    render, alpha, info = rasterize_torch(*params, viewmats, Ks, W, H, packed=False, far_plane=20.0)
    assert info["radii"][0].tolist()[:4] == [0, 0, 0, 0] and info["radii"][0, 4] > 0
    assert torch.isfinite(info["means2d"]).all() and torch.isfinite(info["conics"]).all()
    radius = float(info["radii"][0, 4])
    for radius_clip, kept in ((radius - 1, True), (radius, False)):  # gsplat's kernel culls radius <= radius_clip
        clipped = rasterize_torch(*params, viewmats, Ks, W, H, packed=False, far_plane=20.0, radius_clip=radius_clip)
        assert bool(clipped[2]["radii"][0, 4] > 0) == kept
    only_visible = rasterize_torch(*(p[4:] for p in params), viewmats, Ks, W, H, packed=False)
    torch.testing.assert_close(render, only_visible[0])
    torch.testing.assert_close(alpha, only_visible[1])
    render.sum().backward()
    assert torch.isfinite(means.grad).all() and (means.grad[:4] == 0).all()


def test_empty_scene():
    means, quats, scales, opacities, colors = make_scene(N=3)
    with torch.no_grad():
        means[:, 2] = -1.0
    viewmats, Ks = make_cameras()
    bg = torch.tensor([[0.1, 0.2, 0.3], [1.0, 0.0, 0.5]])
    render, alpha, info = rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, W, H,
                                          backgrounds=bg, packed=True)  # fmt: skip
    assert info["means2d"].shape == (0, 2) and info["tiles_per_gauss"].sum() == 0
    assert (alpha == 0).all()
    torch.testing.assert_close(render, bg[:, None, None].expand_as(render))
    render.sum().backward()
    assert (means.grad == 0).all()


def test_absgrad_matches_per_pixel_reference():
    width, height = 14, 11
    means, quats, scales, opacities, colors = make_scene(N=8, seed=11)
    viewmats, Ks = make_cameras(1, width, height)
    params = (means, quats, scales, opacities, colors)
    render, alpha, info = rasterize_torch(*params, viewmats, Ks, width, height, packed=False, absgrad=True)
    info["means2d"].retain_grad()
    weighted_loss(render, alpha).backward()
    m2d = info["means2d"]
    assert m2d.absgrad.shape == m2d.grad.shape == (1, 8, 2)

    ref_render, ref_alpha, proj = ref_rasterize(*params, viewmats, Ks, width, height)
    g = torch.Generator().manual_seed(1)
    per_pixel = (ref_render * torch.randn(ref_render.shape, generator=g)).sum(-1)
    per_pixel = per_pixel + (ref_alpha * torch.randn(ref_alpha.shape, generator=g)).sum(-1)
    expected = torch.zeros_like(m2d.absgrad)
    for value in per_pixel.flatten():
        (grad,) = torch.autograd.grad(value, proj["means2d"], retain_graph=True)
        expected += grad.abs()
    assert (m2d.absgrad >= m2d.grad.abs() - 1e-5).all()
    assert_close(m2d.absgrad, expected * (proj["radii"][..., None] > 0), rtol=1e-4)


def test_dispatcher_uses_torch_backend_on_cpu():
    means, quats, scales, opacities, colors = make_scene(N=6)
    viewmats, Ks = make_cameras()
    args = (means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    a = rasterize(*args, packed=False, render_mode="RGB+ED")
    b = rasterize_torch(*args, packed=False, render_mode="RGB+ED")
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])
