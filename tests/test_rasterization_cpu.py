"""Pure-PyTorch rasteriser vs a dense, per-pixel, front-to-back reference with gsplat 1.4.0 rules."""

from __future__ import annotations

import math

import pytest
import torch

from unic_lift_ns.rasterization import rasterize, rasterize_torch, torch_backend
from unic_lift_ns.rasterization.sh import spherical_harmonics

W, H = 24, 20  # non-square, two tiles by two tiles (the second ones partial)


# ----------------------------------------------------------------------------------- reference


def ref_project(means, quats, scales, viewmats, Ks, width, height, eps2d=0.3, near=0.01, far=1e10):
    """Per-camera EWA projection written out with full matrices; gsplat's radius and culling rules."""
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [
            torch.stack([1 - 2 * (y**2 + z**2), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x**2 + z**2), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x**2 + y**2)], -1),
        ],
        -2,
    )
    cov3d = rot @ torch.diag_embed(scales**2) @ rot.transpose(-1, -2)
    out = {k: [] for k in ("radii", "means2d", "depths", "conics", "comp")}
    for vm, K in zip(viewmats, Ks):
        p = means @ vm[:3, :3].T + vm[:3, 3]
        cov_c = vm[:3, :3] @ cov3d @ vm[:3, :3].T
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        pz = torch.where(p[:, 2] >= near, p[:, 2], torch.ones_like(p[:, 2]))
        # gsplat evaluates the Jacobian at the mean clamped to 1.3x the field of view
        u = torch.clamp(p[:, 0] / pz, -(cx / fx + 0.15 * width / fx), (width - cx) / fx + 0.15 * width / fx)
        v = torch.clamp(p[:, 1] / pz, -(cy / fy + 0.15 * height / fy), (height - cy) / fy + 0.15 * height / fy)
        J = torch.zeros(len(means), 2, 3)
        J[:, 0, 0] = fx / pz
        J[:, 0, 2] = -fx * u / pz
        J[:, 1, 1] = fy / pz
        J[:, 1, 2] = -fy * v / pz
        cov2d = J @ cov_c @ J.transpose(-1, -2)
        blurred = cov2d + eps2d * torch.eye(2)
        det = torch.linalg.det(blurred)
        inv = torch.linalg.inv(blurred)
        m2d = torch.stack([fx * p[:, 0] / pz + cx, fy * p[:, 1] / pz + cy], -1)
        b = 0.5 * (blurred[:, 0, 0] + blurred[:, 1, 1])
        radius = torch.ceil(3 * torch.sqrt(b + torch.sqrt(torch.clamp(b * b - det, min=0.01)))).detach()
        ok = (p[:, 2] >= near) & (p[:, 2] <= far) & (det > 0)
        ok &= (m2d[:, 0] + radius > 0) & (m2d[:, 0] - radius < width)
        ok &= (m2d[:, 1] + radius > 0) & (m2d[:, 1] - radius < height)
        out["radii"].append(torch.where(ok, radius, 0.0).int())
        out["means2d"].append(m2d)
        out["depths"].append(p[:, 2])
        out["conics"].append(torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1))
        out["comp"].append(torch.sqrt(torch.clamp(torch.linalg.det(cov2d) / det, min=0)))
    return {k: torch.stack(v) for k, v in out.items()}


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
                  render_mode="RGB", backgrounds=None, tile_size=16):  # fmt: skip
    proj = ref_project(means, quats, scales, viewmats, Ks, width, height)
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
        monkeypatch.setattr(torch_backend, "MAX_BATCH_ELEMS", 1)
        monkeypatch.setattr(torch_backend, "CHUNK_GAUSSIANS", 3)
    return request.param


# ----------------------------------------------------------------------------------- tests


def test_projection_matches_reference():
    means, quats, scales, _, _ = make_scene(N=20)
    viewmats, Ks = make_cameras()
    _, _, info = rasterize_torch(means, quats, scales, torch.full((20,), 0.5), torch.rand(20, 3), viewmats, Ks,
                                 W, H, packed=False)  # fmt: skip
    ref = ref_project(means, quats, scales, viewmats, Ks, W, H)
    assert info["radii"].dtype == torch.int32 and info["radii"].shape == (2, 20)
    torch.testing.assert_close(info["radii"], ref["radii"])
    ok = ref["radii"] > 0
    assert ok.sum() >= 10
    assert_close(info["means2d"][ok], ref["means2d"][ok], rtol=1e-5)
    assert_close(info["depths"][ok], ref["depths"][ok], rtol=1e-5)
    assert_close(info["conics"][ok], ref["conics"][ok], rtol=1e-4)


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


def test_covars_input_matches_quats_and_scales():
    means, quats, scales, opacities, colors = make_scene(N=10, seed=8)
    viewmats, Ks = make_cameras()
    q = torch.nn.functional.normalize(quats.detach(), dim=-1)
    w, x, y, z = q.unbind(-1)
    rot = torch.stack(
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
         2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
         2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1,
    ).reshape(-1, 3, 3)  # fmt: skip
    covars = rot @ torch.diag_embed(scales.detach() ** 2) @ rot.transpose(-1, -2)
    expected = rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    actual = rasterize_torch(means, None, None, opacities, colors, viewmats, Ks, W, H, covars=covars)
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


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_sh_colors(degree):
    from gsplat.cuda._torch_impl import _spherical_harmonics  # pure-PyTorch reference, no CUDA

    g = torch.Generator().manual_seed(degree)
    dirs = torch.randn(2, 7, 3, generator=g)
    coeffs = torch.randn(7, 16, 3, generator=g)
    torch.testing.assert_close(
        spherical_harmonics(degree, dirs, coeffs), _spherical_harmonics(degree, dirs, coeffs.expand(2, -1, -1, -1)),
        rtol=1e-5, atol=1e-5,
    )  # fmt: skip

    # Rendering SH coefficients equals rendering their colours evaluated along camera -> mean.
    means, quats, scales, opacities, _ = make_scene(N=7, seed=degree)
    viewmats, Ks = make_cameras()
    render, _, _ = rasterize_torch(means, quats, scales, opacities, coeffs, viewmats, Ks, W, H, sh_degree=degree)
    campos = torch.linalg.inv(viewmats)[:, :3, 3]
    direct = _spherical_harmonics(degree, means[None] - campos[:, None], coeffs.expand(2, -1, -1, -1))
    colors = torch.clamp_min(direct + 0.5, 0.0)  # per camera [C, N, 3]
    expected, _, _ = rasterize_torch(means, quats, scales, opacities, colors, viewmats, Ks, W, H)
    assert_close(render, expected, rtol=1e-5)


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
