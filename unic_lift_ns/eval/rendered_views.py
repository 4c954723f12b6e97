"""Render the eval views of a trained pipeline and decode them (Embedding-to-Label) for evaluation."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
from tqdm import tqdm

from unic_lift_ns.data.label_maps import LABEL_MAP_SUFFIXES, write_label_maps

LABEL_FOLDERS = ("instances", "semantics")
"""Sub-folders :meth:`RenderedViews.save` writes the instance and semantic label maps to."""


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
    rgb: Optional[List[np.ndarray]] = None
    """RGB renders [H, W, 3] uint8, when asked for (the visual report shows them)."""

    def mean_image_metrics(self) -> Dict[str, float]:
        keys = self.image_metrics[0].keys() if self.image_metrics else []
        return {k: float(np.mean([m[k] for m in self.image_metrics])) for k in keys}

    def save(self, folder: Path) -> None:
        """Write ``instances/<stem>.png`` (16-bit) and ``semantics/<stem>.png`` (8-bit) under ``folder``; a
        folder whose labels do not all fit its PNG bit depth gets ``<stem>.npy`` files instead."""
        instances, semantics = (Path(folder) / name for name in LABEL_FOLDERS)
        write_label_maps(instances, self.stems, self.instances, bit_depth=16)
        if self.semantics is not None:
            write_label_maps(semantics, self.stems, self.semantics, bit_depth=8)


def dataset_stems(dataset) -> List[str]:
    """Image file stems of a nerfstudio dataset, in its order."""
    return [Path(p).stem for p in dataset.image_filenames]


def check_writable_folder(folder: Path, flag: str) -> None:
    """Raise if ``folder`` cannot be created or written to (a file in its place or above it, no permission)."""
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"{flag}: {existing} is a file, so {folder} cannot be a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ValueError(f"{flag}: no permission to write into {existing}")


def check_label_output(folder: Path, stems: Sequence[str], flag: str) -> None:
    """Raise before rendering if :meth:`RenderedViews.save` of the views ``stems`` into ``folder`` would fail
    or overwrite label maps already there."""
    for sub in (folder / name for name in LABEL_FOLDERS):
        check_writable_folder(sub, flag)
        existing = [sub / f"{stem}{suffix}" for stem in stems for suffix in LABEL_MAP_SUFFIXES]
        taken = next((path for path in existing if path.exists()), None)
        if taken is not None:
            raise FileExistsError(
                f"{flag}: {taken} already exists; pass a new folder (label maps are never overwritten)"
            )


@torch.no_grad()
def render_eval_views(
    pipeline, progress: bool = True, keep_embeddings: bool = False, keep_rgb: bool = False
) -> RenderedViews:
    """Render every eval view of ``pipeline`` (a UniC-Lift pipeline) and decode its labels. A semantic head that
    saw no semantic masks predicts no semantics (its "all class 0" is not scored), so scoring is class-agnostic."""
    model, datamanager = pipeline.model, pipeline.datamanager
    stems = dataset_stems(datamanager.eval_dataset)
    instances, semantics, metrics, embeddings, rgb = [], [], [], [], []
    with_semantics = model.semantic_head_trained()
    views = datamanager.fixed_indices_eval_dataloader  # a cached property in nerfstudio
    for camera, batch in tqdm(views, desc="Rendering eval views", disable=not progress, leave=False):
        outputs = model.get_outputs_for_camera(camera)
        if keep_embeddings:
            embeddings.append(outputs["embedding"])
        if keep_rgb:
            rgb.append((outputs["rgb"].clamp(0.0, 1.0) * 255.0).round().to(torch.uint8).cpu().numpy())
        instances.append(outputs["instance_label"].squeeze(-1).cpu().numpy().astype(np.int64))
        if "semantic_label" in outputs and with_semantics:
            semantics.append(outputs["semantic_label"].squeeze(-1).cpu().numpy().astype(np.int64))
        metrics.append(model.get_image_metrics_and_images(outputs, batch)[0])
    return RenderedViews(stems, instances, semantics or None, metrics, embeddings if keep_embeddings else None,
                         rgb if keep_rgb else None)  # fmt: skip
