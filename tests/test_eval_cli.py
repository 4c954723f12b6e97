"""Scene loading, its errors, and the unic-lift-eval CLI on a tiny scene folder and on a real trained run."""

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
import tyro
from PIL import Image

from unic_lift_ns.data.label_maps import find_label_map, read_label_map, write_label_map
from unic_lift_ns.eval.evaluate import (
    TRACKED,
    UNTRACKED,
    EvalResult,
    evaluate_predictions,
    evaluate_segmenter_baselines,
    load_scene_gt,
)
from conftest import copy_of_run_scene
from unic_lift_ns.scripts.eval import PREDICTION, EvalConfig, results_table

SIZE = 56
NUM_VIEWS = 8
BIN = Path(sys.executable).parent
RUN_EVAL_VIEWS = ["frame_00000", "frame_00008"]
"""Eval views of the ``trained_run`` fixture: every 8th of its 16 views."""


def write_scene(root: Path) -> Path:
    """Four squares drifting 1 px per view; the simulated segmenter relabels every view at random and leaves
    the bottom row unlabelled. Even views are eval views."""
    rng = np.random.default_rng(0)
    stems = [f"frame_{i:05d}" for i in range(NUM_VIEWS)]
    for sub in ("images", "instance_masks", "semantic_masks", "gt/instances", "gt/semantics"):
        (root / sub).mkdir(parents=True)
    for view, stem in enumerate(stems):
        gt = np.zeros((SIZE, SIZE), np.int64)
        for obj in range(4):
            gt[8 + 8 * obj : 14 + 8 * obj, 4 + 10 * obj + view : 12 + 10 * obj + view] = obj + 1
        ids, inverse = np.unique(gt, return_inverse=True)
        segments = (rng.permutation(len(ids)) + 1)[inverse].reshape(gt.shape)
        semantics = (gt > 0).astype(np.int64)
        segments[-1], semantics[-1] = 0, 255
        Image.fromarray((gt * 50).astype(np.uint8)).convert("RGB").save(root / "images" / f"{stem}.png")
        write_label_map(root / "instance_masks" / f"{stem}.png", segments)
        write_label_map(root / "semantic_masks" / f"{stem}.png", semantics, bit_depth=8)
        write_label_map(root / "gt" / "instances" / f"{stem}.png", gt)
        write_label_map(root / "gt" / "semantics" / f"{stem}.png", gt > 0, bit_depth=8)
    (root / "split.json").write_text(json.dumps({"train": stems[1::2], "eval": stems[0::2]}))
    return root


@pytest.fixture
def scene(tmp_path: Path) -> Path:
    return write_scene(tmp_path / "scene")


def write_gt_as_prediction(scene: Path, pred_dir: Path, sem_dir: Path) -> None:
    """Copy the GT of the eval views as .npy predictions."""
    pred_dir.mkdir(parents=True)
    sem_dir.mkdir(parents=True)
    for path in sorted((scene / "gt" / "instances").glob("frame_*.png")):
        np.save(pred_dir / f"{path.stem}.npy", np.asarray(Image.open(path)).astype(np.int32))
        shutil.copy(scene / "gt" / "semantics" / path.name, sem_dir / path.name)


def test_console_script_scores_baselines(scene: Path) -> None:
    script = Path(sys.executable).parent / "unic-lift-eval"
    run = subprocess.run([str(script), "--scene", str(scene)], capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr
    assert TRACKED in run.stdout
    output = json.loads((scene / "eval" / "results.json").read_text())
    assert output["eval_views"] == ["frame_00000", "frame_00002", "frame_00004", "frame_00006"]
    assert set(output["results"]) == {UNTRACKED, TRACKED}
    untracked, tracked = output["results"][UNTRACKED], output["results"][TRACKED]
    assert set(tracked) == {
        "pq_scene",
        "sq_scene",
        "rq_scene",
        "pq_frame",
        "miou",
        "num_pred_instances",
        "num_gt_instances",
        "num_views",
        "psnr",
        "ssim",
        "lpips",
        "pq_scene_agnostic",
    }
    assert tracked["psnr"] is None  # no model was rendered
    assert tracked["pq_scene"] > 0.95 and untracked["pq_scene"] < 0.75
    assert untracked["pq_frame"] == pytest.approx(tracked["pq_frame"])
    assert (tracked["num_pred_instances"], tracked["num_gt_instances"], tracked["num_views"]) == (4, 4, 4)


def test_main_scores_a_prediction_and_keeps_other_files(scene: Path, tmp_path: Path) -> None:
    pred, pred_sem = tmp_path / "renders" / "instances", tmp_path / "renders" / "semantics"
    write_gt_as_prediction(scene, pred, pred_sem)
    keep = [tmp_path / "renders" / "notes.txt", scene / "eval" / "notes.txt"]
    for path in keep:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("keep me")
    args = ["--scene", str(scene), "--pred", str(pred), "--pred-semantics", str(pred_sem), "--no-baselines"]
    tyro.cli(EvalConfig, args=args).main()
    output = json.loads((tmp_path / "renders" / "instances_results.json").read_text())
    result = output["results"][PREDICTION]
    assert (result["pq_scene"], result["pq_frame"], result["miou"]) == pytest.approx((1.0, 1.0, 1.0))
    assert all(path.read_text() == "keep me" for path in keep)
    written = sorted(p.name for p in (tmp_path / "renders").iterdir())
    assert written == ["instances", "instances_results.json", "notes.txt", "semantics"]


def test_class_agnostic_prediction_with_output_json(scene: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_gt_as_prediction(scene, pred, tmp_path / "unused")
    output_json = tmp_path / "new" / "dir" / "scores.json"
    tyro.cli(EvalConfig, args=["--scene", str(scene), "--pred", str(pred), "--output-json", str(output_json)]).main()
    output = json.loads(output_json.read_text())
    assert list(output["results"]) == [UNTRACKED, TRACKED, PREDICTION]
    # GT background is instance 0, i.e. void in the prediction: only the four objects are scored.
    assert output["results"][PREDICTION]["pq_scene"] == pytest.approx(1.0)
    assert output["results"][PREDICTION]["miou"] is None


def test_output_json_refuses_a_file_it_did_not_write_before_scoring(unic_lift_eval, scene: Path) -> None:
    transforms = scene / "transforms.json"
    transforms.write_text(json.dumps({"camera_model": "OPENCV", "frames": []}, indent=2))
    before = transforms.read_bytes()
    proc, stdout = unic_lift_eval("--scene", scene, "--output-json", transforms)
    assert proc.returncode == 2 and proc.stdout.strip().count("\n") == 0, proc.stdout + proc.stderr
    assert f"--output-json: {transforms} already exists and is not a results file unic-lift-eval wrote" in stdout
    assert TRACKED not in stdout  # refused before scoring
    assert transforms.read_bytes() == before and not (scene / "eval").exists()


def test_output_json_replaces_only_its_own_results(scene: Path, tmp_path: Path) -> None:
    out, victim = tmp_path / "scores.json", tmp_path / "victim.txt"
    victim.write_text("keep me")
    (tmp_path / ".scores.json.tmp").symlink_to(victim)  # where an earlier version wrote its temporary file
    args = ["--scene", str(scene), "--output-json", str(out)]
    tyro.cli(EvalConfig, args=args).main()
    first = json.loads(out.read_text())
    assert first["generator"] == "unic-lift-eval" and set(first["results"]) == {UNTRACKED, TRACKED}
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(out.stat().st_mode) == 0o666 & ~umask  # not mkstemp's 0600
    out.write_text(json.dumps({**first, "results": {}}, indent=2))  # its own earlier results: replaced
    tyro.cli(EvalConfig, args=args).main()
    assert json.loads(out.read_text()) == first and victim.read_text() == "keep me"
    link = tmp_path / "link.json"
    link.symlink_to(out)  # a link to its own results is still not its file
    with pytest.raises(FileExistsError, match=f"^--output-json: {re.escape(str(link))} already exists"):
        tyro.cli(EvalConfig, args=["--scene", str(scene), "--output-json", str(link)]).main()
    assert link.is_symlink() and json.loads(out.read_text()) == first
    assert sorted(p.name for p in tmp_path.iterdir()) == [".scores.json.tmp", "link.json", "scene", "scores.json",
                                                          "victim.txt"]  # fmt: skip


def test_main_rejects_nothing_to_score(scene: Path) -> None:
    with pytest.raises(ValueError, match="Nothing to score"):
        EvalConfig(scene=scene, baselines=False).main()
    with pytest.raises(ValueError, match="--pred-semantics needs --pred"):
        EvalConfig(scene=scene, pred_semantics=scene / "gt" / "semantics").main()


def test_missing_gt_folder_is_named(scene: Path) -> None:
    shutil.rmtree(scene / "gt")
    with pytest.raises(FileNotFoundError, match=re.escape(str(scene / "gt"))):
        load_scene_gt(scene)


def test_mismatched_gt_size_is_named(scene: Path) -> None:
    path = scene / "gt" / "semantics" / "frame_00002.png"
    write_label_map(path, np.zeros((SIZE, 40), np.int64), bit_depth=8)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_scene_gt(scene)


def test_mismatched_prediction_size_names_file_and_sizes(scene: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    write_gt_as_prediction(scene, pred, tmp_path / "sem")
    path = pred / "frame_00004.npy"
    np.save(path, np.ones((SIZE, 40), np.int64))
    with pytest.raises(ValueError, match=rf"{re.escape(str(path))}.*40x{SIZE}.*{SIZE}x{SIZE}"):
        evaluate_predictions(scene, pred)


def test_mismatched_segmenter_size_is_named(scene: Path) -> None:
    path = scene / "instance_masks" / "frame_00003.png"
    write_label_map(path, np.ones((SIZE, 40), np.int64))
    with pytest.raises(ValueError, match=re.escape(str(path))):
        evaluate_segmenter_baselines(scene)


def test_segmenter_masks_at_a_training_downscale_are_scored_at_gt_size(scene: Path) -> None:
    """unic-lift-masks --downscale 2 writes half-size masks; the 2D baselines resize them like training does."""
    full = evaluate_segmenter_baselines(scene)
    for path in sorted((scene / "instance_masks").glob("*.png")):
        write_label_map(path, read_label_map(path)[::2, ::2])
    half = evaluate_segmenter_baselines(scene)
    assert half[UNTRACKED].num_views == full[UNTRACKED].num_views
    assert abs(half[UNTRACKED].pq_frame - full[UNTRACKED].pq_frame) < 0.15, (half, full)


def test_non_integer_masks_are_named(scene: Path, tmp_path: Path) -> None:
    pred = tmp_path / "pred"
    pred.mkdir()
    np.save(pred / "frame_00000.npy", np.zeros((SIZE, SIZE), np.float32))
    with pytest.raises(ValueError, match=re.escape(str(pred / "frame_00000.npy"))):
        evaluate_predictions(scene, pred)
    path = scene / "gt" / "instances" / "frame_00000.png"
    Image.new("RGB", (SIZE, SIZE)).save(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        load_scene_gt(scene)


def run_row(results: dict) -> dict:
    """The checkpoint's row of the results: 'unic-lift (step N)'."""
    (name,) = [name for name in results if name.startswith("unic-lift (step ")]
    return results[name]


def test_load_config_scores_the_rendered_views_without_split_json(
    unic_lift_eval, trained_run: Path, tmp_path: Path
) -> None:
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    (scene / "split.json").unlink()
    out = tmp_path / "eval.json"
    proc, _ = unic_lift_eval("--load-config", config, "--output-json", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = json.loads(out.read_text())
    assert output["scene"] == str(scene) and output["eval_views"] == RUN_EVAL_VIEWS
    results = output["results"]
    assert len(results) == 3 and {UNTRACKED, TRACKED} <= set(results)
    row = run_row(results)
    assert 0.0 <= row["pq_scene"] <= 1.0 and 0.0 <= row["miou"] <= 1.0 and row["num_gt_instances"] > 0
    assert row["psnr"] > 10.0 and row["ssim"] is not None
    assert [results[name]["num_views"] for name in (UNTRACKED, TRACKED)] == [2, 2]


def test_load_config_scores_the_split_its_dataparser_chose(unic_lift_eval, trained_run: Path, tmp_path: Path) -> None:
    """transforms.json holds out other views than split.json lists: the rendered (dataparser's) views are scored,
    by the checkpoint and by the 2D segmenter baselines alike."""
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    transforms = json.loads((scene / "transforms.json").read_text())
    held_out = ["frame_00000", "frame_00003", "frame_00011"]
    transforms["val_filenames"] = transforms["test_filenames"] = [f"images/{stem}.png" for stem in held_out]
    (scene / "transforms.json").write_text(json.dumps(transforms))
    assert json.loads((scene / "split.json").read_text())["eval"] == RUN_EVAL_VIEWS
    out = tmp_path / "eval.json"
    proc, stdout = unic_lift_eval("--load-config", config, "--output-json", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    output = json.loads(out.read_text())
    assert output["eval_views"] == held_out and "(3 eval views)" in stdout
    assert len(output["results"]) == 3 and {UNTRACKED, TRACKED} <= set(output["results"])
    assert [result["num_views"] for result in output["results"].values()] == [3, 3, 3]


def test_missing_gt_map_of_a_rendered_view_is_named_before_rendering(
    unic_lift_eval, trained_run: Path, tmp_path: Path
) -> None:
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    (scene / "gt" / "instances" / "frame_00008.png").unlink()
    labels, out = tmp_path / "labels", tmp_path / "eval.json"
    proc, stdout = unic_lift_eval("--load-config", config, "--save-labels", labels, "--output-json", out)
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"'frame_00008' in {scene / 'gt' / 'instances'}" in stdout and "Traceback" not in proc.stderr
    assert not labels.exists() and not out.exists()  # nothing rendered, nothing written


def test_load_config_without_gt_reports_image_metrics_and_saves_labels(
    unic_lift_eval, trained_run: Path, tmp_path: Path
) -> None:
    scene, config = copy_of_run_scene(trained_run, tmp_path)
    shutil.rmtree(scene / "gt")
    labels = tmp_path / "labels"
    out = tmp_path / "eval.json"
    proc, stdout = unic_lift_eval("--load-config", config, "--save-labels", labels, "--output-json", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"No ground truth in {scene / 'gt'}" in stdout
    assert "PQ^scene, mIoU and the 2D segmenter baselines need gt/instances and gt/semantics" in stdout
    output = json.loads(out.read_text())
    assert output["eval_views"] == RUN_EVAL_VIEWS and output["tracking_min_iou"] is None
    (row,) = output["results"].values()  # no baselines without ground truth
    assert row["psnr"] > 10.0 and 0.0 < row["ssim"] <= 1.0 and row["num_views"] == 2
    assert row["pq_scene"] is None and row["miou"] is None and row["num_gt_instances"] is None
    for stem in RUN_EVAL_VIEWS:
        assert read_label_map(find_label_map(labels / "instances", stem)).shape == (48, 48)
    proc, stdout = unic_lift_eval("--load-config", config, "--pred", labels / "instances", "--output-json", out)
    assert proc.returncode == 2 and f"--pred needs ground truth, but {scene} has no gt/" in stdout


def test_outputs_are_checked_before_rendering(trained_run: Path, tmp_path: Path) -> None:
    config = trained_run / "config.yml"
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    with pytest.raises(NotADirectoryError, match=f"--output-json: {re.escape(str(blocker))} is a file"):
        EvalConfig(load_config=config, output_json=blocker / "eval.json").main()
    with pytest.raises(NotADirectoryError, match=f"--save-labels: {re.escape(str(blocker))} is a file"):
        EvalConfig(load_config=config, save_labels=blocker, output_json=tmp_path / "eval.json").main()
    scene_file = tmp_path / "transforms.json"
    scene_file.write_text('{"frames": []}')
    with pytest.raises(FileExistsError, match=f"--output-json: {re.escape(str(scene_file))} already exists"):
        EvalConfig(load_config=config, output_json=scene_file).main()
    theirs = tmp_path / "labels" / "instances" / "frame_00008.png"
    theirs.parent.mkdir(parents=True)
    theirs.write_text("not ours")
    with pytest.raises(FileExistsError, match=f"--save-labels: {re.escape(str(theirs))} already exists"):
        EvalConfig(load_config=config, save_labels=tmp_path / "labels", output_json=tmp_path / "eval.json").main()
    assert blocker.read_text() == "keep me" and theirs.read_text() == "not ours"
    assert scene_file.read_text() == '{"frames": []}'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a_file", "labels", "transforms.json"]


def test_periodic_eval_scores_the_rendered_views_and_needs_no_gt(trained_run: Path, tmp_path: Path) -> None:
    """SegmentationPipeline.get_average_eval_image_metrics (ns-train's eval-all-images, ns-eval) follows the same rule."""
    from nerfstudio.utils.eval_utils import eval_setup

    scene, config = copy_of_run_scene(trained_run, tmp_path)
    (scene / "split.json").unlink()
    _, pipeline, _, _ = eval_setup(config, test_mode="val")
    metrics = pipeline.get_average_eval_image_metrics()
    assert metrics["num_views"] == 2 and 0.0 <= metrics["pq_scene"] <= 1.0 and metrics["psnr"] > 10.0
    blocker = tmp_path / "a_file"
    blocker.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="--render-output-path"):
        pipeline.get_average_eval_image_metrics(output_path=blocker)
    shutil.rmtree(scene / "gt")
    metrics = pipeline.get_average_eval_image_metrics(output_path=tmp_path / "renders")
    assert "pq_scene" not in metrics and metrics["psnr"] > 10.0
    written = sorted(p.name for p in (tmp_path / "renders" / "instances").iterdir())
    assert written == [f"{stem}.png" for stem in RUN_EVAL_VIEWS]


def test_results_table_leaves_out_columns_no_row_has() -> None:
    """Scores of 2D masks have no image metrics: the console table leaves those columns out, so names stay whole."""
    masks = EvalResult(0.9, 0.9, 0.9, 0.9, 0.8, 4, 4, 4, pq_scene_agnostic=0.85)
    rendered = EvalResult(0.9, 0.9, 0.9, 0.9, 0.8, 4, 4, 4, psnr=20.0, pq_scene_agnostic=0.85)
    headers = [column.header for column in results_table({UNTRACKED: masks}, "scene").columns]
    assert headers == ["Method", "PQ^scene", "SQ", "RQ", "PQ (frame)", "PQ^scene, class-agnostic", "mIoU",
                       "#pred/#GT inst."]  # fmt: skip
    headers = [column.header for column in results_table({UNTRACKED: masks, "run": rendered}, "scene").columns]
    assert "PSNR" in headers and "SSIM" not in headers
