"""unic-lift-masks end to end with the weight-free backend: masks in the datamanager's format, into a real
ns-train run; resume, --overwrite and bad inputs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

import pytest
import torch
from PIL import Image

from unic_lift_ns.data.label_maps import read_label_map
from unic_lift_ns.errors import InputError
from unic_lift_ns.masks.mask_writer import RECORD, MasksConfig
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

from conftest import make_scene, train_cpu

EXE = Path(sys.executable).parent / "unic-lift-masks"


@pytest.fixture
def capture(tmp_path) -> Path:
    """A generated scene as a user brings it: images, poses and a point cloud, no masks."""
    scene = make_scene(tmp_path / "scene", num_objects=6, num_views=12, resolution=48, num_points=1500)
    for folder in ("instance_masks", "semantic_masks", "gt"):
        shutil.rmtree(scene / folder, ignore_errors=True)
    return scene


@pytest.fixture
def masks(in_process) -> Callable[..., subprocess.CompletedProcess]:
    """``unic-lift-masks --data SCENE FLAGS`` in this process (``test_bad_input_is_one_red_line`` runs the console
    script as a process)."""
    from unic_lift_ns.scripts.masks import entrypoint

    return lambda scene, *flags: in_process(entrypoint, "--data", scene, *flags)[0]


def test_classical_masks_train_with_unic_lift(capture: Path, tmp_path: Path, masks) -> None:
    proc = masks(capture, "--model", "classical", "--classical.superpixels", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    images = sorted((capture / "images").iterdir())
    written = sorted((capture / "instance_masks").glob("*.png"))
    assert [p.stem for p in written] == [p.stem for p in images]
    labels = read_label_map(written[0])
    assert labels.shape == (48, 48) and labels.max() >= 2 and labels.max() < 2**12
    with Image.open(written[0]) as image:
        assert image.mode.startswith("I;16")  # 16-bit
    assert not (capture / "semantic_masks").exists()  # superpixels know no classes
    record = json.loads((capture / "instance_masks" / RECORD).read_text())
    assert record["model"] == "classical" and record["options"]["classical"]["superpixels"] == 60
    assert len(record["views"]) == 12 and record["views"][images[0].stem]["segments"] == labels.max()
    assert "ns-train unic-lift --data" in proc.stdout
    run = train_cpu("unic-lift", capture, tmp_path / "outputs", 20)
    assert (run / "config.yml").is_file()


def test_resume_skips_written_views_and_overwrite_replaces_only_own_files(capture: Path, masks) -> None:
    flags = ("--model", "classical", "--classical.superpixels", "40", "--downscale", "2")
    assert masks(capture, *flags).returncode == 0
    folder = capture / "instance_masks"
    assert read_label_map(folder / "frame_00000.png").shape == (24, 24)  # --downscale 2
    # An interrupted run: two views never written.
    record = json.loads((folder / RECORD).read_text())
    for stem in ("frame_00003", "frame_00007"):
        (folder / f"{stem}.png").unlink()
        del record["views"][stem]
    (folder / RECORD).write_text(json.dumps(record))
    before = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    proc = masks(capture, *flags)
    assert proc.returncode == 0 and "skipped 10 already written" in proc.stdout, proc.stdout
    after = {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")}
    assert {n for n in after if after[n] != before.get(n)} == {"frame_00003.png", "frame_00007.png"}
    # Other options without --overwrite: refused, nothing touched.
    proc = masks(capture, "--model", "classical", "--classical.superpixels", "80", "--downscale", "2")
    assert proc.returncode == 2 and "--overwrite" in proc.stdout and "classical" in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in folder.glob("*.png")} == after
    # A mask the user made: never overwritten, even with --overwrite.
    user_mask = folder / "frame_00003.png"
    (folder / RECORD).write_text(json.dumps({**record, "views": {}}))
    content = user_mask.read_bytes()
    proc = masks(capture, *flags, "--overwrite")
    assert proc.returncode == 2 and "did not write" in proc.stdout and "frame_00003.png" in proc.stdout
    assert user_mask.read_bytes() == content and len(proc.stdout.strip().splitlines()) == 1


def test_overwrite_with_other_options_rewrites_every_view(capture: Path, masks) -> None:
    assert masks(capture, "--model", "classical", "--classical.superpixels", "40").returncode == 0
    proc = masks(capture, "--model", "classical", "--classical.superpixels", "80", "--overwrite")
    assert proc.returncode == 0 and "masks of 12 view(s)" in proc.stdout, proc.stdout
    record = json.loads((capture / "instance_masks" / RECORD).read_text())
    assert record["options"]["classical"]["superpixels"] == 80 and len(record["views"]) == 12


def test_images_folder_without_transforms(capture: Path, masks) -> None:
    """Any folder of images: masks go beside it, where the datamanager looks."""
    (capture / "transforms.json").unlink()
    proc = masks(capture / "images", "--model", "classical")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert len(list((capture / "instance_masks").glob("*.png"))) == 12


def test_bad_input_is_one_red_line(capture: Path) -> None:
    (capture / "images" / "frame_00002.png").write_bytes(b"not a png")
    proc = subprocess.run([str(EXE), "--data", str(capture), "--model", "classical"], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == 2 and "frame_00002.png" in proc.stdout, proc.stdout + proc.stderr
    assert len(proc.stdout.strip().splitlines()) == 1 and "Traceback" not in proc.stderr
    assert not (capture / "instance_masks").exists()  # found before any work


@pytest.mark.parametrize(
    "setup, options, expected",
    [
        (lambda scene: shutil.rmtree(scene / "images") or (scene / "transforms.json").unlink(), {}, "no images found"),
        (lambda scene: (scene / "images" / "frame_00004.png").unlink(), {}, "do not exist: "),
        (lambda scene: None, {"model": "nobody/no-such-segmenter"}, "--model nobody/no-such-segmenter is neither"),
        (lambda scene: None, {"downscale": 0}, "--downscale"),
        (lambda scene: None, {"embedding_dim": 17}, "--embedding-dim"),
    ],
    ids=["no-images", "listed-missing", "unknown-model", "bad-downscale", "bad-embedding-dim"],
)
def test_bad_input_is_named_before_any_work(capture: Path, tmp_path: Path, monkeypatch, setup, options, expected):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    setup(capture)
    with pytest.raises(InputError, match=re.escape(expected)):
        MasksConfig(data=capture, **{"model": "classical", **options}).main()
    assert not (capture / "instance_masks").exists()


def test_not_a_segmenter_folder_is_named(capture: Path, tmp_path: Path) -> None:
    folder = tmp_path / "bert"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(InputError, match=rf"--model {re.escape(str(folder))} is a 'bert' model, not a segmenter"):
        MasksConfig(data=capture, model=str(folder)).main()


def test_training_warns_when_it_starts_from_random_points(capsys) -> None:
    from nerfstudio.data.scene_box import SceneBox

    box = SceneBox(aabb=torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]))
    UniCLiftModelConfig(num_random=200).setup(scene_box=box, num_train_data=2, seed_points=None, metadata={})
    out = capsys.readouterr().out
    assert "No point cloud" in out and "ns-process-data" in out
    UniCLiftModelConfig(num_random=200, random_init=True).setup(scene_box=box, num_train_data=2, metadata={})
    assert "No point cloud" not in capsys.readouterr().out
    points = (torch.rand(50, 3), torch.randint(0, 255, (50, 3)))
    UniCLiftModelConfig().setup(scene_box=box, num_train_data=2, seed_points=points, metadata={})
    assert "No point cloud" not in capsys.readouterr().out


def test_help_lists_the_backends_and_which_need_weights() -> None:
    proc = subprocess.run([str(EXE), "--help"], capture_output=True, text=True, env={**os.environ, "COLUMNS": "200"}, timeout=120)
    text = " ".join(proc.stdout.split())
    assert proc.returncode == 0
    for backend in ("Mask2Former", "OneFormer", "Segment Anything", "'classical'", "LOW QUALITY", "Needing weights"):
        assert backend in text, backend
