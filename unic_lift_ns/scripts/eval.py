"""unic-lift-eval: score instance label maps of a scene with PQ^scene, per-frame PQ and mIoU.

Example (scores only the scene's own 2D segmenter, untracked and tracked)::

    unic-lift-eval --scene assets/demo
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

from nerfstudio.utils.rich_utils import CONSOLE
from rich.table import Table

from unic_lift_ns.data.label_maps import read_label_map
from unic_lift_ns.eval.evaluate import (
    RESULT_COLUMNS,
    EvalResult,
    SceneGT,
    at_gt_size,
    evaluate_predictions,
    evaluate_segmenter_baselines,
    has_gt,
    load_scene_gt,
    result_cells,
    score_rendered,
)
from unic_lift_ns.eval.rendered_views import (
    RenderedViews,
    check_label_output,
    check_writable_folder,
    dataset_stems,
    render_eval_views,
)
from unic_lift_ns.eval.report import ReportView, check_report_folder, view_qualities, write_report
from unic_lift_ns.eval.tracking import DEFAULT_MIN_IOU
from unic_lift_ns.models.decoding import InstanceDecoding
from unic_lift_ns.runs import LoadedRun, load_run
from unic_lift_ns.safe_files import is_ours, json_signature, write_json
from unic_lift_ns.scripts.cli import run_cli

PREDICTION = "prediction"
"""Name under which the scores of ``--pred`` are reported."""
GENERATOR = "unic-lift-eval"
"""The results JSON's "generator": --output-json replaces only a file that says so."""


@dataclass
class EvalConfig:
    """Score predicted instance maps (and the scene's 2D segmenter baselines) against a scene's ground truth."""

    scene: Optional[Path] = None
    """Scene folder with gt/, instance_masks/ and semantic_masks/ (as written by unic-lift-synth), and split.json
    naming the views to score without --load-config; defaults to the data folder of --load-config."""
    load_config: Optional[Path] = None
    """config.yml of a trained unic-lift run: render the eval views its dataparser chose, decode labels and score
    them (PSNR/SSIM/LPIPS; PQ^scene/mIoU when the scene has gt/). --pred and the baselines score the same views."""
    save_labels: Optional[Path] = None
    """With --load-config: also write the decoded label maps (instances/, semantics/) to this folder, as 16-bit
    (semantics: 8-bit) PNGs, or .npy when labels do not fit; label maps already there are never overwritten."""
    instance_decoding: List[InstanceDecoding] = field(default_factory=list)
    """With --load-config of a unic-lift run: score each of these instance decodings (one row each) instead of
    the one in the run's config (see --pipeline.model.instance-decoding of ns-train unic-lift)."""
    pred: Optional[Path] = None
    """Folder of predicted instance maps, <stem>.png or <stem>.npy per eval view."""
    pred_semantics: Optional[Path] = None
    """Folder of predicted semantic maps (0 = background, 1 = object); without it, scoring is class-agnostic."""
    unlabelled_id: Optional[int] = None
    """Predicted ID that means 'unlabelled' (void, not scored). By default every ID, 0 included, is a segment."""
    baselines: bool = True
    """Also score the scene's 2D segmenter masks, untracked and with Hungarian tracking (needs gt/)."""
    tracking_min_iou: float = DEFAULT_MIN_IOU
    """Minimum IoU for the tracking baseline to link segments of consecutive views."""
    report: Optional[Path] = None
    """With --load-config: write a visual report to this folder, views/<stem>.png per eval view (the RGB render,
    the view's 2D instance mask, the decoded labels of each decoding and, when the scene has gt/, the ground truth
    and the view's PQ) and index.html with the score table. It must be new, empty or an earlier report."""
    output_json: Optional[Path] = None
    """Where to write the results; default SCENE/eval/results.json, PRED_results.json next to --pred, or
    eval_results.json next to --load-config. An existing file is replaced only if unic-lift-eval wrote it."""

    def main(self) -> None:
        """Check flags and outputs, score, print a table and write the JSON."""
        if self.pred is None and self.load_config is None and not self.baselines:
            raise ValueError("Nothing to score: pass --pred, --load-config and/or --baselines")
        if self.pred_semantics is not None and self.pred is None:
            raise ValueError("--pred-semantics needs --pred")
        if self.load_config is None and self.scene is None:
            raise ValueError("--scene is required (or --load-config, whose data folder is then used)")
        if self.load_config is not None and not self.load_config.is_file():
            raise FileNotFoundError(f"--load-config: no such file {self.load_config}")
        if self.report is not None and self.load_config is None:
            raise ValueError("--report needs --load-config (it shows the run's rendered eval views)")
        output_json = self.output_json or self.default_output_json()
        check_output_file(output_json, "--output-json")
        if self.report is not None:
            check_report_folder(self.report)
        if self.load_config is None:
            scene, run = self.scene, None
            gt = load_scene_gt(scene, progress=True)
            stems = gt.eval_stems
        else:
            run = self.prepare_run()
            scene, stems, gt = run.scene, run.eval_stems, run.gt
        results: dict[str, EvalResult] = {}
        rendered: dict[str, RenderedViews] = {}
        baselines = {}
        if self.baselines and gt is not None:
            baselines = evaluate_segmenter_baselines(scene, self.tracking_min_iou, gt=gt, progress=True)
        if run is not None:
            rendered = self.render_checkpoint(run)
            results.update(score_checkpoint(rendered, run.gt))
        results.update(baselines)
        if self.pred is not None:
            results[PREDICTION] = evaluate_predictions(
                scene, self.pred, self.pred_semantics, gt=gt, progress=True, unlabelled=self.unlabelled_id
            )
        title = f"{scene} ({len(stems)} eval views)"
        CONSOLE.print(results_table(results, title=title))
        output = {
            "scene": str(scene),
            "load_config": None if self.load_config is None else str(self.load_config),
            "pred": None if self.pred is None else str(self.pred),
            "pred_semantics": None if self.pred_semantics is None else str(self.pred_semantics),
            "tracking_min_iou": self.tracking_min_iou if baselines else None,
            "eval_views": stems,
            "results": {name: result.to_dict() for name, result in results.items()},
        }
        output_json.parent.mkdir(parents=True, exist_ok=True)
        write_json(output_json, output, GENERATOR)
        CONSOLE.print(f"Saved results to: {output_json}")
        if self.report is not None:
            model_config = run.loaded.model.config
            captions = self.instance_decoding or [getattr(model_config, "instance_decoding", "decoded labels")]
            views = report_views(run, dict(zip(captions, rendered.values())))
            CONSOLE.print(f"Saved the report to: {write_report(self.report, title, results, views)}")

    def prepare_run(self) -> RunAndGroundTruth:
        """Load --load-config and everything its scoring needs, checking what can fail before rendering."""
        loaded = load_run(self.load_config, test_mode="test")
        pipeline = loaded.pipeline
        if self.instance_decoding and not loaded.is_unic_lift:
            raise ValueError(
                f"--instance-decoding applies to unic-lift runs only, {self.load_config} is {loaded.config.method_name}"
            )
        scene = self.scene or pipeline.scene_dir
        if scene is None:
            raise ValueError(f"{self.load_config} names no data folder; pass --scene")
        stems = dataset_stems(pipeline.datamanager.eval_dataset)
        for folder in self.label_folders():
            check_label_output(folder, stems, "--save-labels")
        gt = None
        if has_gt(scene):
            train_stems = dataset_stems(pipeline.datamanager.train_dataset)
            gt = load_scene_gt(scene, progress=True, eval_stems=stems, all_stems=train_stems)
        elif self.pred is not None:
            raise ValueError(f"--pred needs ground truth, but {scene} has no gt/ (gt/instances, gt/semantics)")
        else:
            note = (
                f"No ground truth in {scene / 'gt'}: reporting image metrics only; PQ^scene, mIoU and the 2D "
                "segmenter baselines need gt/instances and gt/semantics."
            )
            CONSOLE.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
        return RunAndGroundTruth(loaded, scene, stems, gt)

    def label_folders(self) -> List[Path]:
        """Folders --save-labels writes to: one per --instance-decoding, or --save-labels itself."""
        if self.save_labels is None:
            return []
        return [self.save_labels / d for d in self.instance_decoding] or [self.save_labels]

    def render_checkpoint(self, run: RunAndGroundTruth) -> dict[str, RenderedViews]:
        """Render the run's eval views once per instance decoding and save their labels; by score row name."""
        decodings = self.instance_decoding or [None]
        folders = self.label_folders() or [None] * len(decodings)
        rendered = {}
        for decoding, folder in zip(decodings, folders):
            if decoding is not None:
                run.loaded.model.set_decoding(instance_decoding=decoding)
            views = render_eval_views(run.loaded.pipeline, keep_rgb=self.report is not None)
            if folder is not None:
                views.save(folder)
            name = run.loaded.name
            rendered[name if decoding is None else f"{name}, {decoding}"] = views
        return rendered

    def default_output_json(self) -> Path:
        """SCENE/eval/results.json, PRED_results.json next to --pred, or eval_results.json next to --load-config."""
        if self.load_config is not None:
            return self.load_config.parent / "eval_results.json"
        if self.pred is None:
            return self.scene / "eval" / "results.json"
        pred = self.pred.resolve()
        return pred.with_name(f"{pred.name}_results.json")


@dataclass(frozen=True)
class RunAndGroundTruth:
    """A loaded run with the views it renders and their ground truth."""

    loaded: LoadedRun
    """The run (its pipeline, and its method and step for the row name)."""
    scene: Path
    """Scene folder whose gt/ is scored against."""
    eval_stems: List[str]
    """Stems of the eval views its dataparser chose, in render order."""
    gt: Optional[SceneGT]
    """Ground truth of those views, or None when the scene has no gt/."""


def score_checkpoint(rendered: dict[str, RenderedViews], gt: Optional[SceneGT]) -> dict[str, EvalResult]:
    """Score each decoding's rendered views against ``gt``, or report their image metrics without it."""
    return {
        name: score_rendered(views, gt) if gt is not None
        else EvalResult.image_metrics_only(views.mean_image_metrics(), len(views.stems))
        for name, views in rendered.items()
    }  # fmt: skip


def report_views(run: RunAndGroundTruth, rendered: dict[str, RenderedViews]) -> list[ReportView]:
    """What the report shows of each eval view: the render, its 2D mask, the labels and PQ of every decoding (by
    its caption in ``rendered``) and the GT."""
    first = next(iter(rendered.values()))
    dataset = run.loaded.pipeline.datamanager.eval_dataset
    masks = [None if path is None else read_label_map(path) for path in dataset.instance_mask_paths]
    qualities: dict[str, list[float]] = {}
    if run.gt is not None:
        for name, views in rendered.items():
            instances, semantics = at_gt_size(views, run.gt)
            qualities[name] = view_qualities(instances, run.gt.instances, semantics, run.gt.semantics)
    gt_index = {} if run.gt is None else {stem: i for i, stem in enumerate(run.gt.eval_stems)}
    return [
        ReportView(
            stem, first.rgb[i], masks[i], {name: views.instances[i] for name, views in rendered.items()},
            None if run.gt is None else run.gt.instances[gt_index[stem]],
            {name: qualities[name][gt_index[stem]] for name in qualities},
        )
        for i, stem in enumerate(first.stems)
    ]  # fmt: skip


def results_table(results: dict[str, EvalResult], title: str) -> Table:
    """One row per method; qualities in percent. Columns with no value in any row (e.g. image metrics when no model
    was rendered) are left out."""
    rows = {name: result_cells(result) for name, result in results.items()}
    kept = [i for i in range(len(RESULT_COLUMNS)) if any(cells[i] != "-" for cells in rows.values())]
    table = Table(title=title)
    table.add_column("Method", no_wrap=True)
    for i in kept:
        table.add_column(RESULT_COLUMNS[i], justify="right")
    for name, cells in rows.items():
        table.add_row(name, *(cells[i] for i in kept))
    return table


def check_output_file(path: Path, flag: str) -> None:
    """Raise if the file ``path`` cannot be written: a folder in its place, a file above it, no permission, or a
    file there that is not results unic-lift-eval wrote."""
    if path.is_dir():
        raise IsADirectoryError(f"{flag} must be a file path, got the folder {path}")
    check_writable_folder(path.parent, flag)
    if os.path.lexists(path) and not is_ours(path, json_signature(GENERATOR)):
        raise FileExistsError(
            f"{flag}: {path} already exists and is not a results file {GENERATOR} wrote; choose another {flag} "
            f"or move the file away ({GENERATOR} replaces only its own results)"
        )


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-eval", EvalConfig)


if __name__ == "__main__":
    entrypoint()
