"""unic-lift-eval: score instance label maps of a scene with PQ^scene, per-frame PQ and mIoU.

Example (scores only the scene's own 2D segmenter, untracked and tracked)::

    unic-lift-eval --scene assets/demo
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Literal, Optional

from nerfstudio.utils.rich_utils import CONSOLE
from rich.table import Table

from unic_lift_ns.eval.evaluate import EvalResult, evaluate_predictions, evaluate_segmenter_baselines, load_scene_gt
from unic_lift_ns.eval.tracking import DEFAULT_MIN_IOU
from unic_lift_ns.scripts.cli import run_cli

PREDICTION = "prediction"
"""Name under which the scores of ``--pred`` are reported."""


@dataclass
class EvalConfig:
    """Score predicted instance maps (and the scene's 2D segmenter baselines) against a scene's ground truth."""

    scene: Optional[Path] = None
    """Scene folder with split.json, gt/, instance_masks/ and semantic_masks/ (as written by unic-lift-synth);
    defaults to the data folder of --load-config."""
    load_config: Optional[Path] = None
    """config.yml of a trained unic-lift run: render its eval views, decode labels and score them with PSNR."""
    save_labels: Optional[Path] = None
    """With --load-config: also write the decoded label maps (instances/, semantics/) to this folder."""
    instance_decoding: List[Literal["rendered-embedding", "gaussian-votes"]] = field(default_factory=list)
    """With --load-config of a unic-lift run: score each of these instance decodings (one row each) instead of
    the one in the run's config (see --pipeline.model.instance-decoding of ns-train unic-lift)."""
    pred: Optional[Path] = None
    """Folder of predicted instance maps, <stem>.png or <stem>.npy per eval view."""
    pred_semantics: Optional[Path] = None
    """Folder of predicted semantic maps (0 = background, 1 = object); without it, scoring is class-agnostic."""
    unlabelled_id: Optional[int] = None
    """Predicted ID that means 'unlabelled' (void, not scored). By default every ID, 0 included, is a segment."""
    baselines: bool = True
    """Also score the scene's 2D segmenter masks, untracked and with Hungarian tracking."""
    tracking_min_iou: float = DEFAULT_MIN_IOU
    """Minimum IoU for the tracking baseline to link segments of consecutive views."""
    output_json: Optional[Path] = None
    """Where to write the results; default SCENE/eval/results.json, or PRED_results.json next to --pred."""

    def main(self) -> None:
        """Score, print a table and write the JSON."""
        if self.pred is None and self.load_config is None and not self.baselines:
            raise ValueError("Nothing to score: pass --pred, --load-config and/or --baselines")
        if self.pred_semantics is not None and self.pred is None:
            raise ValueError("--pred-semantics needs --pred")
        results: dict[str, EvalResult] = {}
        if self.load_config is not None:
            scores, scene = self.score_checkpoint()
            results.update(scores)
            self.scene = self.scene or scene
        if self.scene is None:
            raise ValueError("--scene is required (or --load-config, whose data folder is then used)")
        gt = load_scene_gt(self.scene, progress=True)
        if self.baselines:
            results.update(evaluate_segmenter_baselines(self.scene, self.tracking_min_iou, gt=gt, progress=True))
        if self.pred is not None:
            results[PREDICTION] = evaluate_predictions(
                self.scene, self.pred, self.pred_semantics, gt=gt, progress=True, unlabelled=self.unlabelled_id
            )
        CONSOLE.print(results_table(results, title=f"{self.scene} ({len(gt.eval_stems)} eval views)"))
        output = {
            "scene": str(self.scene),
            "load_config": None if self.load_config is None else str(self.load_config),
            "pred": None if self.pred is None else str(self.pred),
            "pred_semantics": None if self.pred_semantics is None else str(self.pred_semantics),
            "tracking_min_iou": self.tracking_min_iou if self.baselines else None,
            "eval_views": gt.eval_stems,
            "results": {name: result.to_dict() for name, result in results.items()},
        }
        path = self.output_json or self.default_output_json()
        write_json(path, output)
        CONSOLE.print(f"Saved results to: {path}")

    def score_checkpoint(self) -> tuple[dict[str, EvalResult], Path]:
        """Render and score the eval views of --load-config; returns ({row name: result}, data folder)."""
        from nerfstudio.utils.eval_utils import eval_setup

        from unic_lift_ns.eval.render import render_eval_views
        from unic_lift_ns.model import UniCLiftModel
        from unic_lift_ns.pipeline import score_rendered

        if not self.load_config.is_file():
            raise FileNotFoundError(f"--load-config: no such file {self.load_config}")
        config, pipeline, _, step = eval_setup(self.load_config, test_mode="test")
        scene = self.scene or pipeline.scene_dir
        if scene is None:
            raise ValueError(f"{self.load_config} names no data folder; pass --scene")
        if self.instance_decoding and type(pipeline.model) is not UniCLiftModel:
            raise ValueError(f"--instance-decoding applies to unic-lift runs only, {self.load_config} is {config.method_name}")
        name = f"{config.method_name} (step {step})"
        if not self.instance_decoding:
            rendered = render_eval_views(pipeline)
            if self.save_labels is not None:
                rendered.save(self.save_labels)
            return {name: score_rendered(rendered, scene)}, Path(scene)
        scores = {}
        for decoding in self.instance_decoding:
            pipeline.model.config.instance_decoding = decoding
            rendered = render_eval_views(pipeline)
            if self.save_labels is not None:
                rendered.save(self.save_labels / decoding)
            scores[f"{name}, {decoding}"] = score_rendered(rendered, scene)
        return scores, Path(scene)

    def default_output_json(self) -> Path:
        """SCENE/eval/results.json, PRED_results.json next to --pred, or eval_results.json next to --load-config."""
        if self.load_config is not None:
            return self.load_config.parent / "eval_results.json"
        if self.pred is None:
            return self.scene / "eval" / "results.json"
        pred = self.pred.resolve()
        return pred.with_name(f"{pred.name}_results.json")


def results_table(results: dict[str, EvalResult], title: str) -> Table:
    """One row per method; qualities in percent."""
    table = Table(title=title)
    table.add_column("Method")
    for column in ("PQ^scene", "SQ", "RQ", "PQ (frame)", "mIoU", "PSNR", "#pred/#GT inst."):
        table.add_column(column, justify="right")
    for name, r in results.items():
        qualities = (r.pq_scene, r.sq_scene, r.rq_scene, r.pq_frame, r.miou)
        cells = ["-" if q is None or math.isnan(q) else f"{100 * q:.1f}" for q in qualities]
        cells.append("-" if r.psnr is None else f"{r.psnr:.2f}")
        table.add_row(name, *cells, f"{r.num_pred_instances}/{r.num_gt_instances}")
    return table


def write_json(path: Path, data: dict) -> None:
    """Write ``data`` to ``path`` through a temporary file, creating parent folders; nothing else is touched."""
    if path.is_dir():
        raise IsADirectoryError(f"--output-json must be a file path, got the folder {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", "utf8")
    os.replace(tmp, path)


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-eval", EvalConfig)


if __name__ == "__main__":
    entrypoint()
