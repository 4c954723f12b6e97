"""Pure-PyTorch (CPU-capable) drop-in for ``gsplat.rendering.rasterization`` (gsplat 1.4.0 semantics).

Pipeline: EWA projection (:mod:`.projection`), optional SH colours (:mod:`.sh`), binning of the
projected Gaussians into small pixel blocks with (block, depth)-sorted intersection lists, and
front-to-back alpha compositing evaluated for batches of blocks at once. Compositing is a custom
autograd function with an analytic backward that recomputes each batch, so memory stays bounded
by one batch and ``means2d`` receives per-pixel gradients (and ``absgrad``) like gsplat.

Which pixels a Gaussian may touch follows gsplat exactly: only pixels inside the ``tile_size``
tiles overlapping its ``radius`` square, and only where ``alpha >= 1/255``. Blocks smaller than a
tile (``BLOCK_SIZE``) and an opacity-aware ellipse bound only skip work that cannot contribute.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Dict, Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor
from typing_extensions import Literal

from .projection import project_gaussians
from .sh import spherical_harmonics

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
LOG_T_MIN = math.log(1e-4)
# Exponents are clamped here (alpha < 1/255 long before) to keep denormals, slow on CPUs, away.
SIGMA_MAX = 20.0
# Side of the pixel blocks Gaussians are binned into; used when it divides ``tile_size``.
BLOCK_SIZE = 8
# Work per step: pixels x Gaussians of one [B, P, L] chunk (sized to stay in the CPU caches).
MAX_BATCH_ELEMS = 1 << 18
# Gaussians per block evaluated per step; a batch stops once all its pixels are opaque.
CHUNK_GAUSSIANS = 64
# Largest float32 below 1/255, so that thresholding keeps alpha >= 1/255 like gsplat.
_ALPHA_THRESHOLD = float(torch.nextafter(torch.tensor(ALPHA_MIN), torch.tensor(0.0)))


def block_ranges(
    means2d: Tensor,  # [M, 2]
    radii: Tensor,  # [M]
    conics: Tensor,  # [M, 3]
    opacities: Tensor,  # [M]
    tile_size: int,
    block: int,
    width: int,
    height: int,
) -> Tuple[Tensor, Tensor]:
    """Half-open block rectangles ``[x0, y0, x1, y1]`` [M, 4] and gsplat's ``tiles_per_gauss`` [M].

    The rectangle is gsplat's tile range (tiles overlapping the ``radius`` square around the mean)
    intersected with the bounding box of the ellipse where ``opacity * exp(-sigma) >= 1/255``
    (slightly enlarged); ``block`` must divide ``tile_size``.
    """
    tile_width, tile_height = math.ceil(width / tile_size), math.ceil(height / tile_size)
    mx, my = means2d.detach().unbind(-1)
    r = radii.to(mx.dtype)
    # gsplat's tile range, expressed in blocks
    tx0 = torch.floor((mx - r) / tile_size).clamp(0, tile_width)
    tx1 = torch.ceil((mx + r) / tile_size).clamp(0, tile_width)
    ty0 = torch.floor((my - r) / tile_size).clamp(0, tile_height)
    ty1 = torch.ceil((my + r) / tile_size).clamp(0, tile_height)
    tiles_per_gauss = ((tx1 - tx0) * (ty1 - ty0) * (radii > 0)).int()
    # axis-aligned half extents of {d : 0.5 d^T conic d <= log(255 * opacity)}
    a, b, c = conics.detach().unbind(-1)
    level = 2.0 * torch.log(255.0 * opacities.detach().clamp(min=1e-30))
    inv_det = 1.0 / (a * c - b * b)
    ex = torch.sqrt(torch.clamp(level * c * inv_det, min=0.0)) * 1.001 + 1e-2
    ey = torch.sqrt(torch.clamp(level * a * inv_det, min=0.0)) * 1.001 + 1e-2
    # pixel centres of block i span [i * block + 0.5, (i + 1) * block - 0.5]
    k = tile_size // block
    x0 = torch.maximum(tx0 * k, torch.ceil((mx - ex - block + 0.5) / block))
    x1 = torch.minimum(tx1 * k, torch.floor((mx + ex - 0.5) / block) + 1)
    y0 = torch.maximum(ty0 * k, torch.ceil((my - ey - block + 0.5) / block))
    y1 = torch.minimum(ty1 * k, torch.floor((my + ey - 0.5) / block) + 1)
    blocks_x, blocks_y = math.ceil(width / block), math.ceil(height / block)
    rect = torch.stack([x0.clamp(0, blocks_x), y0.clamp(0, blocks_y), x1.clamp(0, blocks_x), y1.clamp(0, blocks_y)], -1)
    rect = torch.nan_to_num(rect, nan=0.0).long()
    empty = (radii <= 0) | (level <= 0) | (rect[:, 2] <= rect[:, 0]) | (rect[:, 3] <= rect[:, 1])
    rect[empty] = 0
    return rect, tiles_per_gauss


@torch.no_grad()
def bin_gaussians(
    means2d: Tensor,  # [M, 2]
    radii: Tensor,  # [M]
    depths: Tensor,  # [M]
    conics: Tensor,  # [M, 3]
    opacities: Tensor,  # [M]
    camera_ids: Tensor,  # [M]
    n_cameras: int,
    tile_size: int,
    block: int,
    width: int,
    height: int,
) -> Tuple[Tensor, Tensor, Tensor]:
    """Block/Gaussian intersections sorted by (camera, block, depth, index).

    Returns ``flatten_ids`` [I] (indices into the M projected Gaussians), ``block_counts``
    [n_cameras * n_blocks] (list lengths; lists are stored consecutively) and gsplat's
    ``tiles_per_gauss`` [M].
    """
    device = means2d.device
    blocks_x, blocks_y = math.ceil(width / block), math.ceil(height / block)
    n_blocks = blocks_x * blocks_y
    rect, tiles_per_gauss = block_ranges(means2d, radii, conics, opacities, tile_size, block, width, height)
    w = rect[:, 2] - rect[:, 0]
    counts = w * (rect[:, 3] - rect[:, 1])  # [M]
    ids = torch.repeat_interleave(torch.arange(len(counts), device=device), counts)
    local = torch.arange(len(ids), device=device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    block_ids = camera_ids[ids].long() * n_blocks + (rect[ids, 1] + local // w[ids]) * blocks_x + rect[ids, 0]
    block_ids += local % w[ids]
    depth_bits = depths.detach().contiguous().view(torch.int32).long() & 0xFFFFFFFF  # orders like floats >= 0
    _, order = torch.sort((block_ids << 32) | depth_bits[ids], stable=True)
    block_counts = torch.bincount(block_ids, minlength=n_cameras * n_blocks)
    return ids[order], block_counts, tiles_per_gauss


@dataclass
class _Plan:
    """Intersection lists, the block-batch schedule and the pixel layout of a block."""

    flatten_ids: Tensor  # [I]
    offsets: Tensor  # [C * n_blocks], start of each block's list
    counts: Tensor  # [C * n_blocks]
    batches: List[Tuple[Tensor, int]]  # (block ids [B], longest list in the batch)
    width: int
    height: int
    block: int
    quad: Tensor  # [P, 6] block-local (1, x, y, x^2, xy, y^2) of the pixel centres
    lin: Tensor  # [P, 3] block-local (1, x, y)

    @property
    def blocks_x(self) -> int:
        return math.ceil(self.width / self.block)

    @property
    def blocks_y(self) -> int:
        return math.ceil(self.height / self.block)

    def geometry(self, blocks: Tensor) -> Tuple[Tensor, Tensor]:
        """Block centres [B, 1, 2] (pixel units) and the in-image mask of their pixels [B, P]."""
        bs = self.block
        bid = blocks % (self.blocks_x * self.blocks_y)
        x0, y0 = (bid % self.blocks_x) * bs, (bid // self.blocks_x) * bs
        centers = torch.stack([x0, y0], -1)[:, None].float() + 0.5 * bs
        local = torch.arange(bs * bs, device=blocks.device)
        inside = (x0[:, None] + local % bs < self.width) & (y0[:, None] + local // bs < self.height)
        return centers, inside

    def chunks(self, blocks: Tensor, n_max: int) -> Iterator[Tuple[Tensor, Tensor]]:
        """Gaussian ids [B, L] and slot validity [B, L] of consecutive depth chunks of the blocks."""
        start, count = self.offsets[blocks, None], self.counts[blocks, None]
        last = max(self.flatten_ids.numel() - 1, 0)
        for c0 in range(0, n_max, CHUNK_GAUSSIANS):
            j = torch.arange(c0, min(c0 + CHUNK_GAUSSIANS, n_max), device=blocks.device)[None]
            yield self.flatten_ids[(start + j).clamp(max=last)], j < count


def _make_plan(flatten_ids: Tensor, counts: Tensor, width: int, height: int, block: int) -> _Plan:
    """Group non-empty blocks, longest lists first, into batches of bounded work."""
    offsets = torch.cumsum(counts, 0) - counts
    order = torch.argsort(counts, descending=True, stable=True)
    sorted_counts = counts[order].tolist()
    P = block * block
    batches = []
    i, n = 0, len(sorted_counts)
    while i < n and sorted_counts[i] > 0:
        n_max = sorted_counts[i]
        j = min(i + max(1, MAX_BATCH_ELEMS // (P * min(n_max, CHUNK_GAUSSIANS))), n)
        while sorted_counts[j - 1] == 0:
            j -= 1
        batches.append((order[i:j], n_max))
        i = j
    local = torch.arange(P, device=counts.device)
    x = (local % block).float() + 0.5 - 0.5 * block
    y = (local // block).float() + 0.5 - 0.5 * block
    one = torch.ones_like(x)
    quad = torch.stack([one, x, y, x * x, x * y, y * y], -1)
    return _Plan(flatten_ids, offsets, counts, batches, width, height, block, quad, quad[:, :3].contiguous())


def _neg_exponent_coeffs(gauss: Tensor, slot_ok: Tensor, centers: Tensor) -> Tuple[Tensor, Tensor]:
    """Coefficients [B, L, 6] of ``log(opacity) - sigma`` as a quadratic in block-local pixel coordinates.

    ``gauss`` [B, L, 6] holds ``(x, y, conic_a, conic_b, conic_c, opacity)``; padding slots get a
    hugely negative constant. Also returns the block-local means [B, L, 2].
    """
    means = gauss[..., :2] - centers
    mx, my = means.unbind(-1)
    a, b, c, o = gauss[..., 2:].unbind(-1)
    ax, ay = a * mx + b * my, b * mx + c * my  # conic @ mean
    const = torch.log(o.clamp(min=1e-30)) - 0.5 * (ax * mx + ay * my)
    const = torch.where(slot_ok, const, torch.full_like(const, -1e4))
    return torch.stack([const, ax, ay, -0.5 * a, -b, -0.5 * c], -1), means


class _Transmittance:
    """Carries per-pixel log transmittance across depth chunks and applies gsplat's early stop.

    gsplat stops a pixel at the first Gaussian that would bring T to <= 1e-4 (that one excluded).
    ``log_t_all`` ignores the stop (it tells where it happens), ``log_t`` is what is composited.
    """

    def __init__(self, inside: Tensor):
        self.inside = inside
        self.log_t = torch.zeros(inside.shape, device=inside.device)
        self.log_t_all = self.log_t
        self.stopped = False

    def step(self, neg_exponent: Tensor) -> Tuple[Tensor, Tensor]:
        """Alphas and the transmittance in front of each Gaussian, both [B, P, L] (input is consumed)."""
        raw = neg_exponent.clamp_(min=-SIGMA_MAX).exp_()  # opacity * exp(-sigma)
        alpha = F.threshold_(raw, _ALPHA_THRESHOLD, 0.0).clamp_(max=ALPHA_MAX)
        log1m = torch.log1p(-alpha)
        cum = torch.cumsum(log1m, dim=-1)
        log_t_all = self.log_t_all + cum[..., -1]
        if self.stopped or not bool((log_t_all > LOG_T_MIN).all()):
            stop = (cum + self.log_t_all[..., None]) <= LOG_T_MIN
            alpha.masked_fill_(stop, 0.0)
            log1m.masked_fill_(stop, 0.0)
            cum = torch.cumsum(log1m, dim=-1)
            self.stopped = True
        log_t = self.log_t + cum[..., -1]
        trans = cum.sub_(log1m).add_(self.log_t[..., None]).exp_()
        self.log_t, self.log_t_all = log_t, log_t_all if self.stopped else log_t
        return alpha, trans

    def done(self) -> bool:
        return not bool((self.inside & (self.log_t_all > LOG_T_MIN)).any())


def _gaussian_table(means2d: Tensor, conics: Tensor, opacities: Tensor, colors: Tensor) -> Tensor:
    """Rows ``(x, y, conic_a, conic_b, conic_c, opacity, colour...)`` [M, 6 + D], gathered per chunk."""
    D = colors.shape[-1]
    parts = [means2d.reshape(-1, 2), conics.reshape(-1, 3), opacities.reshape(-1, 1), colors.reshape(-1, D)]
    return torch.cat(parts, dim=-1)


def _gather(table: Tensor, gid: Tensor) -> Tensor:
    return table.index_select(0, gid.flatten()).view(*gid.shape, table.shape[-1])


class _CompositeBlocks(torch.autograd.Function):
    """Front-to-back compositing over block lists; outputs are block-major [C * nb, P, D] / [C * nb, P, 1]."""

    @staticmethod
    def forward(
        ctx,
        means2d: Tensor,  # [C, N, 2] or [nnz, 2]
        conics: Tensor,  # [C, N, 3] or [nnz, 3]
        colors: Tensor,  # [C, N, D] or [nnz, D]
        opacities: Tensor,  # [C, N] or [nnz]
        plan: _Plan,
        absgrad: bool,
    ) -> Tuple[Tensor, Tensor]:
        table = _gaussian_table(means2d, conics, opacities, colors)
        D, P = colors.shape[-1], plan.block**2
        render = table.new_zeros(plan.counts.numel(), P, D)
        log_trans = table.new_zeros(plan.counts.numel(), P)
        for blocks, n_max in plan.batches:
            centers, inside = plan.geometry(blocks)
            state = _Transmittance(inside)
            acc = table.new_zeros(len(blocks), P, D)
            for gid, slot_ok in plan.chunks(blocks, n_max):
                rows = _gather(table, gid)
                coeffs, _ = _neg_exponent_coeffs(rows[..., :6], slot_ok, centers)
                alpha, trans = state.step(torch.matmul(plan.quad, coeffs.transpose(1, 2)))
                acc.baddbmm_(trans.mul_(alpha), rows[..., 6:])
                if state.done():
                    break
            render[blocks] = acc
            log_trans[blocks] = state.log_t
        trans_final = torch.exp(log_trans)
        ctx.plan, ctx.absgrad = plan, absgrad
        ctx.save_for_backward(means2d, conics, colors, opacities, render, trans_final)
        return render, (1.0 - trans_final)[..., None]

    @staticmethod
    def backward(ctx, v_render: Tensor, v_alpha_out: Tensor):
        means2d, conics, colors, opacities, render, trans_final = ctx.saved_tensors
        plan: _Plan = ctx.plan
        table = _gaussian_table(means2d, conics, opacities, colors)
        D = colors.shape[-1]
        geometry = any(ctx.needs_input_grad[i] for i in (0, 1, 3))
        absgrad = ctx.absgrad and geometry
        # gradient rows: (colour..., [x, y, conic_a, conic_b, conic_c, opacity, [|x|, |y|]])
        v_table = table.new_zeros(table.shape[0], D + 6 * geometry + 2 * absgrad)
        v_render = v_render.contiguous()
        # per pixel: sum_j w_j <v, c_j> and dL/dalpha_out * T_final
        v_total = (v_render * render).sum(-1)
        v_t_final = v_alpha_out[..., 0] * trans_final
        for blocks, n_max in plan.batches:
            v_pix = v_render[blocks]  # [B, P, D]
            shift = (v_t_final[blocks] - v_total[blocks])[..., None]
            centers, inside = plan.geometry(blocks)
            state = _Transmittance(inside)
            prefix = table.new_zeros(len(blocks), plan.block**2, 1)
            for gid, slot_ok in plan.chunks(blocks, n_max):
                rows = _gather(table, gid)
                coeffs, means = _neg_exponent_coeffs(rows[..., :6], slot_ok, centers)
                alpha, trans = state.step(torch.matmul(plan.quad, coeffs.transpose(1, 2)))
                weight = alpha * trans
                v_rows = [torch.bmm(weight.transpose(1, 2), v_pix)]  # dL/dcolour [B, L, D]
                if geometry:
                    vc = torch.bmm(v_pix, rows[..., 6:].transpose(1, 2))  # <v, c_j> [B, P, L]
                    cum = torch.cumsum(weight.mul_(vc), dim=-1).add_(prefix)  # sum_{k<=j} w_k <v, c_k>
                    prefix = cum[..., -1:].clone()
                    # dL/dalpha_j = T_j <v, c_j> - (sum_{k>j} w_k <v, c_k> - dL/dalpha_out T_final) / (1 - alpha_j)
                    v_alpha = cum.add_(shift).div_(1.0 - alpha).addcmul_(trans, vc)
                    # dL/dsigma_j = -opacity exp(-sigma_j) dL/dalpha_j where alpha is neither skipped nor clamped
                    v_sigma = v_alpha.mul_(alpha.masked_fill_(alpha >= ALPHA_MAX, 0.0)).neg_()
                    v_rows += _sigma_to_gaussian_grads(v_sigma, rows[..., :6], means, plan, absgrad)
                v_table.index_add_(0, gid.flatten(), torch.cat(v_rows, -1).flatten(0, 1))
                if state.done():
                    break
        if absgrad:
            means2d.absgrad = v_table[:, -2:].reshape(means2d.shape)
        return (
            v_table[:, D : D + 2].reshape(means2d.shape) if geometry else None,
            v_table[:, D + 2 : D + 5].reshape(conics.shape) if geometry else None,
            v_table[:, :D].reshape(colors.shape),
            v_table[:, D + 5].reshape(opacities.shape) if geometry else None,
            None,
            None,
        )


def _sigma_to_gaussian_grads(v_sigma: Tensor, gauss: Tensor, means: Tensor, plan: _Plan, absgrad: bool) -> List[Tensor]:
    """Per-Gaussian gradients [B, L, 6] (and ``absgrad`` terms [B, L, 2]) from dL/dsigma [B, P, L].

    ``sigma`` is a quadratic in block-local pixel coordinates, so the sums over pixels reduce to the
    moments of dL/dsigma against ``(1, x, y, x^2, xy, y^2)``.
    """
    m0, mx_, my_, mxx, mxy, myy = torch.matmul(plan.quad.T, v_sigma).unbind(1)
    x, y = means.unbind(-1)
    a, b, c, o = gauss[..., 2:6].unbind(-1)
    ax, ay = a * x + b * y, b * x + c * y
    # gsplat: d sigma / d mean = conic @ (mean - pixel), d sigma / d conic = (dx^2 / 2, dx dy, dy^2 / 2)
    grads = [
        torch.stack(
            [
                ax * m0 - a * mx_ - b * my_,
                ay * m0 - b * mx_ - c * my_,
                0.5 * (x * x * m0 + mxx) - x * mx_,
                x * y * m0 - y * mx_ - x * my_ + mxy,
                0.5 * (y * y * m0 + myy) - y * my_,
                -m0 / o,  # alpha = opacity * exp(-sigma)
            ],
            dim=-1,
        )
    ]
    if absgrad:
        # per-pixel |dL/dmean2d| = |dL/dsigma * conic @ (mean - pixel)|, summed over pixels
        abs_x = torch.matmul(plan.lin, torch.stack([ax, -a, -b], 1)).mul_(v_sigma).abs_().sum(1)
        abs_y = torch.matmul(plan.lin, torch.stack([ay, -b, -c], 1)).mul_(v_sigma).abs_().sum(1)
        grads.append(torch.stack([abs_x, abs_y], -1))
    return grads


def _blocks_to_image(x: Tensor, plan: _Plan) -> Tensor:
    """[C * nb, P, D] block-major values to [C, H, W, D] images."""
    bs, by, bx = plan.block, plan.blocks_y, plan.blocks_x
    x = x.reshape(-1, by, bx, bs, bs, x.shape[-1]).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, by * bs, bx * bs, x.shape[-1])[:, : plan.height, : plan.width]


def rasterize_torch(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: Optional[int] = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Optional[Tensor] = None,
    render_mode: Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"] = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Optional[Tensor] = None,
) -> Tuple[Tensor, Tensor, Dict]:
    """Rasterise 3D Gaussians to C images; same arguments and outputs as gsplat 1.4.0's ``rasterization``.

    Returns ``render_colors`` [C, H, W, X] (X = D, 1 or D + 1 depending on ``render_mode``),
    ``render_alphas`` [C, H, W, 1] and ``info`` with gsplat's ``camera_ids``, ``gaussian_ids``
    (None unless ``packed``), ``radii``, ``means2d``, ``depths``, ``conics``, ``opacities`` ([C, N, ...]
    or [nnz, ...]), ``tile_width``, ``tile_height``, ``tiles_per_gauss``, ``width``, ``height``,
    ``tile_size`` and ``n_cameras`` (gsplat's intersection buffers are not produced).
    ``info["means2d"]`` is in the autograd graph, so ``retain_grad()`` gives d loss / d means2d; with
    ``absgrad`` it also gets ``.absgrad`` (sum over pixels of absolute per-pixel gradients) after
    backward. Only float32 pinhole cameras are supported; all channels are composited in one pass
    (``channel_chunk`` is ignored) and gradients are always dense (``sparse_grad`` is ignored).
    """
    if distributed:
        raise NotImplementedError("distributed rasterisation needs gsplat on CUDA")
    if camera_model != "pinhole":
        raise NotImplementedError(f"camera_model={camera_model!r}: only 'pinhole' is implemented")
    if render_mode not in ("RGB", "D", "ED", "RGB+D", "RGB+ED"):
        raise ValueError(f"unknown render_mode {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"unknown rasterize_mode {rasterize_mode!r}")
    N, C = means.shape[0], viewmats.shape[0]
    device = means.device
    assert means.shape == (N, 3), means.shape
    assert opacities.shape == (N,), opacities.shape
    assert viewmats.shape == (C, 4, 4) and Ks.shape == (C, 3, 3), (viewmats.shape, Ks.shape)
    if covars is None:
        assert quats.shape == (N, 4) and scales.shape == (N, 3), (quats.shape, scales.shape)
    if sh_degree is None:
        assert colors.shape[:-1] in ((N,), (C, N)), colors.shape
    else:
        assert colors.shape[-1] == 3 and colors.shape[:-2] in ((N,), (C, N)), colors.shape

    proj = project_gaussians(
        means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
        far_plane=far_plane, radius_clip=radius_clip, calc_compensations=rasterize_mode == "antialiased",
        covars=covars,
    )  # fmt: skip
    radii, means2d, depths, conics = proj.radii, proj.means2d, proj.depths, proj.conics
    opacities = opacities.expand(C, N)
    if proj.compensations is not None:
        opacities = opacities * proj.compensations

    if sh_degree is not None:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
        dirs = means[None] - campos[:, None]  # [C, N, 3]
        shs = colors if colors.dim() == 4 else colors[None]
        colors = torch.clamp_min(spherical_harmonics(sh_degree, dirs, shs, masks=radii > 0) + 0.5, 0.0)
    else:
        colors = colors.expand(C, N, colors.shape[-1])

    if packed:
        camera_ids, gaussian_ids = torch.nonzero(radii > 0, as_tuple=True)
        radii = radii[camera_ids, gaussian_ids]
        means2d = means2d[camera_ids, gaussian_ids]
        depths = depths[camera_ids, gaussian_ids]
        conics = conics[camera_ids, gaussian_ids]
        opacities = opacities[camera_ids, gaussian_ids]
        colors = colors[camera_ids, gaussian_ids]
        flat_cams = camera_ids
    else:
        camera_ids, gaussian_ids = None, None
        flat_cams = torch.arange(C, device=device).repeat_interleave(N)
    info = {
        "camera_ids": camera_ids,
        "gaussian_ids": gaussian_ids,
        "radii": radii,
        "means2d": means2d,
        "depths": depths,
        "conics": conics,
        "opacities": opacities,
    }

    if render_mode in ("RGB+D", "RGB+ED"):
        colors = torch.cat([colors, depths[..., None]], dim=-1)
        if backgrounds is not None:
            backgrounds = torch.cat([backgrounds, backgrounds.new_zeros(C, 1)], dim=-1)
    elif render_mode in ("D", "ED"):
        colors = depths[..., None]
        if backgrounds is not None:
            backgrounds = backgrounds.new_zeros(C, 1)

    block = BLOCK_SIZE if tile_size % BLOCK_SIZE == 0 else tile_size
    flatten_ids, block_counts, tiles_per_gauss = bin_gaussians(
        means2d.reshape(-1, 2), radii.reshape(-1), depths.reshape(-1), conics.reshape(-1, 3),
        opacities.reshape(-1), flat_cams, C, tile_size, block, width, height,
    )  # fmt: skip
    info.update(
        {
            "tile_width": math.ceil(width / tile_size),
            "tile_height": math.ceil(height / tile_size),
            "tiles_per_gauss": tiles_per_gauss.reshape(radii.shape),
            "width": width,
            "height": height,
            "tile_size": tile_size,
            "n_cameras": C,
        }
    )

    plan = _make_plan(flatten_ids, block_counts, width, height, block)
    render, alphas = _CompositeBlocks.apply(means2d, conics, colors, opacities, plan, absgrad)
    render_colors = _blocks_to_image(render, plan)
    render_alphas = _blocks_to_image(alphas, plan)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    if render_mode in ("ED", "RGB+ED"):
        render_colors = torch.cat(
            [render_colors[..., :-1], render_colors[..., -1:] / render_alphas.clamp(min=1e-10)], dim=-1
        )
    return render_colors, render_alphas, info
