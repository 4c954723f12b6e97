"""The scene generator: determinism, layout, and that the stock nerfstudio-data parser reads it."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import make_scene
from unic_lift_ns.scripts.synth import entrypoint
from unic_lift_ns.synth.generate import SynthConfig, generate_scene
from unic_lift_ns.synth.segmenter import PRESETS, simulate_segmenter


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_files(tmp_path):
    a = _files(make_scene(tmp_path / "a", num_views=6, seed=7))
    b = _files(make_scene(tmp_path / "b", num_views=6, seed=7))
    assert a.keys() == b.keys() and len(a) > 30
    assert [k for k in a if a[k] != b[k]] == []
    c = _files(make_scene(tmp_path / "c", num_views=6, seed=8))
    assert a["scene.json"] != c["scene.json"]


def test_layout_and_label_maps(tiny_scene):
    split = json.loads((tiny_scene / "split.json").read_text())
    stems = sorted(p.stem for p in (tiny_scene / "images").glob("*.png"))
    assert len(stems) == 16
    assert split["eval"] == [s for i, s in enumerate(stems) if i % 8 == 0]
    assert sorted(split["train"] + split["eval"]) == stems
    scene = json.loads((tiny_scene / "scene.json").read_text())
    assert scene["config"]["seed"] == 0 and len(scene["objects"]) == 6
    gt_ids, mask_ids = set(), []
    for stem in stems:
        gt = np.array(Image.open(tiny_scene / "gt/instances" / f"{stem}.png"))
        mask = np.array(Image.open(tiny_scene / "instance_masks" / f"{stem}.png"))
        sem = np.array(Image.open(tiny_scene / "semantic_masks" / f"{stem}.png"))
        gt_sem = np.array(Image.open(tiny_scene / "gt/semantics" / f"{stem}.png"))
        assert gt.dtype == np.uint16 and mask.dtype == np.uint16 and gt.shape == mask.shape == (48, 48)
        assert set(np.unique(sem)) <= {0, 1, 255} and np.array_equal(gt_sem, (gt > 0).astype(np.uint8))
        assert np.array_equal(sem == 255, mask == 0)
        gt_ids.update(np.unique(gt).tolist())
        mask_ids.append(set(np.unique(mask).tolist()) - {0})
    assert gt_ids <= set(range(7)) and len(gt_ids) >= 5
    # Per-view IDs are drawn independently: views share (almost) no IDs.
    shared = set.intersection(*mask_ids[:4])
    assert len(shared) == 0


def test_nerfstudio_dataparser_reads_scene(tiny_scene):
    from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig

    parser = NerfstudioDataParserConfig(data=tiny_scene, load_3D_points=True).setup()
    train = parser.get_dataparser_outputs("train")
    test = parser.get_dataparser_outputs("test")
    assert len(train.image_filenames) == 14 and len(test.image_filenames) == 2
    assert train.metadata["points3D_xyz"].shape[0] > 1000
    assert int(train.cameras.width[0]) == 48


def test_presets_get_noisier():
    gt = np.zeros((64, 64), dtype=np.uint16)
    for k in range(8):  # touching 8x8 blocks and a few tiny objects
        gt[8 + (k // 4) * 8 : 16 + (k // 4) * 8, 8 + (k % 4) * 8 : 16 + (k % 4) * 8] = k + 1
    for k in range(4):
        gt[40 + 6 * k, 40:42] = 9 + k
    changed = []
    for name in ("clean", "realistic", "hard"):
        diffs = []
        for seed in range(10):
            mask, _ = simulate_segmenter(gt, PRESETS[name], np.random.default_rng(seed))
            # Pixels whose segment membership disagrees with GT (up to renaming), via same/different pairs.
            a, b = gt.ravel()[::7], mask.ravel()[::7].astype(np.int64)
            diffs.append(np.mean((a[:, None] == a[None]) != (b[:, None] == b[None])))
        changed.append(np.mean(diffs))
    assert changed[0] == 0.0 < changed[1] < changed[2]


def test_cli_refuses_to_overwrite(tmp_path):
    out = make_scene(tmp_path / "scene", num_views=4, num_objects=2)
    before = _files(out)
    exe = Path(sys.executable).parent / "unic-lift-synth"
    proc = subprocess.run([str(exe), "--output", str(out), "--num-views", "4"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--overwrite" in proc.stdout and str(out) in proc.stdout
    assert proc.stdout.strip().count("\n") == 0  # one line, however long the path
    assert _files(out) == before
    proc = subprocess.run([str(exe), "--output", str(tmp_path / "x"), "--num-objects", "0"], capture_output=True, text=True)
    assert proc.returncode == 2 and "--num-objects" in proc.stdout
    assert not (tmp_path / "x").exists()


def tiny(output: Path, **overrides) -> SynthConfig:
    """Options of a scene that renders in well under a second."""
    options = dict(num_objects=1, num_views=2, resolution=16, num_points=50, overwrite=True)
    options.update(overrides)
    return SynthConfig(output=output, **options)


def user_mode_of_new_folders() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o777 & ~umask


def test_overwrite_replaces_a_generated_scene(tmp_path):
    out = generate_scene(tiny(tmp_path / "scene", seed=1, overwrite=False))
    (out / "images" / "frame_00001.png").unlink()  # a file it wrote, gone: nothing of the user's is lost
    generate_scene(tiny(out, seed=2))
    assert json.loads((out / "scene.json").read_text())["config"]["seed"] == 2
    assert _files(out) == _files(generate_scene(tiny(tmp_path / "fresh", seed=2)))
    assert stat.S_IMODE(out.stat().st_mode) == user_mode_of_new_folders()  # not mkdtemp's 0700
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fresh", "scene"]  # no staging folder left


def test_overwrite_refuses_a_scene_with_foreign_files(tmp_path):
    out = generate_scene(tiny(tmp_path / "scene", overwrite=False))
    (out / "notes.txt").write_bytes(b"my notes\x00")
    (out / "images" / "frame_00000.jpg").write_bytes(b"not ours")
    linked = out / "images" / "frame_00001.png"  # a link in place of a file it wrote, even to the same bytes
    linked.rename(tmp_path / "frame_00001.png")
    linked.symlink_to(tmp_path / "frame_00001.png")
    before = _files(out)
    foreign = r"images/frame_00000\.jpg, images/frame_00001\.png, notes\.txt"
    with pytest.raises(ValueError, match=rf"^--output: .* did not write \({foreign}\)"):
        generate_scene(tiny(out, seed=5))
    assert _files(out) == before and linked.is_symlink()
    assert (out / "notes.txt").read_bytes() == b"my notes\x00"


def test_overwrite_refuses_a_scene_whose_files_were_edited(tmp_path):
    out = generate_scene(tiny(tmp_path / "scene", overwrite=False))
    edited = out / "images" / "frame_00001.png"
    rgb = np.array(Image.open(edited))
    rgb[0, 0] = 255 - rgb[0, 0]
    Image.fromarray(rgb).save(edited)
    before = _files(out)
    with pytest.raises(ValueError, match=r"^--output: .* changed since unic-lift-synth wrote them \(images/frame_00001"):
        generate_scene(tiny(out, seed=5))
    assert _files(out) == before


def test_overwrite_refuses_user_photos_beside_a_copied_scene_json(tmp_path, monkeypatch, capsys):
    photos = tmp_path / "photos"
    (photos / "images").mkdir(parents=True)
    shutil.copy(generate_scene(tiny(tmp_path / "scene", overwrite=False)) / "scene.json", photos)
    Image.new("RGB", (16, 16), "orange").save(photos / "images" / "frame_00000.png")  # named like a view
    before = _files(photos)
    capsys.readouterr()  # generate_scene's report
    argv = ["unic-lift-synth", "--output", str(photos), "--overwrite", "--num-views", "2", "--resolution", "16"]
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as stop:
        entrypoint()
    assert stop.value.code == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unic-lift-synth: --output: {photos} holds files changed since")
    assert "(images/frame_00000.png)" in lines[0]
    assert _files(photos) == before


def test_overwrite_refuses_an_edited_or_old_scene_json(tmp_path):
    out = generate_scene(tiny(tmp_path / "scene", overwrite=False))
    scene = json.loads((out / "scene.json").read_text())
    scene["config"]["seed"] = 3  # what the user wrote into scene.json would be lost
    (out / "scene.json").write_text(json.dumps(scene, indent=2))
    with pytest.raises(ValueError, match=r"is not a scene unic-lift-synth wrote \(no unchanged scene\.json"):
        generate_scene(tiny(out))
    del scene["files"], scene["sha256"]
    scene["format_version"] = 1  # what unic-lift-synth wrote before it recorded its files
    (out / "scene.json").write_text(json.dumps(scene, indent=2))
    before = _files(out)
    with pytest.raises(ValueError, match=r"scene\.json is from an older unic-lift-synth.*delete the folder by hand"):
        generate_scene(tiny(out))
    assert _files(out) == before


def test_overwrite_refuses_what_is_not_a_generated_scene(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.png").write_bytes(b"holiday")
    with pytest.raises(ValueError, match=r"^--output: .*photos is not a scene unic-lift-synth wrote \(no unchanged"):
        generate_scene(tiny(folder))
    (folder / "scene.json").write_text(json.dumps({"generator": "someone-else", "format_version": 1}))
    with pytest.raises(ValueError, match="is not a scene unic-lift-synth wrote"):
        generate_scene(tiny(folder))
    assert (folder / "a.png").read_bytes() == b"holiday"
    a_file = tmp_path / "scene.txt"
    a_file.write_bytes(b"a file")
    with pytest.raises(NotADirectoryError, match=r"^--output: .*scene.txt exists and is not a folder"):
        generate_scene(tiny(a_file))
    assert a_file.read_bytes() == b"a file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["photos", "scene.txt"]


def test_overwrite_never_replaces_the_current_or_home_folder(tmp_path, monkeypatch):
    work = generate_scene(tiny(tmp_path / "work", overwrite=False))  # a real scene, so only the rule refuses it
    before = _files(work)
    monkeypatch.chdir(work)
    for output, what in ((".", "the current folder"), ("..", "an ancestor"), ("/", "the file-system root")):
        with pytest.raises(ValueError, match=f"^--output: {re.escape(output)} is {what}"):
            generate_scene(tiny(Path(output)))
    monkeypatch.setenv("HOME", str(work))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="is the home folder"):
        generate_scene(tiny(work))
    assert _files(work) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["work"]


def test_cli_overwrite_refusal_is_one_line(tmp_path, monkeypatch, capsys):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "keep.txt").write_bytes(b"keep")
    monkeypatch.setattr(sys, "argv", ["unic-lift-synth", "--output", str(folder), "--overwrite", "--num-views", "2"])
    with pytest.raises(SystemExit) as stop:
        entrypoint()
    assert stop.value.code == 2
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"unic-lift-synth: --output: {folder} is not a scene")
    assert (folder / "keep.txt").read_bytes() == b"keep"


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_clean_ids_are_a_relabelling(preset):
    gt = np.zeros((32, 32), dtype=np.uint16)
    gt[4:14, 4:14], gt[16:28, 16:28] = 1, 2
    mask, sem = simulate_segmenter(gt, PRESETS[preset], np.random.default_rng(0))
    if preset == "clean":
        pairs = {(int(g), int(m)) for g, m in zip(gt.ravel(), mask.ravel())}
        assert len(pairs) == 3 and len({m for _, m in pairs}) == 3
    assert mask.dtype == np.uint16 and sem.dtype == np.uint8
