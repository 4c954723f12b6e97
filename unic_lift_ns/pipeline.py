"""The segmentation pipeline of every method: nerfstudio's VanillaPipeline whose eval-all-images step also scores
instances.

`ns-eval` and the periodic "eval all images" step of `ns-train` then report PQ^scene, SQ, RQ, per-frame PQ and
mIoU next to PSNR/SSIM for the eval views the dataparser chose, whenever the data folder holds ground truth (gt/).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Type

import numpy as np
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils import profiler
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.eval.evaluate import has_gt, load_scene_gt, score_rendered
from unic_lift_ns.eval.rendered_views import check_label_output, dataset_stems, render_eval_views
from unic_lift_ns.viewer import InstanceViewer

INSTANCE_LIST_EVERY = 100
"""Training steps between refreshes of the live viewer's instance list."""


@dataclass
class SegmentationPipelineConfig(VanillaPipelineConfig):
    """VanillaPipeline plus instance metrics in evaluation."""

    _target: Type = field(default_factory=lambda: SegmentationPipeline)
    scene_metrics: bool = True
    """Score the rendered instance labels (PQ^scene, mIoU) when the data folder has gt/."""


class SegmentationPipeline(VanillaPipeline):
    """Renders every eval view once, reports image metrics and, with ground truth, instance metrics."""

    config: SegmentationPipelineConfig

    def __init__(self, config: SegmentationPipelineConfig, device: str, *args, **kwargs) -> None:
        super().__init__(config, device, *args, **kwargs)
        self.instance_gui = InstanceViewer(self.model)  # live-viewer instance tools (decoding, pick, isolate, export)

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> List[TrainingCallback]:
        """nerfstudio's callbacks, and the live viewer's instance list refreshed every INSTANCE_LIST_EVERY steps."""
        refresh = TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION],
                                   self.instance_gui.after_training_steps, update_every_num_iters=INSTANCE_LIST_EVERY)  # fmt: skip
        return super().get_training_callbacks(attributes) + [refresh]

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


UniCLiftPipelineConfig = SegmentationPipelineConfig
UniCLiftPipeline = SegmentationPipeline
"""The names that config.yml files written before #28 give these classes (``tests/test_old_configs.py`` loads such
files); new code uses the Segmentation names."""
