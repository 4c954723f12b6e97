"""`unic-lift-eval --report DIR` (issue #30) on a real trained run: one picture per eval view and an index.html,
checked pixel by pixel against the label maps the same command saves; and a report folder's safety rules."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from conftest import copy_of_run_scene
from unic_lift_ns.data.label_maps import find_label_map, read_label_map
from unic_lift_ns.eval.report import CAPTION_HEIGHT, MIN_PANEL_HEIGHT, REPORT_MARK, colour_labels
from unic_lift_ns.instance_codes import label_palette

DECODINGS = ["rendered-embedding", "nearest-code"]
RENDER_SIZE = 48  # the trained_run fixture's views
EVAL_VIEWS = ["frame_00000", "frame_00008"]


def panels(picture: Path) -> list[np.ndarray]:
    """The panels of a view picture at render size (captions cut off, the whole-factor upscaling undone)."""
    pixels = np.asarray(Image.open(picture).convert("RGB"))
    scale = -(-MIN_PANEL_HEIGHT // RENDER_SIZE)
    assert pixels.shape[0] == RENDER_SIZE * scale + CAPTION_HEIGHT
    width = RENDER_SIZE * scale
    assert pixels.shape[1] % width == 0
    return [pixels[CAPTION_HEIGHT::scale, x : x + width : scale] for x in range(0, pixels.shape[1], width)]


def test_report_shows_every_view_with_its_labels_and_scores(unic_lift_eval, trained_run: Path, tmp_path: Path):
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    report, labels = tmp_path / "report", tmp_path / "labels"
    args = ["--load-config", config, "--instance-decoding", *DECODINGS, "--save-labels", labels, "--report", report,
            "--output-json", tmp_path / "eval.json"]  # fmt: skip
    proc, stdout = unic_lift_eval(*args)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"Saved the report to: {report / 'index.html'}" in stdout
    page = (report / "index.html").read_text()
    assert page.encode().startswith(REPORT_MARK)
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    for name, result in results.items():  # the score table, as the console prints it
        assert f"<td>{name}</td><td>{100 * result['pq_scene']:.1f}</td>" in page
    for stem in EVAL_VIEWS:
        caption = re.search(rf"<figcaption>{stem}: rendered-embedding PQ ([0-9.]+), nearest-code PQ ([0-9.]+)<", page)
        assert caption and all(0.0 <= float(q) <= 100.0 for q in caption.groups()), page
        rgb, mask, *decoded, gt = panels(report / "views" / f"{stem}.png")
        assert len(decoded) == len(DECODINGS)
        assert rgb.std() > 5  # a render, not a blank panel
        two_d = read_label_map(find_label_map(scene / "instance_masks", stem))
        assert np.array_equal(mask, colour_labels(two_d, black=0))
        assert np.array_equal(gt, colour_labels(read_label_map(find_label_map(scene / "gt" / "instances", stem)), black=0))
        for decoding, shown in zip(DECODINGS, decoded):
            saved = read_label_map(find_label_map(labels / decoding / "instances", stem))
            assert np.array_equal(shown, colour_labels(saved)), decoding
    # the same run reported again into the same folder replaces the report (and only it)
    proc, _ = unic_lift_eval("--load-config", config, "--report", report, "--output-json", tmp_path / "eval.json")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert len(panels(report / "views" / f"{EVAL_VIEWS[0]}.png")) == 4  # RGB, mask, the config's decoding, GT
    assert f"<figcaption>{EVAL_VIEWS[0]}: gaussian-votes PQ " in (report / "index.html").read_text()
    assert sorted(p.name for p in report.iterdir()) == ["index.html", "views"]


def test_report_without_ground_truth_shows_no_scores(unic_lift_eval, trained_run: Path, tmp_path: Path):
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    shutil.rmtree(scene / "gt")
    (scene / "instance_masks" / f"{EVAL_VIEWS[1]}.png").unlink()  # some views have no 2D mask
    proc, _ = unic_lift_eval("--load-config", config, "--report", tmp_path / "report")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    page = (tmp_path / "report" / "index.html").read_text()
    assert f"<figcaption>{EVAL_VIEWS[0]}</figcaption>" in page and "PQ " not in page.split("<figure>", 1)[1]
    rgb, mask, decoded = panels(tmp_path / "report" / "views" / f"{EVAL_VIEWS[1]}.png")
    assert (mask == 64).all()  # the panel of a view without a mask
    palette = (label_palette(torch.arange(4096)) * 255).round().to(torch.uint8).numpy()
    assert {tuple(c) for c in decoded.reshape(-1, 3)} <= {tuple(c) for c in palette}


def test_report_folders_are_checked_before_rendering(unic_lift_eval, trained_run: Path, tmp_path: Path):
    config = trained_run / "config.yml"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me too")
    out = tmp_path / "eval.json"
    for folder, message in [(theirs, f"--report: {theirs} already holds files that are not a unic-lift-eval report"),
                            (blocker / "report", f"--report: {blocker} is a file")]:  # fmt: skip
        proc, stdout = unic_lift_eval("--load-config", config, "--report", folder, "--output-json", out)
        assert proc.returncode == 2 and message in stdout and "Traceback" not in proc.stderr, stdout
        assert not out.exists()  # refused before rendering
    proc, stdout = unic_lift_eval("--scene", trained_run, "--report", tmp_path / "report")
    assert proc.returncode == 2 and "--report needs --load-config" in stdout
    assert (theirs / "notes.txt").read_text() == "keep me" and blocker.read_text() == "keep me too"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "theirs"]
