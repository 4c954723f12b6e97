"""`ns-train unic-lift-cpu`, the one CPU recipe: `make demo` trains with it exactly as it did with `unic-lift` and
the Makefile's former DEMO_FLAGS, and its schedule scales with the step count as the paper's does."""

from __future__ import annotations

import dataclasses
import shlex
from pathlib import Path
from typing import Dict, List

import tyro
from nerfstudio.configs.method_configs import AnnotatedBaseConfigUnion

from unic_lift_ns.cpu_recipe import CPU_SCHEDULE, MAX_STEPS, PAPER_SCHEDULE
from unic_lift_ns.method_configs import unic_lift_cpu_trainer_config

ROOT = Path(__file__).resolve().parents[1]

FORMER_DEMO_FLAGS = shlex.split(
    "--machine.device-type cpu --max-num-iterations 1000 "
    "--pipeline.model.resolution-schedule 200 --pipeline.model.warmup-length 100 "
    "--pipeline.model.stop-split-at 500 --pipeline.model.neighbour-loss-start 500 "
    "--pipeline.model.sh-degree-interval 200 --pipeline.model.densify-grad-thresh 0.003 "
    "--optimizers.embeddings.optimizer.lr 0.01 --optimizers.triplet-projection.optimizer.lr 0.001 "
    "--pipeline.model.instance-decoding nearest-code "
    "--steps-per-eval-image 100000 --steps-per-eval-all-images 100000 --steps-per-save 100000"
)
"""The Makefile's DEMO_FLAGS before `unic-lift-cpu` (the recipe of the demo runs in docs/BENCHMARKS.md), with the
decoding it shows since #13 (nearest-code instead of gaussian-votes; decoding does not change training)."""
OUTPUT_FLAGS = {
    "--data", "--output-dir", "--experiment-name", "--timestamp", "--vis", "--viewer.quit-on-train-completion"
}  # fmt: skip
"""Flags that choose the data and where and how a run is written or shown, not how it trains."""


def make_demo() -> Dict[str, List[str]]:
    """Program -> arguments of each command of `make demo` (continuation lines joined, $(DEMO_RUN) as 'run')."""
    text = (ROOT / "Makefile").read_text().replace("\\\n", " ").replace("$(DEMO_RUN)", "run")
    recipe = text.split("\ndemo:", 1)[1].split("\n\n", 1)[0].splitlines()[1:]
    commands = [shlex.split(line.strip().removeprefix("$(VENV)/bin/")) for line in recipe]
    return {command[0]: command[1:] for command in commands}


def parse(args: List[str]):
    """The config `ns-train ARGS` trains with (nerfstudio's tyro parser, no training)."""
    return tyro.cli(AnnotatedBaseConfigUnion, args=args)


def test_make_demo_trains_unic_lift_cpu_as_the_former_demo_flags_did():
    demo = make_demo()
    method, *args = demo["ns-train"]
    assert method == "unic-lift-cpu"
    assert set(args[::2]) <= OUTPUT_FLAGS, args
    cpu, former = parse(demo["ns-train"]), parse(["unic-lift", *args, *FORMER_DEMO_FLAGS])
    # The method name differs (nerfstudio registers a method under it); it names the run folder, which the demo's
    # evaluation follows. Every other field is the same.
    assert (cpu.method_name, former.method_name) == ("unic-lift-cpu", "unic-lift")
    assert demo["unic-lift-eval"][:2] == ["--load-config", str(cpu.get_base_dir() / "config.yml")]
    assert {**dataclasses.asdict(cpu), "method_name": "unic-lift"} == dataclasses.asdict(former)


def test_schedules_scale_with_the_step_count():
    assert PAPER_SCHEDULE.at(MAX_STEPS) == {"warmup_length": 500, "resolution_schedule": 3000, "stop_split_at": 15000,
                                            "sh_degree_interval": 1000, "neighbour_loss_start": 15000}  # fmt: skip
    model = unic_lift_cpu_trainer_config(300).pipeline.model
    assert {name: getattr(model, name) for name in CPU_SCHEDULE.at(300)} == {
        "warmup_length": 30, "resolution_schedule": 60, "stop_split_at": 150, "sh_degree_interval": 60,
        "neighbour_loss_start": 150,
    }  # fmt: skip
    assert min(CPU_SCHEDULE.at(3).values()) == 1  # an SH interval of 0 would divide by zero
    # --max-num-iterations alone stops the registered run elsewhere, its schedule stays that of 1000 steps
    model = parse(["unic-lift-cpu", "--max-num-iterations", "100000"]).pipeline.model
    assert (model.stop_split_at, model.neighbour_loss_start) == (500, 500)
