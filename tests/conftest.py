"""Shared fixtures: tiny generated scenes (seconds to make on a 2-core CPU)."""

from __future__ import annotations

import functools
import runpy
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import yaml

from unic_lift_ns.synth.generate import SynthConfig, generate_scene


def setup_model(config, num_points: int = 300, seed: int = 0, metadata=None):
    """A model of ``config`` (a SegmentationSplatModelConfig subclass) on random seed points in [-0.3, 0.3]^3."""
    import torch
    from nerfstudio.data.scene_box import SceneBox

    torch.manual_seed(seed)
    points = torch.rand(num_points, 3) * 0.6 - 0.3
    colors = torch.randint(0, 256, (num_points, 3))
    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    return config.setup(scene_box=box, num_train_data=4, seed_points=(points, colors), metadata=metadata or {})


def make_scene(path: Path, **overrides) -> Path:
    options = dict(num_objects=6, num_views=16, resolution=48, seed=0)
    options.update(overrides)
    return generate_scene(SynthConfig(output=path, **options))


def ns_train(*args: str) -> int:
    """Run the real ``ns-train ARGS`` in this process: nerfstudio's ``scripts.train.entrypoint``, the function the
    console script calls, with ``sys.argv`` set; returns its exit status.

    A process of its own would import nerfstudio again (about 20 s on the 2-core CI machine, most of it nerfstudio
    building its external-method table) for a training of a few seconds; on the tests' scenes the weights and optimiser
    state come out bit-identical to a separate process's. Signals and peak memory need a process: those tests spawn one.
    Afterwards the event writers and profilers that nerfstudio's trainer registers in module globals are closed and
    dropped (a process exit would), so the event files are complete and the next run writes only its own."""
    from nerfstudio.scripts.train import entrypoint
    from nerfstudio.utils import profiler, writer

    argv = sys.argv
    sys.argv = ["ns-train", *args]
    try:
        return exit_status(entrypoint)
    finally:
        sys.argv = argv
        for event_writer in writer.EVENT_WRITERS:
            if isinstance(event_writer, writer.TensorboardWriter):
                event_writer.tb_writer.close()
        writer.EVENT_WRITERS.clear()
        profiler.PROFILER.clear()


def train_cpu(method: str, scene: Path, output_dir: Path, steps: int, *flags: str) -> Path:
    """Run the real ``ns-train METHOD`` (in this process, ``ns_train``) on CPU (tensorboard, no periodic eval or
    save) with extra ``flags``; asserts it succeeded and returns the run directory (``output_dir/tiny/METHOD/run``)."""
    args = [
        method, "--data", str(scene), "--machine.device-type", "cpu",
        "--max-num-iterations", str(steps), "--vis", "tensorboard", "--output-dir", str(output_dir),
        "--experiment-name", "tiny", "--timestamp", "run", "--viewer.quit-on-train-completion", "True",
        "--steps-per-eval-image", "100000", "--steps-per-eval-all-images", "100000", "--steps-per-save", "100000",
        *flags,
    ]  # fmt: skip
    assert ns_train(*args) == 0, f"ns-train {' '.join(args)} failed (its output is in the captured stdout)"
    return output_dir / "tiny" / method / "run"


@pytest.fixture(scope="session")
def tiny_scene(tmp_path_factory) -> Path:
    """6 objects, 16 views of 48x48, realistic segmenter noise."""
    return make_scene(tmp_path_factory.mktemp("scenes") / "tiny")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory) -> Path:
    """A real `ns-train unic-lift` run on CPU (tiny scene, 150 steps); returns the run directory (config.yml).

    Pixels decode with 'gaussian-votes', so every pixel label is a label of Gaussians (hiding them removes it)."""
    root = tmp_path_factory.mktemp("trained")
    scene = make_scene(root / "scene", num_objects=6, num_views=16, resolution=48, num_points=2000)
    return train_cpu(
        "unic-lift", scene, root / "outputs", 150,
        "--pipeline.model.resolution-schedule", "30", "--pipeline.model.warmup-length", "30",
        "--pipeline.model.stop-split-at", "80", "--pipeline.model.neighbour-loss-start", "80",
        "--optimizers.embeddings.optimizer.lr", "0.02", "--pipeline.model.instance-decoding", "gaussian-votes",
    )  # fmt: skip


def copy_of_run_scene(trained_run: Path, tmp_path: Path) -> tuple[Path, Path]:
    """A per-test copy of the trained run's scene and a config.yml whose dataparser reads that copy; the
    checkpoint is still read from the (untouched) fixture run."""
    config = yaml.load((trained_run / "config.yml").read_text(), Loader=yaml.Loader)
    scene = Path(shutil.copytree(config.pipeline.datamanager.data, tmp_path / "scene"))
    config.data = config.pipeline.datamanager.data = config.pipeline.datamanager.dataparser.data = scene
    config_path = tmp_path / "config.yml"
    config_path.write_text(yaml.dump(config))
    return scene, config_path


def exit_status(run: Callable[[], object]) -> int:
    """What a process whose main is ``run`` would exit with: 0, or the code of the ``SystemExit`` it raised (a
    message as its code goes to stderr with status 1, as the interpreter does)."""
    try:
        run()
        return 0
    except SystemExit as stop:
        if stop.code is None or isinstance(stop.code, int):
            return stop.code or 0
        print(stop.code, file=sys.stderr)
        return 1


@pytest.fixture
def in_process(monkeypatch, capfd) -> Callable[..., tuple[subprocess.CompletedProcess, str]]:
    """Run a command in this process as its console script or ``python SCRIPT`` would: ``run(program, *args)``
    where ``program`` is an entry point function or a script's path. Returns the outcome as a process would report
    it and its stdout with rich's line wrapping undone. Each of our commands imports nerfstudio and torch, 10-20 s
    as a process on the 2-core CI machine; a few tests keep a real process where the process is the point."""

    def run(program: Callable[[], object] | Path, *args: object) -> tuple[subprocess.CompletedProcess, str]:
        name = program.name if isinstance(program, Path) else program.__module__
        monkeypatch.setattr(sys, "argv", [name, *map(str, args)])
        capfd.readouterr()
        if isinstance(program, Path):
            monkeypatch.syspath_prepend(str(program.parent))  # as `python SCRIPT` puts the script's folder first
            code = exit_status(lambda: runpy.run_path(str(program), run_name="__main__"))
        else:
            code = exit_status(program)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err), " ".join(out.split())

    return run


@pytest.fixture
def unic_lift_eval(in_process) -> Callable[..., tuple[subprocess.CompletedProcess, str]]:
    """``unic-lift-eval ARGS`` in this process (``test_console_script_scores_baselines`` runs it as a process)."""
    from unic_lift_ns.scripts.eval import entrypoint

    return functools.partial(in_process, entrypoint)
