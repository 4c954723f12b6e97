"""The trainer a user's first runs go through: Ctrl-C keeps the work, a resumed run trains (exactly as the
uninterrupted run would), a run without semantic masks still decodes instances, and bad input stops `ns-train`
before the first step with one line naming the file or flag."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_scene, ns_train
from unic_lift_ns.data.label_maps import read_label_map, write_label_map
from unic_lift_ns.method_configs import unic_lift_trainer_config
from unic_lift_ns.trainer import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TERMINATED

BIN = Path(sys.executable).parent
RESUMED_STEPS = 30
CPU_METHOD = "unic-lift-cpu"


def readme_cpu_recipe(steps: int) -> List[str]:
    """The README's CPU recipe, `ns-train unic-lift-cpu`, stopped after ``steps`` steps (its schedule unchanged)."""
    return [CPU_METHOD, "--max-num-iterations", str(steps)]


def run_flags(scene: Path, output_dir: Path, name: str) -> List[str]:
    return ["--data", str(scene), "--output-dir", str(output_dir), "--experiment-name", name, "--timestamp", "run",
            "--vis", "tensorboard", "--viewer.quit-on-train-completion", "True"]  # fmt: skip


def checkpoints(run_dir: Path) -> Dict[int, Path]:
    return {int(p.stem[5:]): p for p in (run_dir / "nerfstudio_models").glob("step-*.ckpt")}


@pytest.fixture(scope="module")
def no_semantics_scene(tmp_path_factory) -> Path:
    """A generated scene without semantic_masks/ (instance masks only, as a user's own data often is)."""
    scene = make_scene(tmp_path_factory.mktemp("nosem") / "scene", num_points=2000)
    shutil.rmtree(scene / "semantic_masks")
    return scene


def stopped_run(scene: Path, output_dir: Path, name: str, signum: int, seconds: float) -> dict:
    """The README's CPU recipe (`ns-train unic-lift-cpu`) on ``scene``, sent ``signum`` ``seconds`` into training."""
    log = output_dir / "log.txt"
    cmd = [str(BIN / "ns-train"), *readme_cpu_recipe(100000), *run_flags(scene, output_dir, name)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 300
        while "Training from step 0" not in log.read_text() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(seconds)
        proc.send_signal(signum)
        returncode = proc.wait(timeout=120)
    return {"returncode": returncode, "log": log.read_text(), "run_dir": output_dir / name / CPU_METHOD / "run",
            "output_dir": output_dir}  # fmt: skip


@pytest.fixture(scope="module")
def interrupted_run(no_semantics_scene: Path, tmp_path_factory) -> dict:
    """The README's CPU recipe, stopped by SIGINT a few seconds into training."""
    return stopped_run(no_semantics_scene, tmp_path_factory.mktemp("interrupted"), "a", signal.SIGINT, 4.0)


@pytest.mark.slow
def test_ctrl_c_saves_the_last_completed_step_and_exits_non_zero(interrupted_run: dict) -> None:
    assert interrupted_run["returncode"] == EXIT_INTERRUPTED, interrupted_run["log"][-3000:]
    saved = checkpoints(interrupted_run["run_dir"])
    assert len(saved) == 1, saved
    step = next(iter(saved))
    assert 0 < step < 100000
    assert torch.load(saved[step], map_location="cpu")["step"] == step
    assert f"Interrupted: saved step {step}" in " ".join(interrupted_run["log"].split())


@pytest.fixture(scope="module")
def terminated_run(tiny_scene: Path, tmp_path_factory) -> dict:
    """The README's CPU recipe on the tiny scene, sent SIGTERM (what `timeout`, `docker stop` and SLURM send) two
    seconds into training."""
    return stopped_run(tiny_scene, tmp_path_factory.mktemp("terminated"), "t", signal.SIGTERM, 2.0)


@pytest.mark.slow
def test_sigterm_saves_the_last_completed_step_like_ctrl_c(terminated_run: dict) -> None:
    assert terminated_run["returncode"] == EXIT_TERMINATED, terminated_run["log"][-3000:]
    saved = checkpoints(terminated_run["run_dir"])
    assert len(saved) == 1, saved
    step = next(iter(saved))
    assert torch.load(saved[step], map_location="cpu")["step"] == step
    assert f"Interrupted: saved step {step}" in " ".join(terminated_run["log"].split())


@pytest.mark.slow
def test_a_run_folder_with_checkpoints_loses_nothing(terminated_run: dict, tiny_scene: Path, capfd) -> None:
    """A second `ns-train` into the same run folder is refused before config.yml is replaced; resuming in place
    with --load-dir keeps the checkpoint it resumed and a user's own .ckpt, and removes only its own older saves."""
    run_dir, output_dir = terminated_run["run_dir"], terminated_run["output_dir"]
    (step, loaded), = checkpoints(run_dir).items()
    mine = run_dir / "nerfstudio_models" / "mine.ckpt"
    shutil.copy(loaded, mine)
    before = {path: path.read_bytes() for path in (run_dir / "config.yml", loaded, mine)}

    again = [*readme_cpu_recipe(4), *run_flags(tiny_scene, output_dir, "t")]
    capfd.readouterr()
    assert ns_train(*again) == EXIT_BAD_INPUT
    out = capfd.readouterr().out
    lines = [line for line in out.splitlines() if line.startswith(f"ns-train {CPU_METHOD}: ")]
    assert len(lines) == 1 and "already holds checkpoints" in lines[0] and "--load-dir" in lines[0], out
    assert all(path.read_bytes() == data for path, data in before.items())

    assert ns_train(*again, "--load-dir", str(run_dir / "nerfstudio_models"), "--steps-per-save", "2") == 0
    assert sorted(checkpoints(run_dir)) == [step, step + 4]  # step + 2 was saved, then replaced by step + 4
    assert mine.read_bytes() == before[mine] and loaded.read_bytes() == before[loaded]


@pytest.mark.slow
def test_resume_continues_exactly_like_the_uninterrupted_run(interrupted_run: dict, no_semantics_scene: Path) -> None:
    """Resume the interrupted run for RESUMED_STEPS steps and compare with one uninterrupted run of the same length.

    Optimiser state, learning-rate schedules, the view order, every random generator and gsplat's densification
    statistics are restored, so the runs agree to float round-off (1e-5). The recipe's 3D loss (Eq. 6) starts at
    step 500, after both runs end: its neighbour pairs are recomputed from the current means on resume, so with it
    on a resumed run is close to, not equal to, the uninterrupted one."""
    step = next(iter(checkpoints(interrupted_run["run_dir"])))
    output_dir = interrupted_run["output_dir"]
    load_dir = interrupted_run["run_dir"] / "nerfstudio_models"
    for name, steps, extra in (("resumed", RESUMED_STEPS, ["--load-dir", str(load_dir)]),
                               ("straight", step + 1 + RESUMED_STEPS, [])):  # fmt: skip
        assert ns_train(*readme_cpu_recipe(steps), *run_flags(no_semantics_scene, output_dir, name), *extra) == 0
    final = step + RESUMED_STEPS
    before = torch.load(checkpoints(interrupted_run["run_dir"])[step], map_location="cpu")
    resumed = torch.load(checkpoints(output_dir / "resumed" / CPU_METHOD / "run")[final], map_location="cpu")
    straight = torch.load(checkpoints(output_dir / "straight" / CPU_METHOD / "run")[final], map_location="cpu")

    names = [k for k, v in straight["pipeline"].items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    assert {"_model.gauss_params.embeddings", "_model.gauss_params.means", "_model.triplet_projection.weight"} <= set(names)
    for name in names:
        torch.testing.assert_close(resumed["pipeline"][name], straight["pipeline"][name], rtol=1e-5, atol=1e-5)
    for name in ("embeddings", "means", "features_dc", "opacities"):
        key = f"_model.gauss_params.{name}"
        moved = resumed["pipeline"][key].shape != before["pipeline"][key].shape or not torch.equal(
            resumed["pipeline"][key], before["pipeline"][key]
        )
        assert moved, f"{name} did not change after resuming"
    for group, state in straight["optimizers"].items():
        steps = [float(s["step"]) for s in resumed["optimizers"][group]["state"].values()]
        assert steps == [float(s["step"]) for s in state["state"].values()], group


@pytest.mark.slow
def test_run_without_semantic_masks_decodes_instances_with_the_readme_recipe(
    interrupted_run: dict, unic_lift_eval, tmp_path
) -> None:
    """The recipe decodes with nearest-code under the confidence gate, which needs no semantics (with an untrained
    semantic head as the gate every Gaussian counted as background and every pixel decoded to one label). A run this
    short has no confident code yet, so every Gaussian votes, the log says so, and pixels snap to the codes the
    Gaussians hold instead of all reading the background label."""
    out = tmp_path / "eval.json"
    proc, stdout = unic_lift_eval("--load-config", interrupted_run["run_dir"] / "config.yml", "--output-json", out,
                                  "--no-baselines")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "of the Gaussians have codes confident to 0.2 (training too short?), so every Gaussian votes" in stdout
    (result,) = json.loads(out.read_text())["results"].values()
    assert result["num_pred_instances"] > 5, result
    assert result["miou"] is None  # the untrained head's "all background" is not reported as semantics


# ------------------------------------------------------------------------------------------------ bad input


@pytest.fixture
def scene(tiny_scene: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny scene that a test may break."""
    return Path(shutil.copytree(tiny_scene, tmp_path / "scene"))


def trainer_config(scene: Path, tmp_path: Path):
    """The registered unic-lift trainer configuration on ``scene``, on the CPU, writing under ``tmp_path``."""
    config = unic_lift_trainer_config()
    config.pipeline.datamanager.data = scene
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = tmp_path / "outputs"
    return config


def test_every_optimiser_is_bound_to_the_loaded_parameters(scene: Path, tmp_path: Path) -> None:
    """Loading a checkpoint replaces the per-Gaussian tensors; every group (Gaussians with embeddings and semantic
    logits, the linear layer W, the camera optimiser) must then be optimised in the tensors the model uses."""
    config = trainer_config(scene, tmp_path)
    config.pipeline.model.camera_optimizer.mode = "SO3xR3"
    trainer = config.setup(local_rank=0, world_size=1)
    # the first two steps of Trainer.setup; the rest (viewer, writers) is not needed here
    trainer.pipeline = config.pipeline.setup(device="cpu", test_mode="val", world_size=1, local_rank=0,
                                             grad_scaler=trainer.grad_scaler)  # fmt: skip
    trainer.optimizers = trainer.setup_optimizers()
    trainer.pipeline.load_pipeline(trainer.pipeline.state_dict(), step=0)

    def bound() -> Dict[str, bool]:
        return {
            name: all(a is b for a, b in zip(trainer.optimizers.optimizers[name].param_groups[0]["params"], params))
            for name, params in trainer.pipeline.get_param_groups().items()
        }

    assert {"embeddings", "semantic_logits", "means", "triplet_projection", "camera_opt"} <= set(bound())
    assert not bound()["embeddings"]  # what nerfstudio leaves after loading
    trainer.bind_optimizers()
    assert all(bound().values()), bound()


def setup_fails(scene: Path, tmp_path: Path, capsys: pytest.CaptureFixture, **model_fields) -> str:
    """Set up the real unic-lift trainer (data, model, checkpoint) on ``scene``; assert it exits with code 2 and
    return the one line it printed."""
    config = trainer_config(scene, tmp_path)
    for key, value in model_fields.items():
        target = config if key == "load_checkpoint" else config.pipeline.model
        setattr(target, key, value)
    trainer = config.setup(local_rank=0, world_size=1)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        trainer.setup()
    assert exit_info.value.code == EXIT_BAD_INPUT
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("ns-train unic-lift: ")]
    assert len(lines) == 1, lines
    return lines[0]


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def test_truncated_image_is_named(scene: Path, tmp_path: Path, capsys) -> None:
    truncate(scene / "images" / "frame_00003.png")
    line = setup_fails(scene, tmp_path, capsys)
    assert f"Cannot read image {scene / 'images' / 'frame_00003.png'}" in line


def test_truncated_mask_is_named(scene: Path, tmp_path: Path, capsys) -> None:
    truncate(scene / "instance_masks" / "frame_00005.png")
    line = setup_fails(scene, tmp_path, capsys)
    assert f"Cannot read label map {scene / 'instance_masks' / 'frame_00005.png'}" in line


def test_image_of_the_wrong_size_is_blamed_not_its_mask(scene: Path, tmp_path: Path, capsys) -> None:
    image = scene / "images" / "frame_00004.png"
    Image.open(image).resize((40, 40)).save(image)
    line = setup_fails(scene, tmp_path, capsys)
    assert f"Image {image} is 40x40 pixels but its camera says 48x48" in line


def test_semantic_class_outside_the_head_is_found_when_data_loads(scene: Path, tmp_path: Path, capsys) -> None:
    path = scene / "semantic_masks" / "frame_00006.png"
    labels = read_label_map(path)
    labels[:4, :4] = 2
    write_label_map(path, labels, bit_depth=8)
    line = setup_fails(scene, tmp_path, capsys)
    assert f"{path} has semantic class 2, but the semantic head has 2 classes" in line
    assert "--pipeline.model.num-semantic-classes" in line


def test_all_zero_instance_masks_are_an_error(scene: Path, tmp_path: Path, capsys) -> None:
    for path in (scene / "instance_masks").iterdir():
        write_label_map(path, np.zeros_like(read_label_map(path)))
    line = setup_fails(scene, tmp_path, capsys)
    assert "is all 0, which means 'ignore'" in line and str(scene / "instance_masks") in line


def test_embedding_dim_beyond_what_labels_can_hold_is_refused(scene: Path, tmp_path: Path, capsys) -> None:
    line = setup_fails(scene, tmp_path, capsys, embedding_dim=30)
    assert "--pipeline.model.embedding-dim must be in [1, 24], got 30" in line


def test_empty_checkpoint_is_named(scene: Path, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "step-000000100.ckpt"
    empty.touch()
    line = setup_fails(scene, tmp_path, capsys, load_checkpoint=empty)
    assert f"--load-checkpoint: checkpoint {empty} is empty (0 bytes" in line


@pytest.mark.parametrize(
    "damage, expected",
    [
        ("truncated", "JSONDecodeError"),
        ("no fl_x", "fx not specified in frame"),
        ("no frames", "KeyError: 'frames'"),
        ("no transform_matrix", "KeyError: 'transform_matrix'"),
        ("no transforms.json", "No such file or directory"),
    ],
)
def test_malformed_transforms_json_is_one_line_naming_data(
    damage: str, expected: str, scene: Path, tmp_path: Path, capsys
) -> None:
    path = scene / "transforms.json"
    transforms = json.loads(path.read_text())
    if damage == "truncated":
        truncate(path)
    elif damage == "no transforms.json":
        path.unlink()
    else:
        if damage == "no fl_x":
            transforms.pop("fl_x", None)
            for frame in transforms["frames"]:
                frame.pop("fl_x", None)
        elif damage == "no frames":
            del transforms["frames"]
        else:
            del transforms["frames"][2]["transform_matrix"]
        path.write_text(json.dumps(transforms))
    line = setup_fails(scene, tmp_path, capsys)
    assert f"--data {scene}: NerfstudioDataParser cannot read it" in line and expected in line


def test_output_dir_that_is_a_file_is_one_line(scene: Path, tmp_path: Path, capsys) -> None:
    config = trainer_config(scene, tmp_path)
    config.output_dir = tmp_path / "a_file"
    config.output_dir.write_text("mine")
    with pytest.raises(SystemExit) as exit_info:
        config.save_config()
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert "ns-train unic-lift: --output-dir: cannot write the run folder" in capsys.readouterr().out
    assert config.output_dir.read_text() == "mine"


def test_missing_data_is_one_line_before_config_yml_is_written(tmp_path: Path, capsys) -> None:
    config = trainer_config(tmp_path / "no_scene", tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        config.save_config()
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert f"ns-train unic-lift: --data: no such file or folder {tmp_path / 'no_scene'}" in capsys.readouterr().out
    assert not (tmp_path / "outputs").exists()


def test_unreadable_data_removes_the_config_yml_and_folders_the_run_created(tmp_path: Path, monkeypatch, capsys) -> None:
    """No --data (so the data is the working folder, which holds no transforms.json): config.yml is written to
    outputs/unnamed/... before the data loads; the failed run removes it and the folders it created, and keeps the
    output folder that was already there and what is in it."""
    work = tmp_path / "work"
    (work / "outputs").mkdir(parents=True)
    (work / "outputs" / "mine.txt").write_text("mine")
    monkeypatch.chdir(work)
    config = trainer_config(Path(), tmp_path)
    config.pipeline.datamanager.data, config.output_dir, config.timestamp = None, Path("outputs"), "run"
    config.save_config()
    assert (work / "outputs" / "unnamed" / "unic-lift" / "run" / "config.yml").is_file()
    trainer = config.setup(local_rank=0, world_size=1)
    with pytest.raises(SystemExit) as exit_info:
        trainer.setup()
    assert exit_info.value.code == EXIT_BAD_INPUT
    assert "--data . (no --data given?): NerfstudioDataParser cannot read it" in capsys.readouterr().out
    assert sorted(path.name for path in (work / "outputs").iterdir()) == ["mine.txt"]
    assert (work / "outputs" / "mine.txt").read_text() == "mine"


def test_resuming_with_another_embedding_dim_is_one_line(scene: Path, tmp_path: Path, capsys) -> None:
    config = trainer_config(scene, tmp_path)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.save_checkpoint(0)
    line = setup_fails(scene, tmp_path, capsys, load_checkpoint=trainer.checkpoint_dir / "step-000000000.ckpt",
                       embedding_dim=8)  # fmt: skip
    assert "--load-checkpoint: cannot load the checkpoint of" in line
    assert "size mismatch for gauss_params.embeddings" in line and "embedding-dim" in line


def test_ns_train_reports_bad_input_in_one_line_with_exit_code_2(scene: Path, tmp_path: Path) -> None:
    """The real console script: no traceback, exit code 2."""
    truncate(scene / "instance_masks" / "frame_00005.png")
    cmd = [str(BIN / "ns-train"), "unic-lift", *run_flags(scene, tmp_path, "bad"), "--machine.device-type", "cpu"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == EXIT_BAD_INPUT, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert f"ns-train unic-lift: Cannot read label map {scene / 'instance_masks' / 'frame_00005.png'}" in proc.stdout
    assert not (tmp_path / "bad").exists()  # the run folder it created, with its config.yml, is gone again
