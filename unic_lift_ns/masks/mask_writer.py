"""`unic-lift-masks`: per-view instance (and semantic) masks for a capture, in the format the datamanager reads.

Images come from ``DATA/transforms.json`` (what ``ns-process-data`` writes), else ``DATA/images/``, else DATA
itself. Masks go where training looks for them: ``instance_masks/`` and ``semantic_masks/`` beside the images'
folder (``scene/images/x.jpg`` -> ``scene/instance_masks/x.png``), as 16-bit PNGs (0 = unlabelled, IDs per view)
and 8-bit PNGs (0 = background/stuff, 1.. = things, 255 = unlabelled). ``instance_masks/masks.json`` records the
model, its revision, every option and each view written: a rerun skips those views, and ``--overwrite`` replaces
only files it lists.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple

import numpy as np
import torch
from nerfstudio.process_data.process_data_utils import ALLOWED_RAW_EXTS, list_images
from nerfstudio.utils.rich_utils import CONSOLE
from PIL import Image
from tqdm import tqdm

from unic_lift_ns.data.dataset import mask_folder
from unic_lift_ns.data.label_maps import LABEL_MAP_SUFFIXES, write_label_map
from unic_lift_ns.errors import InputError, few
from unic_lift_ns.masks.classical import ClassicalOptions, ClassicalSegmenter
from unic_lift_ns.masks.hf_segmenters import PanopticOptions, SamOptions, load_hf_segmenter
from unic_lift_ns.masks.segmenter import CLASSICAL, Segmenter
from unic_lift_ns.masks.segments import LabelMaps, paint_label_maps

RECORD = "masks.json"
"""File in the instance mask folder that records how its masks were made."""
NOT_COMPARED = ("data", "overwrite", "device", "batch_size")
"""Options that do not change the masks: a rerun may differ in them and still resume."""


@dataclass
class MasksConfig:
    """Write instance masks (and, with a panoptic model, semantic masks) for every image of a capture."""

    data: Path
    """A nerfstudio data folder (with transforms.json, e.g. from ns-process-data), or a folder of images."""
    model: str = "facebook/mask2former-swin-base-coco-panoptic"
    """The 2D segmenter. Needing weights (a Hugging Face model id, from the hub's cache, or a local model folder):
    panoptic Mask2Former / MaskFormer / OneFormer models (objects plus thing/stuff classes, so semantic masks too;
    the default) and Segment Anything (e.g. facebook/sam-vit-base: class-agnostic masks of everything). Needing
    none: 'classical', scikit-image superpixels merged by colour, LOW QUALITY (segments follow colour, not
    objects), for machines with no model at all."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Where the model runs; auto = CUDA when available."""
    batch_size: int = 4
    """Images per forward pass."""
    downscale: int = 1
    """Segment at 1/N of the image size, the resolution training uses with --downscale-factor N (reads
    images_N/ where ns-process-data wrote it)."""
    embedding_dim: int = 12
    """The model's --pipeline.model.embedding-dim d: at most 2^d - 1 segments are kept per view."""
    min_area: int = 64
    """Segments with fewer pixels (at the segmented size) are dropped; their pixels stay unlabelled."""
    fill_holes_below: int = 64
    """Unlabelled regions of at most this many pixels enclosed by one segment join it; 0 = never."""
    overlap_order: Literal["area", "score"] = "area"
    """Who wins where masks overlap: 'area' = the smaller mask (objects stay on top of what contains them),
    'score' = the more confident one."""
    per_class_semantics: bool = False
    """Semantic masks with one ID per thing class (1..K; train with --pipeline.model.num-semantic-classes K+1)
    instead of 1 for every thing (the default model's 2 classes: background, object)."""
    instance_mask_dir: Path = Path("instance_masks")
    """Instance mask folder, relative to the parent of the images' folder (as the datamanager's flag)."""
    semantic_mask_dir: Path = Path("semantic_masks")
    """Semantic mask folder, located the same way."""
    overwrite: bool = False
    """Rewrite views already written (only files masks.json lists; masks this tool did not write are kept)."""
    sam: SamOptions = field(default_factory=SamOptions)
    """Segment Anything settings."""
    panoptic: PanopticOptions = field(default_factory=PanopticOptions)
    """Mask2Former / MaskFormer / OneFormer settings."""
    classical: ClassicalOptions = field(default_factory=ClassicalOptions)
    """Settings of --model classical."""

    def main(self) -> None:
        """Check the inputs, load the segmenter, and write the masks of every view not written yet."""
        for name in ("batch_size", "downscale", "embedding_dim"):
            if getattr(self, name) < 1:
                raise InputError(f"--{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.embedding_dim > 16:
            raise InputError(f"--embedding-dim {self.embedding_dim}: 16-bit masks hold at most 2^16 - 1 segments")
        images = find_images(self.data)
        folder = _one_folder(images, self.instance_mask_dir)
        semantic_folder = mask_folder(images[0], self.semantic_mask_dir)
        record = _read_record(folder / RECORD)
        options = self.options()
        todo = self._views_to_write(images, folder, semantic_folder, record, options)
        if not todo:
            CONSOLE.print(f"All {len(images)} views already have masks in {folder} ({RECORD}); nothing to do.")
            return
        segmenter = self.load_segmenter()
        previous = dict(record.get("views", {}))
        if not _same_masks(record, self.model, options):  # --overwrite with other options: a new record
            record = {"model": self.model, "revision": segmenter.revision, "options": options, "views": previous}
        record["thing_classes"] = segmenter.thing_classes
        if segmenter.thing_classes is not None:
            record["num_semantic_classes"] = len(segmenter.thing_classes) + 1 if self.per_class_semantics else 2
        capped, empty = [], []
        progress = tqdm(total=len(todo), unit="image", desc=f"unic-lift-masks ({self.model})")
        for start in range(0, len(todo), self.batch_size):
            batch = todo[start : start + self.batch_size]
            pixels = [self.read_image(path) for path in batch]
            for path, segments in zip(batch, segmenter.segment(pixels)):
                maps = paint_label_maps(
                    segments,
                    min_area=self.min_area,
                    max_segments=2**self.embedding_dim - 1,
                    fill_holes_below=self.fill_holes_below,
                    order=self.overlap_order,
                    per_class=self.per_class_semantics,
                )
                entry = _write_view(path.stem, maps, folder, semantic_folder, previous.get(path.stem, {}))
                record["views"][path.stem] = entry
                capped += [path.stem] if maps.num_dropped else []
                empty += [] if maps.instance.any() else [path.stem]
            _write_json(folder / RECORD, record)
            progress.update(len(batch))
        progress.close()
        self._report(len(todo), len(images) - len(todo), folder, record, capped, empty)

    def options(self) -> Dict[str, Any]:
        """Every option, as recorded in masks.json (paths as strings)."""
        return json.loads(json.dumps(asdict(self), default=str))

    def load_segmenter(self) -> Segmenter:
        """The backend ``--model`` names, on ``--device``."""
        if self.model == CLASSICAL:
            return ClassicalSegmenter(self.classical)
        device = ("cuda" if torch.cuda.is_available() else "cpu") if self.device == "auto" else self.device
        if device == "cuda" and not torch.cuda.is_available():
            raise InputError("--device cuda: no CUDA device is available (use --device cpu)")
        return load_hf_segmenter(self.model, device, self.sam, self.panoptic)

    def read_image(self, path: Path) -> np.ndarray:
        """The uint8 RGB image of ``path`` at 1/``downscale`` of its size (ns-process-data's images_N/ when there)."""
        source = path
        if self.downscale > 1:
            downscaled = path.parent.with_name(f"{path.parent.name}_{self.downscale}") / path.name
            source = downscaled if downscaled.is_file() else path
        try:
            with Image.open(source) as image:
                image = image.convert("RGB")
                if source == path and self.downscale > 1:
                    size = (max(1, image.width // self.downscale), max(1, image.height // self.downscale))
                    image = image.resize(size, Image.Resampling.LANCZOS)
                return np.asarray(image)
        except OSError as err:
            raise InputError(f"Cannot read image {source}: {err}") from err

    def _views_to_write(
        self, images: List[Path], folder: Path, semantic_folder: Path, record: Dict, options: Dict
    ) -> List[Path]:
        """Views without this tool's masks (all with --overwrite); refuses to touch masks it did not write and to
        mix masks made with other options."""
        ours = set(record.get("views", {}))
        foreign = [
            str(path)
            for image in images
            for f in (folder, semantic_folder)
            for path in (f / f"{image.stem}{suffix}" for suffix in LABEL_MAP_SUFFIXES)
            if path.exists() and image.stem not in ours
        ]
        if foreign:
            raise InputError(
                f"{len(foreign)} mask file(s) exist that unic-lift-masks did not write ({folder / RECORD} does not "
                f"list them): {few(foreign)}. Move them away or write elsewhere with --instance-mask-dir and "
                "--semantic-mask-dir; they are never overwritten."
            )
        if ours and not self.overwrite and not _same_masks(record, self.model, options):
            old = record.get("options", {})
            changed = sorted(k for k in _compared(old) | _compared(options) if old.get(k) != options.get(k))
            raise InputError(
                f"{folder / RECORD} records masks made with other options ({', '.join(changed)}): pass --overwrite "
                "to replace them, or the same options to resume"
            )
        if self.overwrite:
            return images
        return [image for image in images if image.stem not in ours]

    def _report(
        self, written: int, skipped: int, folder: Path, record: Dict, capped: List[str], empty: List[str]
    ) -> None:
        if capped:
            CONSOLE.print(
                f"{len(capped)} view(s) had more than 2^{self.embedding_dim} - 1 segments; the largest were kept: "
                f"{few(capped)}",
                style="yellow", markup=False, soft_wrap=True,
            )  # fmt: skip
        if empty:
            CONSOLE.print(
                f"{len(empty)} view(s) got no segment and no mask file (they train RGB only): {few(empty)}",
                style="yellow", markup=False, soft_wrap=True,
            )  # fmt: skip
        flags = ""
        if record.get("num_semantic_classes", 2) != 2:
            flags += f" --pipeline.model.num-semantic-classes {record['num_semantic_classes']}"
        if self.downscale > 1:
            flags += f" nerfstudio-data --downscale-factor {self.downscale}"
        CONSOLE.print(
            f"Wrote masks of {written} view(s) to {folder} (skipped {skipped} already written). Train with: "
            f"ns-train unic-lift --data {self.data}{flags}",
            markup=False, soft_wrap=True,
        )  # fmt: skip


def find_images(data: Path) -> List[Path]:
    """The images of ``data``: transforms.json's frames, else ``data/images/*``, else ``data/*``."""
    if not data.is_dir():
        raise InputError(f"--data {data} is not a folder")
    transforms = data / "transforms.json"
    if transforms.is_file():
        try:
            frames = json.loads(transforms.read_text())["frames"]
            images = [data / frame["file_path"] for frame in frames]
        except (ValueError, KeyError, TypeError) as err:
            raise InputError(f"Cannot read the frames of {transforms}: {err!r}") from err
        missing = [str(path) for path in images if not path.is_file()]
        if missing:
            raise InputError(f"{transforms} lists {len(missing)} image(s) that do not exist: {few(missing)}")
    else:
        folder = data / "images" if (data / "images").is_dir() else data
        images = [p for p in list_images(folder, recursive=False) if p.suffix.lower() not in ALLOWED_RAW_EXTS]
    if not images:
        raise InputError(f"--data {data}: no images found (looked for transforms.json, {data / 'images'} and images in it)")
    for path in images:  # headers only: a file that is no image is named before any work
        try:
            with Image.open(path):
                pass
        except OSError as err:
            raise InputError(f"Cannot read image {path}: {err}") from err
    return images


def _one_folder(images: List[Path], mask_dir: Path) -> Path:
    """The one instance mask folder of ``images``, whose stems must be unique."""
    folders = sorted({mask_folder(image, mask_dir) for image in images})
    if len(folders) > 1:
        raise InputError(f"The images lie in folders whose masks go to {len(folders)} places ({few([str(f) for f in folders])}): run once per image folder")
    stems = [image.stem for image in images]
    repeated = sorted({stem for stem in stems if stems.count(stem) > 1})
    if repeated:
        raise InputError(f"Images share file stems, so their masks would share files: {few(repeated)}")
    return folders[0]


def _read_record(path: Path) -> Dict:
    """masks.json, or an empty record where there is none."""
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise InputError(f"Cannot read {path}: {err}; move it away to start afresh") from err
    if not isinstance(record, dict) or not isinstance(record.get("views", {}), dict):
        raise InputError(f"{path} is not a unic-lift-masks record; move it away to start afresh")
    return record


def _same_masks(record: Dict, model: str, options: Dict[str, Any]) -> bool:
    """Whether ``record`` holds masks that ``model`` with ``options`` makes (ignoring NOT_COMPARED options)."""
    old = record.get("options", {})
    return record.get("model") == model and all(old.get(k) == options.get(k) for k in _compared(old) | _compared(options))


def _compared(options: Dict[str, Any]) -> set:
    return set(options) - set(NOT_COMPARED)


def _write_view(stem: str, maps: LabelMaps, folder: Path, semantic_folder: Path, previous: Dict) -> Dict[str, Any]:
    """Write one view's masks (none when it has no segment) and return its masks.json entry; a file this tool wrote
    before for the view (``previous`` entry) that the new masks do not replace is removed."""
    entry: Dict[str, Any] = {
        "size": [int(maps.instance.shape[1]), int(maps.instance.shape[0])],
        "segments": int(maps.instance.max(initial=0)),
        "candidates": maps.num_candidates,
        "dropped": maps.num_dropped,
        "instance": None,
        "semantic": None,
    }
    targets: List[Tuple[str, Path, Optional[np.ndarray], int]] = [
        ("instance", folder / f"{stem}.png", maps.instance, 16),
        ("semantic", semantic_folder / f"{stem}.png", maps.semantic, 8),
    ]
    for key, path, labels, bits in targets:
        if labels is not None and maps.instance.any():
            path.parent.mkdir(parents=True, exist_ok=True)
            _atomic(path, lambda tmp: write_label_map(tmp, labels, bit_depth=bits))
            entry[key] = str(path.relative_to(folder.parent))
        elif previous.get(key):
            (folder.parent / previous[key]).unlink(missing_ok=True)
    return entry


def _write_json(path: Path, record: Dict) -> None:
    _atomic(path, lambda tmp: tmp.write_text(json.dumps(record, indent=2)))


def _atomic(path: Path, write) -> None:
    """Write through a temporary file beside ``path`` and rename it, so an interrupted run leaves no half file."""
    tmp = path.with_name(f".{path.stem}.tmp{path.suffix}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
