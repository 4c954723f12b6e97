"""Cost of segmentation on top of 3DGS: RGB-only against full UniC-Lift training steps, timed interleaved in one
process on the same Gaussians and views, on CPU or CUDA; and a scale run of the 3D-loss path (Eq. 6).

    python benchmarks/bench_step.py steps --load-config outputs/demo/unic-lift-cpu/RUN/config.yml
    python benchmarks/bench_step.py steps --data assets/demo --method unic-lift --train-steps 300 --device cuda
    python benchmarks/bench_step.py scale --sizes 300000 1000000 3000000

A step is forward, losses and backward (no optimiser step, so every variant sees the same Gaussians). Variants:
``rgb only`` (``--pipeline.model.segmentation False``: plain Splatfacto), ``+ cluster, semantic`` (the segmentation
render with Eq. 4 and the semantic loss), ``+ triplet`` (Eq. 5) and ``full`` (Eq. 6 too). The last line reads
``segmentation overhead: X.XXx (rgb N ms, full M ms, DEVICE)``.
"""

from __future__ import annotations

import atexit
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Tuple, Union

import torch
import tyro
from typing_extensions import Annotated

from neighbour_scale import scale_run  # noqa: E402  (benchmarks/ is the script's folder)

VARIANTS: Dict[str, Dict[str, Union[bool, float]]] = {
    "rgb only": dict(segmentation=False),
    "+ cluster, semantic": dict(triplet_loss_weight=0.0, neighbour_loss_weight=0.0),
    "+ triplet": dict(neighbour_loss_weight=0.0),
    "full": {},
}
"""Model config overrides of each timed variant, on top of the run's own weights."""


@dataclass
class Steps:
    """Time RGB-only and UniC-Lift training steps on one scene."""

    load_config: Optional[Path] = None
    """config.yml of a trained run (its Gaussians are timed); else --data with --method."""
    data: Optional[Path] = None
    """Scene folder to start from its point cloud (with --method)."""
    method: str = "unic-lift-cpu"
    """Registered method whose config is used with --data (unic-lift: the paper's 30k-step settings)."""
    train_steps: int = 0
    """With --data: train this many steps first with the real nerfstudio trainer (densification included)."""
    device: str = "cpu"
    """cpu or cuda."""
    repetitions: int = 21
    """Timed steps per variant (the first round of every variant is a warm-up, not timed)."""

    def main(self) -> None:
        pipeline = self.pipeline()
        model = pipeline.model
        model.train()
        model.optimizers = {}
        cfg = model.config
        # every loss on: past the triplet and 3D-loss starts
        triplet_start = cfg.stop_split_at if cfg.triplet_start is None else cfg.triplet_start
        model.step = max(triplet_start, cfg.neighbour_loss_start)
        base = {name: getattr(cfg, name) for overrides in VARIANTS.values() for name in overrides}
        views = [pipeline.datamanager.next_train(0) for _ in range(min(self.repetitions, 8))]
        times: Dict[str, List[float]] = {name: [] for name in VARIANTS}
        peaks: Dict[str, int] = {name: 0 for name in VARIANTS}
        for rep in range(self.repetitions + 1):  # interleaved: drift hits every variant alike
            for name, overrides in VARIANTS.items():
                for key, value in {**base, **overrides}.items():
                    setattr(cfg, key, value)
                seconds, peak = self.time_step(model, *views[rep % len(views)])
                if rep > 0:
                    times[name].append(seconds)
                    peaks[name] = max(peaks[name], peak)
        print(f"{model.num_points} Gaussians, {views[0][0].width.item()}x{views[0][0].height.item()} px, "
              f"{self.device}, median of {self.repetitions} steps")  # fmt: skip
        print("| variant | step (ms) | x rgb only | peak memory (MiB) |\n|---|---|---|---|")
        medians = {name: 1000 * statistics.median(values) for name, values in times.items()}
        for name, ms in medians.items():
            memory = f"{peaks[name] / 2**20:.0f}" if self.device == "cuda" else "-"
            print(f"| {name} | {ms:.1f} | {ms / medians['rgb only']:.2f} | {memory} |")
        rgb, full = medians["rgb only"], medians["full"]
        print(f"segmentation overhead: {full / rgb:.2f}x (rgb {rgb:.0f} ms, full {full:.0f} ms, {self.device_name()})")

    def pipeline(self):
        """The run's pipeline, or a fresh (optionally trained) one of --method on --data."""
        if self.load_config is not None:
            from unic_lift_ns.runs import load_run

            pipeline = load_run(self.load_config, test_mode="val").pipeline
            return pipeline.to(self.device)
        if self.data is None:
            raise SystemExit("bench_step.py steps: pass --load-config RUN/config.yml or --data SCENE")
        from nerfstudio.configs.method_configs import all_methods

        config = all_methods[self.method]
        config.pipeline.datamanager.data = self.data
        config.vis = "tensorboard"
        config.output_dir = Path(tempfile.mkdtemp(prefix="bench_step_"))
        atexit.register(shutil.rmtree, config.output_dir, ignore_errors=True)  # a throwaway run: gone at exit
        config.machine.device_type = self.device
        config.max_num_iterations = max(self.train_steps, 1)  # the trainer refuses 0; it trains only if asked
        config.steps_per_save = config.steps_per_eval_image = config.steps_per_eval_all_images = 10**9
        config.steps_per_eval_batch = 10**9
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
        if self.train_steps > 0:
            trainer.train()
        return trainer.pipeline

    def time_step(self, model, camera, batch) -> Tuple[float, int]:
        """Seconds of forward + losses + backward, and the peak CUDA memory (0 on CPU)."""
        model.zero_grad(set_to_none=True)
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        outputs = model.get_outputs(camera.to(self.device))
        losses = model.get_loss_dict(outputs, batch, model.get_metrics_dict(outputs, batch))
        sum(losses.values()).backward()
        if self.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        return seconds, torch.cuda.max_memory_allocated() if self.device == "cuda" else 0

    def device_name(self) -> str:
        if self.device == "cuda":
            return torch.cuda.get_device_name()
        return f"CPU, {torch.get_num_threads()} threads"


@dataclass
class Scale:
    """Neighbour rebuild and Eq. 6 step at growing Gaussian counts."""

    sizes: Tuple[int, ...] = (300_000, 1_000_000, 3_000_000)
    """Gaussian counts."""
    device: str = "cpu"
    """cpu or cuda."""

    def main(self) -> None:
        scale_run(self.sizes, self.device)


Commands = Union[
    Annotated[Steps, tyro.conf.subcommand(name="steps")],
    Annotated[Scale, tyro.conf.subcommand(name="scale")],
]

if __name__ == "__main__":
    tyro.cli(Commands).main()  # type: ignore[arg-type]
