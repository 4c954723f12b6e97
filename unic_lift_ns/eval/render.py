"""Render the eval views of a trained pipeline and decode them (Embedding-to-Label) for evaluation."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from tqdm import tqdm

from unic_lift_ns.data.label_maps import write_label_map


@dataclass
class RenderedViews:
    """Decoded label maps and image metrics of the eval views, in the datamanager's eval order."""

    stems: List[str]
    """Image file stems of the eval views."""
    instances: List[np.ndarray]
    """Decoded instance label maps [H, W] int64."""
    semantics: Optional[List[np.ndarray]]
    """Semantic class maps [H, W] int64, or None without a semantic head."""
    image_metrics: List[Dict[str, float]]
    """Per-view image metrics (psnr, ssim and, when available, lpips)."""
    embeddings: Optional[List[torch.Tensor]] = None
    """Raw rendered embedding maps [H, W, d] on the model's device, when asked for (the benchmark re-labels them)."""

    def mean_image_metrics(self) -> Dict[str, float]:
        keys = self.image_metrics[0].keys() if self.image_metrics else []
        return {k: float(np.mean([m[k] for m in self.image_metrics])) for k in keys}

    def save(self, folder: Path) -> None:
        """Write ``instances/<stem>.png`` (16-bit) and ``semantics/<stem>.png`` (8-bit) under ``folder``."""
        (folder / "instances").mkdir(parents=True, exist_ok=True)
        if self.semantics is not None:
            (folder / "semantics").mkdir(parents=True, exist_ok=True)
        for stem, labels in zip(self.stems, self.instances):
            write_label_map(folder / "instances" / f"{stem}.png", labels)
        for stem, classes in zip(self.stems, self.semantics or []):
            write_label_map(folder / "semantics" / f"{stem}.png", classes, bit_depth=8)


@torch.no_grad()
def render_eval_views(pipeline, progress: bool = True, keep_embeddings: bool = False) -> RenderedViews:
    """Render every eval view of ``pipeline`` (a UniC-Lift pipeline) and decode its labels."""
    model, datamanager = pipeline.model, pipeline.datamanager
    stems = [Path(p).stem for p in datamanager.eval_dataset.image_filenames]
    instances, semantics, metrics, embeddings = [], [], [], []
    views = datamanager.fixed_indices_eval_dataloader  # a cached property in nerfstudio
    for camera, batch in tqdm(views, desc="Rendering eval views", disable=not progress, leave=False):
        outputs = model.get_outputs_for_camera(camera)
        if keep_embeddings:
            embeddings.append(outputs["embedding"])
        instances.append(outputs["instance_label"].squeeze(-1).cpu().numpy().astype(np.int64))
        if "semantic_label" in outputs:
            semantics.append(outputs["semantic_label"].squeeze(-1).cpu().numpy().astype(np.int64))
        metrics.append(model.get_image_metrics_and_images(outputs, batch)[0])
    return RenderedViews(stems, instances, semantics or None, metrics, embeddings if keep_embeddings else None)
