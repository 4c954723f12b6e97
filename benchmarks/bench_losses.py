"""Time of the sync-free instance losses on one blocky segment map, forward (and backward where they have one):

    python benchmarks/bench_losses.py --size 160 --segments 30 --device cpu

Eq. 4 (cluster contrastive, fixed segment slots) and Eq. 5's boundary triplet mining of UniC-Lift, Contrastive
Lift's partition with its Eq. 4 and Eq. 5, and L_CC of Contrastive Gaussian Clustering. Prints one Markdown row per
loss for docs/BENCHMARKS.md (median ms over --repetitions calls after one warm-up).
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch
import tyro

from unic_lift_ns.baselines.contrastive_lift_losses import (
    concentration_loss,
    partition_pixels,
    slow_fast_contrastive_loss,
)
from unic_lift_ns.baselines.gaussian_clustering_losses import contrastive_clustering_loss
from unic_lift_ns.data.label_maps import number_segments
from unic_lift_ns.losses import boundary_triplets, cluster_contrastive_loss


@dataclass
class BenchLosses:
    """Time the instance losses on a size x size map of square segments."""

    size: int = 160
    """Map side in pixels (the CPU recipe trains at 160)."""
    segments: int = 30
    """Segment ids drawn for the 10 x 10 blocks of the map."""
    dim: int = 12
    """Embedding dimension d."""
    device: str = "cpu"
    """cpu or cuda."""
    repetitions: int = 30
    """Timed calls per loss."""

    def main(self) -> None:
        gen = torch.Generator().manual_seed(0)
        blocks = torch.randint(0, self.segments, (10, 10), generator=gen)
        side = -(-self.size // 10)
        raw = blocks.repeat_interleave(side, 0).repeat_interleave(side, 1)[: self.size, : self.size]
        segment_map, count = number_segments(raw.to(self.device))
        flat = segment_map.flatten()
        emb = torch.rand(flat.numel(), self.dim, generator=gen).to(self.device).requires_grad_()

        def cluster() -> None:
            cluster_contrastive_loss(torch.sigmoid(emb), flat, "mean", None, count).backward()

        def mining() -> None:
            boundary_triplets(segment_map, 3000, gen, num_segments=count)

        def contrastive_lift() -> None:
            fast, slow = partition_pixels(flat, 2048, gen)
            args = (emb[fast], flat[fast], emb[slow], flat[slow])
            (slow_fast_contrastive_loss(*args) + concentration_loss(*args)).backward()

        def clustering() -> None:
            contrastive_clustering_loss(emb, flat, num_segments=count).backward()

        print(f"{self.size}x{self.size} px, {count} segments, {self.device}, median of {self.repetitions} calls")
        print("| loss | ms |\n|---|---|")
        for name, run in (("unic-lift Eq. 4 (+ backward)", cluster), ("unic-lift Eq. 5 boundary mining", mining),
                          ("contrastive-lift partition, Eq. 4 + Eq. 5 (+ backward)", contrastive_lift),
                          ("gaussian-clustering L_CC (+ backward)", clustering)):  # fmt: skip
            print(f"| {name} | {self.time(run):.1f} |")

    def time(self, run: Callable[[], None]) -> float:
        """Median milliseconds of ``run`` (the first call is a warm-up)."""
        run()
        times = []
        for _ in range(self.repetitions):
            if self.device == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            run()
            if self.device == "cuda":
                torch.cuda.synchronize()
            times.append(1000 * (time.perf_counter() - start))
        return statistics.median(times)


if __name__ == "__main__":
    tyro.cli(BenchLosses).main()
