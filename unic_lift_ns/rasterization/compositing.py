"""Compositing stage (gsplat's ``rasterize_to_pixels``): front-to-back alpha blending (3DGS eq. 3) on any device.

Pixels are processed in ``block`` x ``block`` blocks, batches of blocks at once, walking each block's
depth-sorted intersection list (:mod:`.intersection`) in chunks. Alphas, the 1/255 skip, the 0.999
clamp and the early stop at transmittance 1e-4 follow gsplat 1.4.0's kernel. The backward pass is
analytic and recomputes each batch, so memory stays bounded by one batch, and ``means2d`` receives
per-pixel gradients (and ``absgrad``) like gsplat. Channels past ``geometry_channels`` are composited with the
same weights but their gradients stop at the colours: the backward pass leaves them out of every geometry gradient,
as if the geometry had been detached for them, without a second projection, sort or compositing pass.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterator, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
LOG_T_MIN = math.log(1e-4)
# Exponents are clamped here (alpha < 1/255 long before) to keep denormals, slow on CPUs, away.
SIGMA_MAX = 20.0
# Work per step: pixels x Gaussians of one [B, P, L] chunk (sized to stay in the CPU caches).
MAX_BATCH_ELEMS = 1 << 18
# Gaussians per block evaluated per step; a batch stops once all its pixels are opaque.
CHUNK_GAUSSIANS = 64
# Largest float32 below 1/255, so that thresholding keeps alpha >= 1/255 like gsplat.
_ALPHA_THRESHOLD = float(torch.nextafter(torch.tensor(ALPHA_MIN), torch.tensor(0.0)))


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
    """Front-to-back compositing over block lists, inputs as in :func:`rasterize_to_pixels`.

    Outputs are block-major: colours [C * nb, P, D] and alphas [C * nb, P, 1]. Only the first ``geometry_channels``
    colour channels contribute to the gradients of ``means2d``, ``conics`` and ``opacities``.
    """

    @staticmethod
    def forward(
        ctx, means2d: Tensor, conics: Tensor, colors: Tensor, opacities: Tensor, plan: _Plan, absgrad: bool,
        geometry_channels: int,
    ) -> Tuple[Tensor, Tensor]:  # fmt: skip
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
        ctx.plan, ctx.absgrad, ctx.geometry_channels = plan, absgrad, geometry_channels
        ctx.save_for_backward(means2d, conics, colors, opacities, render, trans_final)
        return render, (1.0 - trans_final)[..., None]

    @staticmethod
    def backward(ctx, v_render: Tensor, v_alpha_out: Tensor):
        means2d, conics, colors, opacities, render, trans_final = ctx.saved_tensors
        plan: _Plan = ctx.plan
        table = _gaussian_table(means2d, conics, opacities, colors)
        D, G = colors.shape[-1], ctx.geometry_channels
        geometry = any(ctx.needs_input_grad[i] for i in (0, 1, 3))
        absgrad = ctx.absgrad and geometry
        # gradient rows: (colour..., [x, y, conic_a, conic_b, conic_c, opacity, [|x|, |y|]])
        v_table = table.new_zeros(table.shape[0], D + 6 * geometry + 2 * absgrad)
        v_render = v_render.contiguous()
        # per pixel: sum_j w_j <v, c_j> (geometry channels only) and dL/dalpha_out * T_final
        v_total = (v_render[..., :G] * render[..., :G]).sum(-1)
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
                    vc = torch.bmm(v_pix[..., :G], rows[..., 6 : 6 + G].transpose(1, 2))  # <v, c_j> [B, P, L]
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


def rasterize_to_pixels(
    means2d: Tensor,  # [C, N, 2] or [nnz, 2]
    conics: Tensor,  # [C, N, 3] or [nnz, 3]
    colors: Tensor,  # [C, N, D] or [nnz, D]
    opacities: Tensor,  # [C, N] or [nnz]
    width: int,
    height: int,
    block: int,
    flatten_ids: Tensor,  # [I]
    block_counts: Tensor,  # [C * n_blocks]
    backgrounds: Optional[Tensor] = None,  # [C, D]
    absgrad: bool = False,
    geometry_channels: Optional[int] = None,
) -> Tuple[Tensor, Tensor]:
    """Composite the block lists of :func:`.intersection.isect_tiles` into ``render_colors`` [C, H, W, D]
    and ``render_alphas`` [C, H, W, 1]; ``backgrounds`` fill the remaining transmittance. Only the first
    ``geometry_channels`` channels (default: all) send gradients to the geometry."""
    plan = _make_plan(flatten_ids, block_counts, width, height, block)
    G = colors.shape[-1] if geometry_channels is None else geometry_channels
    render, alphas = _CompositeBlocks.apply(means2d, conics, colors, opacities, plan, absgrad, G)
    render_colors, render_alphas = _blocks_to_image(render, plan), _blocks_to_image(alphas, plan)
    if backgrounds is not None:
        render_colors = render_colors + backgrounds[:, None, None, :] * (1.0 - render_alphas)
    return render_colors, render_alphas
