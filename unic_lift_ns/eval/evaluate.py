"""Score predicted instance label maps of a scene folder against its ground truth.

Scene folder layout (as written by ``unic-lift-synth``)::

    SCENE/split.json                 {"train": [stems], "eval": [stems]}, stems in capture order (the views
                                     scored without a checkpoint; a checkpoint's own eval split is scored)
    SCENE/gt/instances/<stem>.png    consistent IDs across views: 0 = background, 1..N = objects
    SCENE/gt/semantics/<stem>.png    0 = background, 1 = object
    SCENE/instance_masks/<stem>.png  2D segmenter, arbitrary per-view IDs, 0 = unlabelled
    SCENE/semantic_masks/<stem>.png  2D segmenter, 0 = background, 1 = object, 255 = unlabelled

Predictions are a folder with one instance label map ``<stem>.png`` or ``<stem>.npy`` per eval view, and
optionally a folder of semantic maps with the same stems. See :mod:`unic_lift_ns.eval.panoptic` for how
they are scored with and without predicted semantics.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from tqdm import tqdm

from unic_lift_ns.data.label_maps import find_label_map, read_label_map, resize_label_map, same_aspect
from unic_lift_ns.eval.panoptic import panoptic_maps, semantic_miou, stuff_as_instance
from unic_lift_ns.eval.rendered_views import RenderedViews
from unic_lift_ns.eval.tracking import DEFAULT_MIN_IOU, track_segments

UNTRACKED = "2D segmenter (untracked)"
"""Name of the baseline scoring the raw 2D segmenter masks."""
TRACKED = "2D segmenter + tracking"
"""Name of the baseline scoring the 2D segmenter masks after Hungarian tracking."""
IMAGE_METRICS = ("psnr", "ssim", "lpips")
"""Mean image metrics of rendered views that an :class:`EvalResult` reports."""
RESULT_COLUMNS = (
    "PQ^scene", "SQ", "RQ", "PQ (frame)", "PQ^scene, class-agnostic", "mIoU", "PSNR", "SSIM", "LPIPS",
    "#pred/#GT inst.",
)  # fmt: skip
"""Columns of a score table row (:func:`result_cells`), after the method's name."""


@dataclass(frozen=True)
class EvalResult:
    """Scores of one method on one scene. Qualities are in [0, 1]; instance scores are None without ground truth."""

    pq_scene: Optional[float]
    """Scene-level panoptic quality (segments merged across views)."""
    sq_scene: Optional[float]
    """Scene-level segmentation quality."""
    rq_scene: Optional[float]
    """Scene-level recognition quality."""
    pq_frame: Optional[float]
    """Per-frame panoptic quality (counts pooled over views)."""
    miou: Optional[float]
    """Semantic mean IoU over background and object; None when no semantics were predicted."""
    num_pred_instances: Optional[int]
    """Distinct predicted thing segments over all eval views."""
    num_gt_instances: Optional[int]
    """Distinct GT thing segments over all eval views."""
    num_views: int
    """Number of eval views scored."""
    psnr: Optional[float] = None
    """Mean PSNR of the rendered eval views, when a model was rendered."""
    ssim: Optional[float] = None
    """Mean SSIM of the rendered eval views, when a model was rendered."""
    lpips: Optional[float] = None
    """Mean LPIPS of the rendered eval views, when a model was rendered and LPIPS is available."""
    pq_scene_agnostic: Optional[float] = None
    """PQ^scene scored class-agnostic, as a run without semantic masks is scored: with predicted semantics the
    predicted stuff is one more instance, like the GT background (equal to ``pq_scene`` without them), so runs with
    and without semantic masks compare on one scale."""

    @classmethod
    def image_metrics_only(cls, metrics: Mapping[str, float], num_views: int) -> EvalResult:
        """Result of rendered views without ground truth: image metrics only."""
        empty = cls(None, None, None, None, None, None, None, num_views)
        return empty.with_image_metrics(metrics)

    def with_image_metrics(self, metrics: Mapping[str, float]) -> EvalResult:
        """A copy with the mean image metrics (psnr, ssim, lpips) found in ``metrics``."""
        return dataclasses.replace(self, **{k: float(metrics[k]) for k in IMAGE_METRICS if k in metrics})

    def to_dict(self) -> dict[str, Any]:
        """Plain dict, e.g. for JSON."""
        return dataclasses.asdict(self)


def result_cells(result: EvalResult) -> list[str]:
    """The :data:`RESULT_COLUMNS` cells of a result: qualities in percent, "-" where there is none."""
    qualities = (result.pq_scene, result.sq_scene, result.rq_scene, result.pq_frame, result.pq_scene_agnostic,
                 result.miou)  # fmt: skip
    cells = ["-" if q is None or math.isnan(q) else f"{100 * q:.1f}" for q in qualities]
    image = ((result.psnr, ".2f"), (result.ssim, ".3f"), (result.lpips, ".3f"))
    cells += ["-" if m is None else f"{m:{spec}}" for m, spec in image]
    counts = "-" if result.num_gt_instances is None else f"{result.num_pred_instances}/{result.num_gt_instances}"
    return cells + [counts]


@dataclass(frozen=True)
class SceneGT:
    """Ground truth of the eval views of a scene."""

    eval_stems: list[str]
    """Eval view stems, in scoring order."""
    all_stems: list[str]
    """All view stems (train and eval), in capture order."""
    instances: list[np.ndarray]
    """GT instance maps of the eval views."""
    semantics: list[np.ndarray]
    """GT semantic maps of the eval views."""


def load_split(scene_dir: Path) -> tuple[list[str], list[str]]:
    """Read ``split.json``: the eval stems and all (train + eval) stems, both in capture order."""
    path = Path(scene_dir) / "split.json"
    if not path.is_file():
        raise FileNotFoundError(f"Split file not found: {path}")
    split = json.loads(path.read_text())
    if not isinstance(split, dict) or not split.get("eval"):
        raise ValueError(f"{path} must hold a non-empty 'eval' list of view stems")
    eval_stems = list(split["eval"])
    return eval_stems, sorted(set(eval_stems) | set(split.get("train", [])))


def has_gt(scene_dir: Optional[Path]) -> bool:
    """Whether a scene folder has ground truth (``gt/``) to score instances against."""
    return scene_dir is not None and (Path(scene_dir) / "gt").is_dir()


def load_scene_gt(
    scene_dir: Path,
    progress: bool = False,
    eval_stems: Optional[Sequence[str]] = None,
    all_stems: Optional[Sequence[str]] = None,
) -> SceneGT:
    """Load the GT instance and semantic maps of the eval views of a scene.

    Args:
        scene_dir: scene folder with ``gt/instances`` and ``gt/semantics``.
        progress: show a progress bar.
        eval_stems: views to score, e.g. the eval split a checkpoint rendered; ``split.json`` is read only without
            them (its train and eval lists).
        all_stems: with ``eval_stems``, the other views (train) too: the 2D segmenter is tracked over all views in
            sorted (capture) order.
    """
    scene_dir = Path(scene_dir)
    if eval_stems is None:
        eval_stems, all_stems = load_split(scene_dir)
    else:
        eval_stems, all_stems = list(eval_stems), sorted(set(eval_stems) | set(all_stems or []))
    gt_dir = scene_dir / "gt"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"Ground-truth folder not found: {gt_dir}")
    instances = load_label_maps(gt_dir / "instances", eval_stems, progress=progress)
    semantics = load_label_maps(gt_dir / "semantics", eval_stems, like=instances, progress=progress)
    return SceneGT(eval_stems, all_stems, instances, semantics)


def load_label_maps(
    folder: Path, stems: Sequence[str], like: Optional[Sequence[np.ndarray]] = None, progress: bool = False
) -> list[np.ndarray]:
    """Read the label maps of ``stems`` from ``folder``; if ``like`` is given, each must match its shape."""
    bar = tqdm(stems, desc=f"Reading {folder}", disable=not progress, leave=False)
    maps = [read_label_map(find_label_map(folder, stem)) for stem in bar]
    if like is not None:
        _check_sizes(folder, stems, maps, like, "the ground truth")
    return maps


def score(
    pred_instances: Sequence[np.ndarray],
    gt: SceneGT,
    pred_semantics: Optional[Sequence[np.ndarray]] = None,
    unlabelled: Optional[int] = None,
) -> EvalResult:
    """Score predicted maps of the eval views (in ``gt.eval_stems`` order); ``unlabelled`` is a void ID."""
    gt_semantics = gt.semantics if pred_semantics is not None else None
    maps = panoptic_maps(pred_instances, gt.instances, pred_semantics, gt_semantics, unlabelled)
    scene, frame = maps.scene_quality(), maps.frame_quality()
    num_pred, num_gt = maps.count_instances()
    agnostic = scene
    if pred_semantics is not None:
        instances, void_id = stuff_as_instance(pred_instances, pred_semantics, unlabelled)
        agnostic = panoptic_maps(instances, gt.instances, unlabelled=void_id).scene_quality()
    return EvalResult(
        pq_scene=scene.pq,
        sq_scene=scene.sq,
        rq_scene=scene.rq,
        pq_frame=frame.pq,
        miou=None if pred_semantics is None else semantic_miou(pred_semantics, gt.semantics),
        num_pred_instances=num_pred,
        num_gt_instances=num_gt,
        num_views=len(gt.eval_stems),
        pq_scene_agnostic=agnostic.pq,
    )


def evaluate_predictions(
    scene_dir: Path,
    pred_dir: Path,
    pred_semantics_dir: Optional[Path] = None,
    gt: Optional[SceneGT] = None,
    progress: bool = False,
    unlabelled: Optional[int] = None,
) -> EvalResult:
    """Score the predicted instance (and optionally semantic) maps in ``pred_dir`` on the eval views."""
    gt = gt or load_scene_gt(scene_dir, progress)
    pred_instances = load_label_maps(Path(pred_dir), gt.eval_stems, like=gt.instances, progress=progress)
    pred_semantics = None
    if pred_semantics_dir is not None:
        pred_semantics = load_label_maps(Path(pred_semantics_dir), gt.eval_stems, like=gt.instances, progress=progress)
    return score(pred_instances, gt, pred_semantics, unlabelled)


def evaluate_segmenter_baselines(
    scene_dir: Path, min_iou: float = DEFAULT_MIN_IOU, gt: Optional[SceneGT] = None, progress: bool = False
) -> dict[str, EvalResult]:
    """Score the scene's own 2D segmenter masks on the eval views, untracked and tracked.

    Tracking runs over all views (train and eval) in capture order, then the eval views are scored; without
    ``semantic_masks/`` the segmenter's segments are scored class-agnostic.
    """
    scene_dir = Path(scene_dir)
    gt = gt or load_scene_gt(scene_dir, progress)
    masks_dir = scene_dir / "instance_masks"
    masks = load_label_maps(masks_dir, gt.all_stems, progress=progress)
    masks = _resized(masks_dir, gt.all_stems, masks, gt.instances[0].shape)  # masks made at a training downscale
    eval_index = [gt.all_stems.index(stem) for stem in gt.eval_stems]
    untracked = [masks[i] for i in eval_index]
    _check_sizes(masks_dir, gt.eval_stems, untracked, gt.instances, "the ground truth")
    semantics_dir = scene_dir / "semantic_masks"
    semantics = (
        load_label_maps(semantics_dir, gt.eval_stems, like=gt.instances, progress=progress)
        if semantics_dir.is_dir()
        else None
    )
    tracked = track_segments(masks, min_iou)
    return {
        UNTRACKED: score(untracked, gt, semantics, unlabelled=0),
        TRACKED: score([tracked[i] for i in eval_index], gt, semantics, unlabelled=0),
    }


def _check_sizes(
    folder: Path, stems: Sequence[str], maps: Sequence[np.ndarray], expected: Sequence[np.ndarray], reference: str
) -> None:
    """Raise a ValueError naming the file of the first map whose size differs from its ``expected`` map."""
    for stem, labels, other in zip(stems, maps, expected):
        if labels.shape != other.shape:
            path = find_label_map(folder, stem)
            raise ValueError(f"{path} has size {_size(labels)}, expected {_size(other)}, the size of {reference}")


def _resized(folder: Path, stems: Sequence[str], maps: Sequence[np.ndarray], shape: Tuple[int, int]) -> list[np.ndarray]:
    """``maps`` resized (nearest, as training does) to ``shape``; a ValueError names a map of another aspect."""
    resized = []
    for stem, labels in zip(stems, maps):
        if not same_aspect(labels.shape, shape):
            path = find_label_map(folder, stem)
            raise ValueError(f"{path} has size {_size(labels)}, not the aspect ratio of the ground truth ({shape[1]}x{shape[0]})")
        resized.append(resize_label_map(torch.from_numpy(labels), *shape).numpy())
    return resized


def _size(labels: np.ndarray) -> str:
    """Size as WxH, like image viewers show it."""
    height, width = labels.shape
    return f"{width}x{height}"


def score_rendered(rendered: RenderedViews, gt: Union[SceneGT, Path]) -> EvalResult:
    """Score rendered eval views against the ground truth of the same views, matched by file stem.

    ``gt`` is that ground truth, or a scene folder whose gt/ is read for exactly the rendered views (split.json is
    not used: the checkpoint's own eval split is scored). Views rendered smaller than the ground truth (training
    on images_2 or with --downscale-factor) are scored after nearest-neighbour upsampling of their label maps, so
    labels are never averaged.
    """
    if not isinstance(gt, SceneGT):
        gt = load_scene_gt(gt, eval_stems=rendered.stems)
    instances, semantics = at_gt_size(rendered, gt)
    return score(instances, gt, semantics).with_image_metrics(rendered.mean_image_metrics())


def at_gt_size(rendered: RenderedViews, gt: SceneGT) -> Tuple[List[np.ndarray], Optional[List[np.ndarray]]]:
    """The rendered instance and semantic maps of the views of ``gt``, in its order and at its size (nearest)."""
    index = {stem: i for i, stem in enumerate(rendered.stems)}
    missing = [s for s in gt.eval_stems if s not in index]
    if missing:
        raise ValueError(f"The ground truth to score holds views that were not rendered: {missing[:5]}")

    def resized(maps: List[np.ndarray]) -> List[np.ndarray]:
        return [
            resize_label_map(torch.from_numpy(maps[index[stem]]), *target.shape).numpy()
            for stem, target in zip(gt.eval_stems, gt.instances)
        ]

    return resized(rendered.instances), None if rendered.semantics is None else resized(rendered.semantics)
