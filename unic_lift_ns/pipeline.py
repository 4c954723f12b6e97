"""UniC-Lift pipeline: nerfstudio's VanillaPipeline whose eval-all-images step also scores instances.

`ns-eval` and the periodic "eval all images" step of `ns-train` then report PQ^scene, SQ, RQ, per-frame PQ and
mIoU next to PSNR/SSIM, whenever the data folder holds the ground truth of `unic-lift-synth` (gt/, split.json).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Type

import numpy as np
import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.eval.evaluate import EvalResult, load_scene_gt, score
from unic_lift_ns.eval.render import RenderedViews, render_eval_views


@dataclass
class UniCLiftPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline plus instance metrics in evaluation."""

    _target: Type = field(default_factory=lambda: UniCLiftPipeline)
    scene_metrics: bool = True
    """Score the rendered instance labels (PQ^scene, mIoU) when the data folder has gt/ and split.json."""


def score_rendered(rendered: RenderedViews, scene_dir: Path) -> EvalResult:
    """Score rendered eval views against a scene's ground truth, matching views by file stem.

    Views rendered smaller than the ground truth (training on images_2 or with --downscale-factor) are scored
    after nearest-neighbour upsampling of their label maps, so labels are never averaged.
    """
    gt = load_scene_gt(scene_dir)
    index = {stem: i for i, stem in enumerate(rendered.stems)}
    missing = [s for s in gt.eval_stems if s not in index]
    if missing:
        raise ValueError(f"{scene_dir}/split.json lists eval views the checkpoint's eval split lacks: {missing[:5]}")

    def at_gt_size(maps: List[np.ndarray]) -> List[np.ndarray]:
        return [
            resize_label_map(torch.from_numpy(maps[index[stem]]), *target.shape).numpy()
            for stem, target in zip(gt.eval_stems, gt.instances)
        ]

    semantics = at_gt_size(rendered.semantics) if rendered.semantics is not None else None
    result = score(at_gt_size(rendered.instances), gt, semantics)
    return dataclasses.replace(result, psnr=rendered.mean_image_metrics().get("psnr"))


class UniCLiftPipeline(VanillaPipeline):
    """Renders every eval view once, reports image metrics and, with ground truth, instance metrics."""

    config: UniCLiftPipelineConfig

    @property
    def scene_dir(self) -> Optional[Path]:
        data = getattr(self.datamanager.dataparser.config, "data", None)
        return Path(data) if data is not None else None

    @profiler.time_function
    def get_average_eval_image_metrics(
        self, step: Optional[int] = None, output_path: Optional[Path] = None, get_std: bool = False
    ) -> Dict[str, float]:
        self.eval()
        rendered = render_eval_views(self)
        metrics = rendered.mean_image_metrics()
        if get_std:
            for key in list(metrics):
                metrics[f"{key}_std"] = float(np.std([m[key] for m in rendered.image_metrics]))
        if output_path is not None:
            rendered.save(output_path)
        scene = self.scene_dir
        if self.config.scene_metrics and scene is not None and (scene / "gt").is_dir() and (scene / "split.json").is_file():
            result = score_rendered(rendered, scene)
            metrics.update({k: float(v) for k, v in result.to_dict().items() if v is not None})
        elif self.config.scene_metrics:
            CONSOLE.print(f"[yellow]No gt/ and split.json in {scene}: instance metrics skipped.")
        self.train()
        return metrics
