"""Panoptic quality per frame and per scene (PQ^scene), and semantic mIoU.

PQ^scene (Panoptic Lifting, Siddiqui et al. 2023; used by Contrastive Lift) is panoptic quality where the
segments that carry the same (category, instance) ID in different views are merged into one segment before
the IoU > 0.5 matching. It is computed here by concatenating all views of a scene into one big image and
scoring it with torchmetrics' :class:`~torchmetrics.detection.PanopticQuality`. Per-frame PQ uses the same
metric with every view as its own image; as in torchmetrics (and the COCO panoptic API), the TP/FP/FN counts
and IoU sums of all views are pooled before PQ = SQ * RQ is computed.

Conventions (categories are ``STUFF`` = 0 for the background and ``THING`` = 1 for objects):

* With semantics (``pred_semantics`` given): a pixel's category is its semantic label; GT instance maps have
  0 = background and 1..N = objects. Instance IDs of stuff pixels are ignored, so all background of an image
  is one segment. PQ is the mean of the thing PQ and the stuff PQ (classes without any segment are skipped).
* Class-agnostic (no ``pred_semantics``; ``gt_semantics`` are then unused): every pixel is category ``THING``
  and the GT background (instance 0) is one more segment, with an ID (max GT ID over all views + 1) that
  cannot clash with an object.
* Every predicted instance ID is a segment by default (UniC-Lift's decoded label 0 is a real label). Passing
  ``unlabelled=k`` makes predicted thing pixels with ID k void (the 2D segmenters' ID 0); the instance ID of
  pixels predicted as stuff is irrelevant. Predicted and GT semantic labels other than 0 and 1 (e.g. 255) are void.

Unlike the COCO panoptic API, which only discounts void *GT* pixels, torchmetrics also removes void *predicted*
pixels from the union of a pair and skips GT segments that are mostly predicted void instead of counting them
as false negatives: unlabelled predictions are never penalised, which favours the 2D-segmenter baselines.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import numpy as np
import torch

if TYPE_CHECKING:
    from torchmetrics.detection import PanopticQuality

STUFF = 0
"""Category ID of the background (stuff)."""
THING = 1
"""Category ID of objects (things)."""
VOID = 255
"""Category ID of unlabelled pixels; unknown to the metric, so torchmetrics treats them as void."""


@dataclass(frozen=True)
class PanopticScores:
    """Panoptic, segmentation and recognition quality, in [0, 1] (NaN when there is no segment at all)."""

    pq: float
    """Panoptic quality, SQ * RQ."""
    sq: float
    """Segmentation quality: mean IoU of matched segments."""
    rq: float
    """Recognition quality: F1 score of the segment matching."""


@dataclass(frozen=True)
class PanopticMaps:
    """Predicted and GT (H, W, 2) (category, instance) maps of a scene's views, built by :func:`panoptic_maps`."""

    preds: list[np.ndarray]
    """Predicted maps, one per view."""
    targets: list[np.ndarray]
    """GT maps, one per view."""

    def scene_quality(self) -> PanopticScores:
        """PQ^scene: segments with the same ID are merged across all views before matching."""
        metric = _metric()
        metric.update(_flat_tensor(self.preds), _flat_tensor(self.targets))
        return _scores(metric)

    def frame_quality(self) -> PanopticScores:
        """Per-frame PQ: every view is matched on its own, counts are pooled over views."""
        metric = _metric()
        for pred, target in zip(self.preds, self.targets):
            metric.update(torch.from_numpy(pred)[None], torch.from_numpy(target)[None])
        return _scores(metric)

    def count_instances(self) -> tuple[int, int]:
        """Number of distinct thing segments over all views, (predicted, GT), as PQ^scene sees them.

        In class-agnostic mode the background is a thing segment too, so it is counted on both sides.
        """
        return _count_things(self.preds), _count_things(self.targets)


def semantic_miou(
    pred_semantics: Sequence[np.ndarray],
    gt_semantics: Sequence[np.ndarray],
    num_classes: int = 2,
    ignore: int = 255,
) -> float:
    """Mean IoU over the classes present in prediction or GT; GT pixels equal to ``ignore`` are skipped.

    Predicted labels outside ``[0, num_classes)`` (e.g. unlabelled) count as wrong.
    """
    _check_pairs(pred_semantics, gt_semantics)
    pred = np.concatenate([p.ravel() for p in pred_semantics]).astype(np.int64)
    gt = np.concatenate([g.ravel() for g in gt_semantics]).astype(np.int64)
    valid = gt != ignore
    pred, gt = pred[valid], gt[valid]
    if gt.size and (gt.min() < 0 or gt.max() >= num_classes):
        raise ValueError(f"GT semantic labels must lie in [0, {num_classes}) or equal {ignore}")
    pred = np.where((pred >= 0) & (pred < num_classes), pred, num_classes)
    confusion = np.bincount(gt * (num_classes + 1) + pred, minlength=num_classes * (num_classes + 1))
    confusion = confusion.reshape(num_classes, num_classes + 1)
    intersection = np.diag(confusion[:, :num_classes])
    union = confusion.sum(1) + confusion[:, :num_classes].sum(0) - intersection
    present = union > 0
    return float(np.mean(intersection[present] / union[present])) if present.any() else float("nan")


def panoptic_maps(
    pred_instances: Sequence[np.ndarray],
    gt_instances: Sequence[np.ndarray],
    pred_semantics: Optional[Sequence[np.ndarray]] = None,
    gt_semantics: Optional[Sequence[np.ndarray]] = None,
    unlabelled: Optional[int] = None,
) -> PanopticMaps:
    """Build the (category, instance) maps of predictions and GT following the module conventions."""
    _check_pairs(pred_instances, gt_instances)
    pred_instances, gt_instances = _as_int64(pred_instances), _as_int64(gt_instances)
    if pred_semantics is None:
        background_id = max(int(gt.max()) for gt in gt_instances) + 1
        targets = [np.stack([np.full_like(gt, THING), np.where(gt == 0, background_id, gt)], -1) for gt in gt_instances]
        pred_categories = [np.full_like(pred, THING) for pred in pred_instances]
    else:
        if gt_semantics is None:
            raise ValueError("gt_semantics are required when pred_semantics are given")
        _check_pairs(pred_semantics, pred_instances)
        _check_pairs(gt_semantics, gt_instances)
        targets = [np.stack([sem, gt], -1) for sem, gt in zip(_as_int64(gt_semantics), gt_instances)]
        pred_categories = _as_int64(pred_semantics)
    preds = [
        np.stack([category if unlabelled is None else np.where((pred == unlabelled) & (category == THING), VOID, category), pred], -1)
        for category, pred in zip(pred_categories, pred_instances)
    ]
    return PanopticMaps(preds, targets)


def stuff_as_instance(
    pred_instances: Sequence[np.ndarray], pred_semantics: Sequence[np.ndarray], unlabelled: Optional[int] = None
) -> tuple[list[np.ndarray], int]:
    """Predicted panoptic maps as class-agnostic instance maps, to score a run with semantics as one without (the
    module's class-agnostic convention): every ``STUFF`` pixel takes one new ID, as the GT background does, and pixels
    of any other class than ``STUFF`` and ``THING`` (void) take the ``unlabelled`` ID, a new one if None. Returns the
    maps and the unlabelled ID to score them with."""
    _check_pairs(pred_semantics, pred_instances)
    instances, semantics = _as_int64(pred_instances), _as_int64(pred_semantics)
    stuff_id = max(int(pred.max()) for pred in instances) + 1
    void_id = stuff_id + 1 if unlabelled is None else unlabelled
    maps = [np.where(sem == STUFF, stuff_id, np.where(sem == THING, pred, void_id))
            for pred, sem in zip(instances, semantics)]  # fmt: skip
    return maps, void_id


def _as_int64(maps: Sequence[np.ndarray]) -> list[np.ndarray]:
    return [np.asarray(m, dtype=np.int64) for m in maps]


def _check_pairs(preds: Sequence[np.ndarray], targets: Sequence[np.ndarray]) -> None:
    """Check that two lists of maps have the same length and pairwise the same (H, W) shape."""
    if len(preds) != len(targets):
        raise ValueError(f"Got {len(preds)} predicted maps for {len(targets)} ground-truth maps")
    if len(preds) == 0:
        raise ValueError("No views to score")
    for index, (pred, target) in enumerate(zip(preds, targets)):
        if pred.ndim != 2 or pred.shape != target.shape:
            raise ValueError(f"View {index}: map shape {pred.shape} does not match {target.shape}, expected (H, W)")


def _metric() -> PanopticQuality:
    """The torchmetrics metric with our category set; unknown (void) categories are ignored. Imported here:
    torchmetrics.detection takes about 2 s to import, and every ``ns-train`` imports this plugin's modules."""
    from torchmetrics.detection import PanopticQuality

    return PanopticQuality(things={THING}, stuffs={STUFF}, allow_unknown_preds_category=True, return_sq_and_rq=True)


def _flat_tensor(maps: Sequence[np.ndarray]) -> torch.Tensor:
    """Concatenate (H, W, 2) maps of any sizes into a single (1, num_pixels, 2) 'image'."""
    return torch.from_numpy(np.concatenate([m.reshape(-1, 2) for m in maps]))[None]


def _scores(metric: PanopticQuality) -> PanopticScores:
    pq, sq, rq = metric.compute().tolist()
    return PanopticScores(pq=pq, sq=sq, rq=rq)


def _count_things(maps: Sequence[np.ndarray]) -> int:
    return len(np.unique(np.concatenate([m[..., 1][m[..., 0] == THING] for m in maps])))
