"""UniC-Lift pipeline: nerfstudio's VanillaPipeline whose eval-all-images step also scores instances.

`ns-eval` and the periodic "eval all images" step of `ns-train` then report PQ^scene, SQ, RQ, per-frame PQ and
mIoU next to PSNR/SSIM for the eval views the dataparser chose, whenever the data folder holds ground truth (gt/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Type, Union

import numpy as np
import torch
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.eval.evaluate import EvalResult, SceneGT, has_gt, load_scene_gt, score
from unic_lift_ns.eval.render import RenderedViews, check_label_output, dataset_stems, render_eval_views


@dataclass
class UniCLiftPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline plus instance metrics in evaluation."""

    _target: Type = field(default_factory=lambda: UniCLiftPipeline)
    scene_metrics: bool = True
    """Score the rendered instance labels (PQ^scene, mIoU) when the data folder has gt/."""


def score_rendered(rendered: RenderedViews, gt: Union[SceneGT, Path]) -> EvalResult:
    """Score rendered eval views against the ground truth of the same views, matched by file stem.

    ``gt`` is that ground truth, or a scene folder whose gt/ is read for exactly the rendered views (split.json is
    not used: the checkpoint's own eval split is scored). Views rendered smaller than the ground truth (training
    on images_2 or with --downscale-factor) are scored after nearest-neighbour upsampling of their label maps, so
    labels are never averaged.
    """
    if not isinstance(gt, SceneGT):
        gt = load_scene_gt(gt, eval_stems=rendered.stems)
    index = {stem: i for i, stem in enumerate(rendered.stems)}
    missing = [s for s in gt.eval_stems if s not in index]
    if missing:
        raise ValueError(f"The ground truth to score holds views that were not rendered: {missing[:5]}")

    def at_gt_size(maps: List[np.ndarray]) -> List[np.ndarray]:
        return [
            resize_label_map(torch.from_numpy(maps[index[stem]]), *target.shape).numpy()
            for stem, target in zip(gt.eval_stems, gt.instances)
        ]

    semantics = at_gt_size(rendered.semantics) if rendered.semantics is not None else None
    result = score(at_gt_size(rendered.instances), gt, semantics)
    return result.with_image_metrics(rendered.mean_image_metrics())


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
        """Image metrics of every eval view and, when the data folder has gt/, instance metrics of those views."""
        stems = dataset_stems(self.datamanager.eval_dataset)
        scene, gt = self.scene_dir, None
        if self.config.scene_metrics and has_gt(scene):
            gt = load_scene_gt(scene, eval_stems=stems)
        elif self.config.scene_metrics:
            note = f"No gt/ in {scene}: PQ^scene/mIoU need gt/instances and gt/semantics, skipped."
            CONSOLE.print(note, style="yellow", markup=False, highlight=False, soft_wrap=True)
        if output_path is not None:
            check_label_output(output_path, stems, "--render-output-path")
        self.eval()
        rendered = render_eval_views(self)
        metrics = rendered.mean_image_metrics()
        if get_std:
            for key in list(metrics):
                metrics[f"{key}_std"] = float(np.std([m[key] for m in rendered.image_metrics]))
        if output_path is not None:
            rendered.save(output_path)
        if gt is not None:
            result = score_rendered(rendered, gt)
            metrics.update({k: float(v) for k, v in result.to_dict().items() if v is not None})
        self.train()
        return metrics
