"""Time the pure-PyTorch rasteriser (forward and forward+backward) on random in-view scenes.

Usage: ``python benchmarks/bench_rasterizer_cpu.py [--repeats 3] [--threads 2]``
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Dict, List

import torch

from unic_lift_ns.rasterization import rasterize_torch


def random_scene(n: int, size: int, seed: int = 0) -> Dict[str, torch.Tensor]:
    """``n`` Gaussians inside the frustum of a ``size`` x ``size`` pinhole camera with a 90 deg FOV.

    The 3D scene does not depend on ``size``: scales are log-normal around 0.04 at depths 2-6,
    i.e. a screen-space standard deviation of about 1.3 px at 256 px (0.6 px at 128 px).
    """
    g = torch.Generator().manual_seed(seed)
    depth = 2.0 + 4.0 * torch.rand(n, generator=g)
    xy = (torch.rand(n, 2, generator=g) * 2 - 1) * depth[:, None] * 0.9
    means = torch.cat([xy, depth[:, None]], dim=-1)
    scales = torch.exp(math.log(0.04) + 0.5 * torch.randn(n, 3, generator=g))
    return {
        "means": means,
        "quats": torch.randn(n, 4, generator=g),
        "scales": scales,
        "opacities": torch.sigmoid(torch.randn(n, generator=g)),
        "sh": torch.randn(n, 16, 3, generator=g) * 0.2,
        "features": torch.rand(n, 15, generator=g),
        "viewmats": torch.eye(4)[None],
        "Ks": torch.tensor([[size / 2, 0.0, size / 2], [0.0, size / 2, size / 2], [0.0, 0.0, 1.0]])[None],
    }


def time_case(scene: Dict[str, torch.Tensor], size: int, mode: str, repeats: int) -> List[float]:
    """Median milliseconds of (no-grad forward, forward + backward) and gsplat's tile intersection count."""
    params = {k: scene[k].clone().requires_grad_(True) for k in ("means", "quats", "scales", "opacities")}
    colors = (scene["sh"] if mode == "sh3" else scene["features"]).clone().requires_grad_(True)
    kwargs = dict(packed=False, absgrad=True, sh_degree=3 if mode == "sh3" else None)

    def render():
        return rasterize_torch(
            params["means"], params["quats"], params["scales"], params["opacities"], colors,
            scene["viewmats"], scene["Ks"], size, size, **kwargs,
        )  # fmt: skip

    fwd, both = [], []
    for i in range(repeats + 1):
        t0 = time.perf_counter()
        with torch.no_grad():
            _, _, info = render()
        t1 = time.perf_counter()
        rgb, alpha, info = render()
        info["means2d"].retain_grad()
        (rgb.square().mean() + alpha.mean()).backward()
        t2 = time.perf_counter()
        if i > 0:  # first round is warm-up
            fwd.append(t1 - t0)
            both.append(t2 - t1)
    return [1000 * statistics.median(fwd), 1000 * statistics.median(both), float(info["tiles_per_gauss"].sum())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, absgrad on, median of {args.repeats}")
    print(f"{'image':>9} {'N':>7} {'colours':>10} {'tile isects':>11} {'fwd ms':>9} {'fwd+bwd ms':>11}")
    for size in (128, 256):
        for n in (10_000, 50_000):
            scene = random_scene(n, size)
            for mode, label in (("sh3", "SH deg 3"), ("feat15", "15 feats")):
                fwd, both, n_isects = time_case(scene, size, mode, args.repeats)
                print(f"{size:>4}x{size:<4} {n:>7} {label:>10} {int(n_isects):>11} {fwd:>9.1f} {both:>11.1f}")


if __name__ == "__main__":
    main()
