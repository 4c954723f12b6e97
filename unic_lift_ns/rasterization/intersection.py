"""Tile intersection stage (gsplat's ``isect_tiles`` + ``isect_offset_encode``), refined to pixel blocks.

A Gaussian is listed for the tiles overlapping the ``radius`` square around its mean, exactly as in
gsplat; each tile is split into ``block`` x ``block`` pixel blocks and a block keeps the Gaussian only
where the ellipse ``opacity * exp(-sigma) >= 1/255`` may reach it, which drops work that cannot
contribute. Lists are sorted by (camera, block, depth), like gsplat's ``isect_ids``.
"""

from __future__ import annotations

import math
from typing import Tuple

import torch
from torch import Tensor


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
def isect_tiles(
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

    Returns gsplat's ``tiles_per_gauss`` [M], ``flatten_ids`` [I] (indices into the M projected
    Gaussians) and ``block_counts`` [n_cameras * n_blocks] (list lengths; the lists are stored
    consecutively, block-major in row-major block order per camera).
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
    return tiles_per_gauss, ids[order], block_counts
