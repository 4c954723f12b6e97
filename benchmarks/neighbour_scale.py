"""Eq. 6 at scale: the neighbour rebuild and one 3D-loss step (UniC-Lift Eq. 6) at growing Gaussian counts.

    python benchmarks/neighbour_scale.py --sizes 300000 1000000 3000000 --device cpu

For each size, Gaussian centres are drawn uniformly on surfaces, as a trained splat's centres concentrate on
surfaces: the unit cube's six faces (a room's walls) and 64 spheres of radius 0.03 to 0.15 inside it (objects).
``tau`` (a squared distance, as in Eq. 6) is chosen so that a disc of radius sqrt(tau) on a surface holds 16
centres on average: at surface density N / A, pi tau N / A = 16, so the ``max_neighbours = 16`` cap binds for about
half the Gaussians and the bound for the rest. (The paper's tau = 1e-2 in a unit-size scene holds far more than 16
centres at 1M Gaussians: the cap binds everywhere and the query is a plain 16-nearest-neighbour search.)

Timed per size: ``neighbour_pairs`` (the KD-tree rebuild, what training runs when refinement replaces the
Gaussians) and one Eq. 6 forward + backward on [N, 12] embeddings, with the model's default per-step sample of pairs
(median of 5 after a warm-up) and with all pairs (once). Peak memory is what each phase adds to what was in use
when it started. On CPU: the peak resident set size (Linux ``VmHWM``, reset through ``/proc/self/clear_refs`` before
each phase) minus the resident size at its start; a lower bound, since memory glibc kept from an earlier phase's
frees and hands out again does not raise the resident size (the default sample's step, a few MiB, may read 0). On
CUDA: ``torch.cuda.max_memory_allocated`` minus the memory allocated at the start. The rebuild runs on the CPU and
is measured the CPU way on both.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Callable, Dict, List, Sequence, Tuple, TypeVar

import torch
from torch import Tensor

from unic_lift_ns.losses import neighbour_pairs, neighbourhood_loss

T = TypeVar("T")
NEIGHBOURS = 16
"""Average centres within sqrt(tau) on a surface, and the model's max_neighbours."""
EMBEDDING_DIM = 12
SAMPLED_REPEATS = 5
COLUMNS = ("gaussians", "tau", "pairs", "rebuild_s", "rebuild_peak_mib", "pairs_mib", "samples", "sampled_step_s",
           "sampled_peak_mib", "all_pairs_step_s", "all_pairs_peak_mib")  # fmt: skip


def surface_means(num: int, seed: int = 0) -> Tuple[Tensor, float]:
    """[num, 3] float32 centres uniform on the unit cube's faces and 64 spheres inside it, and the total area."""
    gen = torch.Generator().manual_seed(seed)
    centres = 0.2 + 0.6 * torch.rand(64, 3, generator=gen, dtype=torch.float64)
    radii = 0.03 + 0.12 * torch.rand(64, generator=gen, dtype=torch.float64)
    areas = torch.cat([torch.ones(6, dtype=torch.float64), 4 * math.pi * radii.square()])  # 6 faces, then spheres
    surface = torch.multinomial(areas / areas.sum(), num, replacement=True, generator=gen)
    on_face = surface < 6
    face = torch.rand(num, 3, generator=gen, dtype=torch.float64)
    face[torch.arange(num), surface % 3] = (surface // 3 % 2).double()  # face k: coordinate k % 3 at k // 3
    direction = torch.nn.functional.normalize(torch.randn(num, 3, generator=gen, dtype=torch.float64), dim=1)
    sphere = (surface - 6).clamp(min=0)
    on_sphere = centres[sphere] + radii[sphere, None] * direction
    return torch.where(on_face[:, None], face, on_sphere).float(), float(areas.sum())


def _peak_reset(device: str) -> int:
    """Start a peak-memory window; returns the bytes in use now."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        return torch.cuda.memory_allocated()
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # resets VmHWM to the current resident size
    return _status_kib("VmRSS") * 1024


def _peak_bytes(device: str, start: int) -> int:
    """Peak bytes above ``start`` since :func:`_peak_reset`."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        return torch.cuda.max_memory_allocated() - start
    return _status_kib("VmHWM") * 1024 - start


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field + ":"))


def _measured(fn: Callable[[], T], device: str) -> Tuple[T, float, int]:
    """``fn()``, its wall seconds and the peak memory it added (bytes), on ``device``'s clock and allocator."""
    start = _peak_reset(device)
    began = time.perf_counter()
    result = fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return result, time.perf_counter() - began, _peak_bytes(device, start)


def scale_run(sizes: Sequence[int], device: str) -> List[Dict[str, float]]:
    """Time the neighbour rebuild and Eq. 6 steps at each size (see the module docstring); prints a Markdown table
    row by row and returns the rows (keys: COLUMNS; seconds, MiB)."""
    from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

    samples = UniCLiftModelConfig().neighbour_pairs_per_step
    mib = 1 / 2**20
    print(f"Eq. 6 at scale on {_device_name(device)}; {NEIGHBOURS} neighbours, d = {EMBEDDING_DIM}")
    print("| " + " | ".join(COLUMNS) + " |\n" + "|---" * len(COLUMNS) + "|", flush=True)
    rows = []
    for size in sizes:
        means, area = surface_means(size)
        tau = NEIGHBOURS * area / (math.pi * size)
        means = means.to(device)
        pairs, rebuild_s, rebuild_peak = _measured(lambda: neighbour_pairs(means, tau, NEIGHBOURS), "cpu")
        embeddings = torch.nn.Parameter(torch.randn(size, EMBEDDING_DIM, device=device))
        generator = torch.Generator().manual_seed(0)

        def step(num_samples: int) -> None:
            embeddings.grad = None
            neighbourhood_loss(embeddings, pairs, num_samples, generator).backward()

        step(samples)  # warm-up
        sampled = [_measured(lambda: step(samples), device) for _ in range(SAMPLED_REPEATS)]
        _, all_pairs_s, all_pairs_peak = _measured(lambda: step(0), device)
        row = dict(
            gaussians=size, tau=tau, pairs=len(pairs), rebuild_s=rebuild_s, rebuild_peak_mib=rebuild_peak * mib,
            pairs_mib=pairs.numel() * pairs.element_size() * mib, samples=samples,
            sampled_step_s=statistics.median(s for _, s, _ in sampled),
            sampled_peak_mib=max(p for _, _, p in sampled) * mib, all_pairs_step_s=all_pairs_s,
            all_pairs_peak_mib=all_pairs_peak * mib,
        )  # fmt: skip
        rows.append(row)
        print("| " + " | ".join(_cell(row[name]) for name in COLUMNS) + " |", flush=True)
        del pairs, embeddings, means
    return rows


def _cell(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return f"{value:.3g}" if value < 1e-2 else f"{value:.3f}" if value < 10 else f"{value:.1f}"


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    return f"CPU, {torch.get_num_threads()} threads"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[300_000, 1_000_000, 3_000_000])
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    scale_run(args.sizes, args.device)


if __name__ == "__main__":
    main()
