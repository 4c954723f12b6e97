"""Shared fixtures: tiny generated scenes (seconds to make on a 2-core CPU)."""

from __future__ import annotations

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


def train_cpu(method: str, scene: Path, output_dir: Path, steps: int, *flags: str, timeout: int = 900) -> Path:
    """Run the real ``ns-train METHOD`` on CPU (tensorboard, no periodic eval or save) with extra ``flags``;
    asserts it succeeded and returns the run directory (``output_dir/tiny/METHOD/run``)."""
    cmd = [
        str(Path(sys.executable).parent / "ns-train"), method, "--data", str(scene), "--machine.device-type", "cpu",
        "--max-num-iterations", str(steps), "--vis", "tensorboard", "--output-dir", str(output_dir),
        "--experiment-name", "tiny", "--timestamp", "run", "--viewer.quit-on-train-completion", "True",
        "--steps-per-eval-image", "100000", "--steps-per-eval-all-images", "100000", "--steps-per-save", "100000",
        *flags,
    ]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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


@pytest.fixture
def unic_lift_eval(monkeypatch, capfd) -> Callable[..., tuple[subprocess.CompletedProcess, str]]:
    """Run the real console script's entry point in-process (``test_console_script_scores_baselines`` runs it as a
    process); returns the outcome as a process would report it and its stdout with rich's line wrapping undone."""
    from unic_lift_ns.scripts.eval import entrypoint

    def run(*args: object) -> tuple[subprocess.CompletedProcess, str]:
        monkeypatch.setattr(sys, "argv", ["unic-lift-eval", *map(str, args)])
        capfd.readouterr()
        try:
            entrypoint()
            code = 0
        except SystemExit as stop:
            code = int(stop.code or 0)
        out, err = capfd.readouterr()
        return subprocess.CompletedProcess(args, code, out, err), " ".join(out.split())

    return run
