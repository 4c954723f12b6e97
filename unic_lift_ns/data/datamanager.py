"""Full-image datamanager that serves UniC-Lift's instance and semantic masks with each image.

Masks go through the same steps as their image: nearest-neighbour resizing to the loaded image size (see
:class:`~unic_lift_ns.data.dataset.SegmentationDataset`), undistortion of perspective cameras with the image's new
intrinsics and crop (nearest-neighbour), caching and moving to the model's device.
"""

from __future__ import annotations

import json
import random
from copy import deepcopy
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import cv2
import numpy as np
import torch

from nerfstudio.cameras.cameras import Cameras
from nerfstudio.configs.dataparser_configs import AnnotatedDataParserUnion
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanager, FullImageDatamanagerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.utils.rich_utils import CONSOLE
from unic_lift_ns.data.dataset import MASK_IGNORE_VALUES, SegmentationDataset
from unic_lift_ns.data.label_maps import LABEL_MAP_SUFFIXES, number_segments
from unic_lift_ns.errors import InputError, few
from unic_lift_ns.flag_ranges import ANY, AT_LEAST_0, AT_LEAST_1, POSITIVE, Range, check_flag_ranges


DATA_READ_ERRORS = (
    FileNotFoundError, json.JSONDecodeError, KeyError, IndexError, TypeError, UnicodeDecodeError, AssertionError
)
"""What nerfstudio's dataparsers raise on missing or malformed data: no transforms.json, truncated JSON, a missing
key (``frames``, a frame's ``transform_matrix``), an assertion on its content ("fx not specified in frame")."""


@dataclass
class SegmentationDataManagerConfig(FullImageDatamanagerConfig):
    """Full images with per-view instance masks (and optional semantic masks), for any dataparser."""

    _target: Type = field(default_factory=lambda: SegmentationDataManager)
    dataparser: AnnotatedDataParserUnion = field(
        default_factory=lambda: NerfstudioDataParserConfig(load_3D_points=True)
    )
    """Any dataparser works: masks are looked up by image file name only."""
    cache_images: Literal["cpu", "gpu"] = "gpu"
    """Where images and masks are cached: "gpu" means on the model's device (the CPU on a machine without
    CUDA), "cpu" in pinned host memory (plain host memory without CUDA), copied to the device per batch."""
    instance_mask_dir: Path = Path("instance_masks")
    """Folder of the per-view instance masks (<image stem>.png, 8/16-bit, or .npy; 0 = ignore), relative to the
    parent of each image's folder (DATA/images/x.png -> DATA/instance_masks/x.png), or absolute."""
    semantic_mask_dir: Optional[Path] = Path("semantic_masks")
    """Folder of the semantic masks (255 = ignore), located like instance_mask_dir and used only where it exists;
    None disables semantic masks."""
    mask_fraction: float = 1.0
    """Keep the masks (instance and semantic) of only this fraction of the train views that have one, chosen with
    mask_seed; the others train on RGB only. Eval views keep theirs."""
    mask_seed: int = 0
    """Seed of the choice of train views that keep their masks when mask_fraction < 1."""
    mask_scale: float = 1.0
    """Train on masks resampled to this fraction of the image size and back (nearest): the paper's low-resolution
    mask ablation (Fig. 8: 0.5, 0.25). Eval views keep theirs."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        # FullImageDatamanager's numeric fields (-1 = every eval image, repeated forever)
        "camera_res_scale_factor": POSITIVE, "eval_num_images_to_sample_from": Range(-1),
        "eval_num_times_to_repeat_images": Range(-1), "eval_image_indices": AT_LEAST_0,
        "max_thread_workers": AT_LEAST_1, "train_cameras_sampling_seed": ANY, "fps_reset_every": AT_LEAST_1,
        # the masks
        "mask_fraction": Range(0, 1, open_low=True), "mask_seed": AT_LEAST_0, "mask_scale": Range(0, 1, open_low=True),
    }  # fmt: skip
    """Allowed values of the numeric fields (:mod:`unic_lift_ns.flag_ranges`), checked before any data loads."""

    def data_path(self) -> Path:
        """What the dataparser reads: ``--data`` where given, else the dataparser's own ``data``."""
        return self.data or self.dataparser.data


class SegmentationDataManager(FullImageDatamanager[SegmentationDataset]):
    """FullImageDatamanager whose batches also hold ``instance_mask`` and, where present, ``semantic_mask``
    (int64 [H, W] on the model's device). Views without a mask file train on RGB only."""

    config: SegmentationDataManagerConfig

    def __init__(
        self,
        config: SegmentationDataManagerConfig,
        device: torch.device | str = "cpu",
        test_mode: Literal["test", "val", "inference"] = "val",
        world_size: int = 1,
        local_rank: int = 0,
        **kwargs,
    ):
        check_flag_ranges(config, "--pipeline.datamanager.")
        data = config.data_path()
        try:
            super().__init__(config, device, test_mode, world_size, local_rank, **kwargs)
        except DATA_READ_ERRORS as err:
            hint = " (no --data given?)" if data == Path() else ""
            raise InputError(
                f"--data {data}{hint}: {type(config.dataparser).__name__.removesuffix('Config')} cannot read it "
                f"({type(err).__name__}: {err})"
            ) from err
        # The model's collision split (split_collisions) projects the Gaussians into the train views; the same object
        # that undistortion updates in place.
        self.train_dataset.metadata["train_cameras"] = self.train_dataset.cameras
        self.train_dataset.metadata["train_instance_masks"] = self.train_instance_masks  # read by the mask split
        if test_mode == "inference":
            self.train_dataset.metadata.update(segment_counts={}, semantic_max_ids={})
            return
        folders = ", ".join(str(folder) for folder in self.train_dataset.instance_mask_folders)
        if not any(self.train_dataset.instance_mask_paths):
            state = "has no masks for them" if any(f.is_dir() for f in self.train_dataset.instance_mask_folders) else "does not exist"
            raise FileNotFoundError(
                f"No instance mask for any of the {len(self.train_dataset)} train images: mask folder {folders} "
                f"{state}. Put <image stem>.png or .npy masks there or point --pipeline.datamanager.instance-mask-dir "
                "to them."
            )
        # Read every image and mask now, so that a bad file stops the run before the first step, not during it.
        self.cached_train, self.cached_eval  # noqa: B018 (cached properties)
        if not any(self.segment_counts.values()):
            raise InputError(
                f"Every train instance mask in {folders} ({len(self.segment_counts)} files) is all 0, which means "
                "'ignore': there is no instance to learn. Masks need a non-zero ID per segment (0 = unlabelled)."
            )
        # The model reads these from its metadata to refuse masks its embedding or semantic head cannot hold.
        self.train_dataset.metadata.update(segment_counts=self.segment_counts, semantic_max_ids=self.semantic_max_ids)
        stray = self.stray_masks()
        if stray:
            names = few([str(path) for path in stray])
            CONSOLE.print(f"{len(stray)} mask file(s) match no train or eval image and are not used: {names}",
                          style="yellow", markup=False, soft_wrap=True)  # fmt: skip
        summaries = [_mask_summary("train", self.train_dataset, self.cached_train),
                     _mask_summary("eval", self.eval_dataset, self.cached_eval)]  # fmt: skip
        CONSOLE.log(f"UniC-Lift masks: {'; '.join(summaries)} (views without instance IDs use RGB only)")

    def create_train_dataset(self) -> SegmentationDataset:
        return self.dataset_type(
            dataparser_outputs=self.train_dataparser_outputs,
            scale_factor=self.config.camera_res_scale_factor,
            instance_mask_dir=self.config.instance_mask_dir,
            semantic_mask_dir=self.config.semantic_mask_dir,
            mask_fraction=self.config.mask_fraction,
            mask_seed=self.config.mask_seed,
            mask_scale=self.config.mask_scale,
        )

    def create_eval_dataset(self) -> SegmentationDataset:
        return self.dataset_type(
            dataparser_outputs=self.dataparser.get_dataparser_outputs(split=self.test_split),
            scale_factor=self.config.camera_res_scale_factor,
            instance_mask_dir=self.config.instance_mask_dir,
            semantic_mask_dir=self.config.semantic_mask_dir,
        )

    def train_instance_masks(self) -> List[Optional[torch.Tensor]]:
        """Each train view's instance mask as the losses see it (undistorted, segments 1..K, 0 = unlabelled), or None
        for a view without one; reads the train images on first use."""
        return [data.get("instance_mask") for data in self.cached_train]

    @cached_property
    def segment_counts(self) -> Dict[Path, int]:
        """Number of distinct non-zero instance IDs in each train mask file in use, at the size it trains at."""
        return {
            path: int(np.count_nonzero(torch.unique(data["instance_mask"]).cpu().numpy()))
            for path, data in zip(self.train_dataset.instance_mask_paths, self.cached_train)
            if path is not None
        }

    @cached_property
    def semantic_max_ids(self) -> Dict[Path, int]:
        """Largest semantic class id (ignore value excluded) of each train semantic mask in use."""
        ignore = MASK_IGNORE_VALUES["semantic_mask"]
        largest = {}
        for path, data in zip(self.train_dataset.semantic_mask_paths, self.cached_train):
            classes = data["semantic_mask"][data["semantic_mask"] != ignore] if path is not None else None
            if classes is not None and classes.numel():
                largest[path] = int(classes.max())
        return largest

    def stray_masks(self) -> List[Path]:
        """Mask files in the mask folders whose stem is no train or eval image's: they are never used."""
        stems = {Path(path).stem for dataset in (self.train_dataset, self.eval_dataset) for path in dataset.image_filenames}
        folders = sorted(set(self.train_dataset.instance_mask_folders) | set(self.train_dataset.semantic_mask_folders))
        return [
            path
            for folder in folders
            if folder.is_dir()
            for path in sorted(folder.iterdir())
            if path.suffix in LABEL_MAP_SUFFIXES and path.stem not in stems
        ]

    def get_extra_state(self) -> Dict[str, Any]:
        """The random state of training, saved in checkpoints so that a resumed run continues exactly: the order of
        the train views still to visit, the view sampler, and the global generators (random backgrounds,
        densification's samples)."""
        numpy_state = np.random.get_state()
        return {
            "train_unseen_cameras": list(self.train_unseen_cameras),
            "sampler": getattr(self, "random_generator", random.Random()).getstate(),
            "python": random.getstate(),
            "numpy": (numpy_state[0], torch.from_numpy(numpy_state[1].astype(np.int64)), *numpy_state[2:]),
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        if any(not 0 <= i < len(self.train_dataset) for i in state["train_unseen_cameras"]):
            return  # a checkpoint of other data (e.g. viewed with a different dataset): keep this run's state
        self.train_unseen_cameras = list(state["train_unseen_cameras"])
        self.random_generator = random.Random()
        self.random_generator.setstate(state["sampler"])
        random.setstate(state["python"])
        name, keys, *rest = state["numpy"]
        np.random.set_state((name, keys.numpy().astype(np.uint32), *rest))
        torch.set_rng_state(state["torch"])
        if state["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])

    def _load_images(
        self, split: Literal["train", "eval"], cache_images_device: Literal["cpu", "gpu"]
    ) -> List[Dict[str, torch.Tensor]]:
        """Cache images as nerfstudio does, then undistort, crop and place the masks like their images; number each
        instance mask's segments 1..K (the losses' fixed segment slots, see ``number_segments``)."""
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        distorted_cameras = deepcopy(dataset.cameras)
        if cache_images_device == "cpu" and not torch.cuda.is_available():
            cache_images_device = "gpu"  # pinning needs CUDA; without it the device is the CPU anyway
        cache = super()._load_images(split, cache_images_device)
        for idx, data in enumerate(cache):
            camera = distorted_cameras[idx].reshape(())
            distortion = camera.distortion_params
            if distortion is not None and torch.any(distortion != 0):
                _undistort_masks(data, camera)
            if "instance_mask" in data:  # ids 1..K: the losses' segment slots (segment_counts gives K)
                data["instance_mask"] = number_segments(data["instance_mask"])[0]
            for key in MASK_IGNORE_VALUES:
                if key not in data:
                    continue
                assert data[key].shape == data["image"].shape[:2], f"{key} of view {idx} does not match its image"
                data[key] = data[key].pin_memory() if cache_images_device == "cpu" else data[key].to(self.device)
        return cache

    def next_train(self, step: int) -> Tuple[Cameras, Dict]:
        camera, data = super().next_train(step)
        return camera, self._masks_to_device(data)

    def next_eval_image(self, step: int) -> Tuple[Cameras, Dict]:
        camera, data = super().next_eval_image(step)
        return camera, self._masks_to_device(data)

    @property
    def fixed_indices_eval_dataloader(self) -> List[Tuple[Cameras, Dict]]:
        return [(camera, self._masks_to_device(data)) for camera, data in super().fixed_indices_eval_dataloader]

    def _masks_to_device(self, data: Dict) -> Dict:
        """Move the masks of a (copied) batch to the model's device, as nerfstudio does with the image."""
        for key in MASK_IGNORE_VALUES:
            if key in data:
                data[key] = data[key].to(self.device)
        return data


def _undistort_masks(data: Dict, camera: Cameras) -> None:
    """Undistort a view's masks in place exactly like nerfstudio undistorts its perspective image (same new
    intrinsics and crop), but with nearest-neighbour sampling; pixels that map outside the mask get the ignore value."""
    if not any(key in data for key in MASK_IGNORE_VALUES):
        return
    k1, k2, k3, k4, p1, p2 = camera.distortion_params.tolist()
    opencv_distortion = np.array([k1, k2, p1, p2, k3, k4, 0.0, 0.0])
    intrinsics = camera.get_intrinsics_matrices().numpy()
    intrinsics[:2, 2] -= 0.5  # OpenCV puts pixel centres at integer coordinates
    size = (int(camera.width.item()), int(camera.height.item()))
    new_intrinsics, (x, y, w, h) = cv2.getOptimalNewCameraMatrix(intrinsics, opencv_distortion, size, 0)
    map_x, map_y = cv2.initUndistortRectifyMap(intrinsics, opencv_distortion, None, new_intrinsics, size, cv2.CV_32FC1)
    cols = torch.from_numpy(np.rint(map_x[y : y + h, x : x + w])).long()
    rows = torch.from_numpy(np.rint(map_y[y : y + h, x : x + w])).long()
    inside = (cols >= 0) & (cols < size[0]) & (rows >= 0) & (rows < size[1])
    for key, ignore in MASK_IGNORE_VALUES.items():
        if key in data:
            undistorted = torch.full((h, w), ignore, dtype=torch.int64)
            undistorted[inside] = data[key][rows[inside], cols[inside]]
            data[key] = undistorted


def _mask_summary(split: str, dataset: SegmentationDataset, cache: List[Dict[str, torch.Tensor]]) -> str:
    """How many views of a split have instance IDs, no mask (RGB only), an all-0 mask, and a semantic mask."""
    num_without = sum(path is None for path in dataset.instance_mask_paths)
    num_empty = sum(bool("instance_mask" in data and not data["instance_mask"].any()) for data in cache)
    num_semantic = sum(path is not None for path in dataset.semantic_mask_paths)
    dropped = f" ({dataset.num_dropped_masks} dropped by mask_fraction)" if dataset.num_dropped_masks else ""
    return (
        f"{len(dataset) - num_without - num_empty} of {len(dataset)} {split} views with instance IDs, "
        f"{num_without} without a mask{dropped}, {num_empty} with an all-0 mask, {num_semantic} with a semantic mask"
    )


UniCLiftDataManagerConfig = SegmentationDataManagerConfig
UniCLiftDataManager = SegmentationDataManager
"""The names that config.yml files written before #28 give these classes (``tests/test_old_configs.py`` loads such
files); new code uses the Segmentation names."""
