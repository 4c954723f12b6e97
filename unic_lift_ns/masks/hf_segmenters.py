"""Segmenter backends through Hugging Face ``transformers``: Segment Anything automatic mask generation (overlapping
masks, no classes) and Mask2Former / MaskFormer / OneFormer panoptic segmentation (a label map with thing classes).

``transformers`` is optional (``pip install 'unic-lift-ns[masks]'``) and imported only by :func:`load_hf_segmenter`.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.errors import InputError, few
from unic_lift_ns.masks.segmenter import CLASSICAL, Segmenter
from unic_lift_ns.masks.segments import Segments

PANOPTIC_TYPES = ("mask2former", "maskformer", "oneformer")
"""``model_type`` values of the panoptic models :class:`PanopticSegmenter` runs."""
SUPPORTED = f"supported: sam, {', '.join(PANOPTIC_TYPES)}, or {CLASSICAL}"
HUB_ID = re.compile(r"\w[\w.-]*(/\w[\w.-]*)?")
"""A Hugging Face hub model id: ``name`` or ``owner/name``."""
COCO_PANOPTIC_LABELS, COCO_PANOPTIC_THINGS = 133, 80
"""COCO panoptic: 133 labels, of which ids 0..79 are things and 80..132 stuff."""


@dataclass
class SamOptions:
    """Segment Anything automatic mask generation (``transformers``' mask-generation pipeline)."""

    points_per_batch: int = 64
    """Grid points decoded per forward of the mask decoder (more is faster and needs more memory)."""
    points_per_crop: int = 32
    """Grid points per side of the prompt grid (32 = 1024 point prompts per crop)."""
    crops_n_layers: int = 0
    """Extra layers of image crops to segment again (layer i has (2^i)^2 crops); 0 segments the whole image only."""
    pred_iou_thresh: float = 0.88
    """Keep masks whose predicted IoU is above this (0 keeps all)."""
    stability_score_thresh: float = 0.95
    """Keep masks whose stability score (IoU of the mask at thresholds +-1) is above this (0 keeps all)."""


@dataclass
class PanopticOptions:
    """Mask2Former / MaskFormer / OneFormer panoptic segmentation (``post_process_panoptic_segmentation``)."""

    threshold: float = 0.5
    """Keep segments whose class score is above this."""
    mask_threshold: float = 0.5
    """Threshold on the mask probabilities that binarizes a segment's mask."""
    overlap_mask_area_threshold: float = 0.8
    """Drop a segment when less than this fraction of its mask is left after overlaps are resolved."""
    thing_classes: Optional[Tuple[str, ...]] = None
    """Labels of the model that are things (instances); the rest are stuff (one fused segment per class). Needed
    for models that are neither COCO panoptic (133 labels) nor carry thing ids in their processor (OneFormer)."""


class SamSegmenter:
    """Segment Anything automatic mask generation: a grid of point prompts, filtered by predicted IoU and
    stability, then deduplicated by box NMS; overlapping masks without classes."""

    thing_classes: Optional[List[str]] = None

    def __init__(self, model: str, revision: Optional[str], generator: Any, options: SamOptions) -> None:
        self.model, self.revision = model, revision
        self.generator = generator  # a transformers mask-generation pipeline
        self.options = options

    def segment(self, images: List[np.ndarray]) -> List[Segments]:
        """Masks of each uint8 [H, W, 3] RGB image at its size, and their predicted IoUs as scores."""
        from PIL import Image

        options = self.options
        outputs = self.generator(
            [Image.fromarray(image) for image in images],
            points_per_batch=options.points_per_batch,
            points_per_crop=options.points_per_crop,
            crops_n_layers=options.crops_n_layers,
            pred_iou_thresh=options.pred_iou_thresh,
            stability_score_thresh=options.stability_score_thresh,
        )
        segments = []
        for image, output in zip(images, outputs):
            masks = [np.asarray(mask, dtype=bool) for mask in output["masks"]]  # on the CPU, [H, W] each
            stacked = np.stack(masks) if masks else np.zeros((0, *image.shape[:2]), dtype=bool)
            scores = np.asarray(output["scores"].float().cpu(), dtype=np.float32).reshape(-1)
            segments.append(Segments(scores=scores, masks=stacked))
        return segments


class PanopticSegmenter:
    """Mask2Former / MaskFormer / OneFormer panoptic segmentation: non-overlapping segments, each of one class;
    instances of thing classes are separate segments, each stuff class is one fused segment."""

    def __init__(
        self, model: str, revision: Optional[str], processor: Any, network: Any, options: PanopticOptions
    ) -> None:
        self.model, self.revision = model, revision
        self.processor = processor  # the image processor (OneFormer: its processor, which tokenizes the task)
        self.network = network.eval()
        self.options = options
        names = {int(i): str(name) for i, name in network.config.id2label.items()}
        thing_ids = self._thing_ids(names)
        self.thing_classes: List[str] = [names[i] for i in thing_ids]
        self.stuff_ids = set(names) - set(thing_ids)  # post-processing fuses these into one segment per class
        self._thing_index = np.full(max(names, default=-1) + 1, -1, dtype=np.int64)
        self._thing_index[thing_ids] = np.arange(len(thing_ids))

    def _thing_ids(self, names: Dict[int, str]) -> List[int]:
        """Label ids of the thing classes: ``--panoptic.thing-classes``, else the processor's metadata (OneFormer),
        else the COCO panoptic layout, else all (with a warning)."""
        if self.options.thing_classes is not None:
            by_name: Dict[str, List[int]] = {}
            for i, name in names.items():
                by_name.setdefault(name, []).append(i)
            unknown = [name for name in self.options.thing_classes if name not in by_name]
            if unknown:
                raise InputError(
                    f"--panoptic.thing-classes: {few(unknown)} not among the labels of --model {self.model} "
                    f"({few(sorted(by_name))}); pass names of its config's id2label"
                )
            return sorted({i for name in self.options.thing_classes for i in by_name[name]})
        metadata = getattr(getattr(self.processor, "image_processor", self.processor), "metadata", None)
        if isinstance(metadata, dict) and metadata.get("thing_ids"):
            return sorted(int(i) for i in metadata["thing_ids"] if int(i) in names)
        if len(names) == COCO_PANOPTIC_LABELS:
            return list(range(COCO_PANOPTIC_THINGS))
        CONSOLE.print(
            f"--model {self.model}: its {len(names)} labels say nothing of things and stuff, so every class is a "
            "thing (name the things with --panoptic.thing-classes)",
            style="yellow", markup=False, soft_wrap=True,
        )  # fmt: skip
        return sorted(names)

    def segment(self, images: List[np.ndarray]) -> List[Segments]:
        """Segments of each uint8 [H, W, 3] RGB image at its size: one forward per distinct image size (padding
        images to a common size would shift the post-processed masks)."""
        by_size: Dict[Tuple[int, int], List[int]] = {}
        for i, image in enumerate(images):
            by_size.setdefault(image.shape[:2], []).append(i)
        segments: Dict[int, Segments] = {}
        for indices in by_size.values():
            segments.update(zip(indices, self._segment_batch([images[i] for i in indices])))
        return [segments[i] for i in range(len(images))]

    def _segment_batch(self, images: Sequence[np.ndarray]) -> List[Segments]:
        import torch
        from PIL import Image

        pictures = [Image.fromarray(image) for image in images]
        if self.network.config.model_type == "oneformer":
            inputs = self.processor(images=pictures, task_inputs=["panoptic"] * len(pictures), return_tensors="pt")
        else:
            inputs = self.processor(images=pictures, return_tensors="pt")
        inputs = inputs.to(device=self.network.device, dtype=self.network.dtype)
        with torch.no_grad():
            outputs = self.network(**inputs)
        results = self.processor.post_process_panoptic_segmentation(
            outputs,
            threshold=self.options.threshold,
            mask_threshold=self.options.mask_threshold,
            overlap_mask_area_threshold=self.options.overlap_mask_area_threshold,
            label_ids_to_fuse=self.stuff_ids,
            target_sizes=[image.shape[:2] for image in images],
        )
        return [self._to_segments(result) for result in results]

    def _to_segments(self, result: Dict[str, Any]) -> Segments:
        """Renumber the post-processor's segment ids 1..N. Its map is 0 where no segment won a pixel, or -1
        everywhere when no query passed the threshold; a fused stuff segment is listed once per merged query."""
        segmentation = result["segmentation"].cpu().numpy().astype(np.int64)
        ids: Dict[int, int] = {}
        scores: List[float] = []
        labels: List[int] = []
        for info in result["segments_info"]:
            if info["id"] in ids:
                k = ids[info["id"]]
                scores[k] = max(scores[k], float(info["score"]))
                continue
            ids[info["id"]] = len(scores)
            scores.append(float(info["score"]))
            labels.append(int(info["label_id"]))
        lookup = np.zeros(max(segmentation.max(initial=0), max(ids, default=0)) + 1, dtype=np.int32)
        for segment_id, k in ids.items():
            lookup[segment_id] = k + 1
        return Segments(
            scores=np.asarray(scores, dtype=np.float32),
            labels=lookup[np.maximum(segmentation, 0)],
            thing_class=self._thing_index[np.asarray(labels, dtype=np.int64)],
        )


def load_hf_segmenter(model: str, device: str, sam: SamOptions, panoptic: PanopticOptions) -> Segmenter:
    """The segmenter of ``--model`` (a local model folder or a Hugging Face hub id) on ``device`` (cpu, cuda)."""
    try:
        import transformers
    except ImportError:
        message = f"--model {model} needs Hugging Face transformers: pip install 'unic-lift-ns[masks]'"
        raise InputError(message) from None
    config = _config(model)
    revision = getattr(config, "_commit_hash", None)
    model_type = config.model_type
    if model_type not in ("sam", *PANOPTIC_TYPES):
        raise InputError(_not_a_segmenter(model, model_type))
    sam_model = model_type == "sam"
    auto_model = (
        transformers.AutoModelForMaskGeneration if sam_model else transformers.AutoModelForUniversalSegmentation
    )
    # OneFormer's processor also tokenizes the task ("the task is panoptic") its model reads
    auto_processor = transformers.AutoProcessor if model_type == "oneformer" else transformers.AutoImageProcessor
    try:
        processor = auto_processor.from_pretrained(model)
        network = auto_model.from_pretrained(model).to(device)
    except Exception as error:  # noqa: BLE001 - any failure to load the files is one line naming --model
        raise InputError(f"--model {model}: cannot load the {model_type} model ({_first_line(error)})") from None
    if sam_model:
        generator = transformers.pipeline("mask-generation", model=network, image_processor=processor, device=device)
        return SamSegmenter(model, revision, generator, sam)
    return PanopticSegmenter(model, revision, processor, network, panoptic)


def _config(model: str) -> Any:
    """The model's ``transformers`` config, or an InputError saying why there is none."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as error:
        if not os.path.isdir(model):
            raise InputError(_not_found(model)) from None
        config_file = os.path.join(model, "config.json")
        if not os.path.isfile(config_file):
            raise InputError(_not_a_segmenter(model, None)) from None
        try:
            with open(config_file, encoding="utf-8") as f:
                model_type = json.load(f).get("model_type")
        except (OSError, ValueError, AttributeError):
            model_type = None
        if isinstance(model_type, str):  # a model type this transformers version does not know
            raise InputError(_not_a_segmenter(model, model_type)) from None
        raise InputError(f"--model {model}: unreadable {config_file} ({_first_line(error)})") from None


def _not_found(model: str) -> str:
    """Why ``model`` is neither a folder nor a cached hub model, and how to get it."""
    if HUB_ID.fullmatch(model):
        how = (
            f"; on a machine with internet run `hf download {model}` (or `huggingface-cli download {model}`), then "
            "copy its Hugging Face cache ($HF_HOME/hub, by default ~/.cache/huggingface/hub) here or pass the folder "
            f"`hf download {model} --local-dir DIR` wrote"
        )
    else:
        how = " (no such folder); pass a folder written by save_pretrained or by `hf download ID --local-dir DIR`"
    where = "is neither a local model folder nor in the Hugging Face cache"
    return f"--model {model} {where}{how}, or use --model {CLASSICAL}"


def _not_a_segmenter(model: str, model_type: Optional[str]) -> str:
    """The error of a model folder that holds no segmenter (``model_type`` None: no config.json)."""
    what = "a folder without a config.json" if model_type is None else f"a '{model_type}' model"
    return f"--model {model} is {what}, not a segmenter ({SUPPORTED})"


def _first_line(error: BaseException) -> str:
    """The first line of an exception's message, for one-line errors."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
