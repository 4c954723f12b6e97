"""Dataset that adds per-view instance and semantic masks to nerfstudio's images.

Masks are found by image file stem in folders beside each image's folder (``DATA/images/frame_00001.png``
-> ``DATA/instance_masks/frame_00001.png`` or ``.npy``; the same for ``DATA/images_2/...``), so any dataparser
works. They are resized with nearest-neighbour sampling to the size the image is loaded at.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch import Tensor

from nerfstudio.cameras.cameras import CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from unic_lift_ns.data.label_maps import LABEL_MAP_SUFFIXES, read_label_map, resize_label_map, same_aspect
from unic_lift_ns.errors import InputError

MASK_IGNORE_VALUES = {"instance_mask": 0, "semantic_mask": 255}
"""Batch keys of the masks and the value that marks their unlabelled pixels."""


class SegmentationDataset(InputDataset):
    """Images plus ``instance_mask`` (int64 [H, W], 0 = ignore) and, where present, ``semantic_mask``
    (int64 [H, W], 255 = ignore). A view without a mask file simply has no such key.

    Args:
        dataparser_outputs: description of where and how to read input images.
        scale_factor: the scaling factor for the dataparser outputs.
        instance_mask_dir: instance mask folder, relative to the parent of each image's folder, or absolute.
        semantic_mask_dir: semantic mask folder, located the same way; None for no semantic masks.
        mask_fraction: keep the masks of only this (seeded) fraction of the views that have one.
        mask_seed: seed of the choice of views that keep their masks.
        mask_scale: resample masks to this fraction of the image size and back (nearest), simulating coarse masks.

    Attributes:
        instance_mask_folders: folders searched for instance masks (usually one).
        semantic_mask_folders: folders searched for semantic masks (none without semantic_mask_dir).
        instance_mask_paths: instance mask file of each view, None where it has none.
        semantic_mask_paths: semantic mask file of each view, None where it has none.
        num_dropped_masks: number of views whose masks were dropped because of mask_fraction.
    """

    def __init__(
        self,
        dataparser_outputs: DataparserOutputs,
        scale_factor: float = 1.0,
        instance_mask_dir: Path = Path("instance_masks"),
        semantic_mask_dir: Optional[Path] = Path("semantic_masks"),
        mask_fraction: float = 1.0,
        mask_seed: int = 0,
        mask_scale: float = 1.0,
    ):
        super().__init__(dataparser_outputs, scale_factor)
        if not 0.0 < mask_fraction <= 1.0:
            raise InputError(f"--pipeline.datamanager.mask-fraction must be in (0, 1], got {mask_fraction}")
        if not 0.0 < mask_scale <= 1.0:
            raise InputError(f"--pipeline.datamanager.mask-scale must be in (0, 1], got {mask_scale}")
        self.mask_scale = mask_scale
        self.instance_mask_folders = sorted({mask_folder(path, instance_mask_dir) for path in self.image_filenames})
        self.semantic_mask_folders = (
            [] if semantic_mask_dir is None else sorted({mask_folder(p, semantic_mask_dir) for p in self.image_filenames})
        )
        self.instance_mask_paths = self._find_masks(instance_mask_dir)
        self.semantic_mask_paths = self._find_masks(semantic_mask_dir)
        self.num_dropped_masks = self._keep_fraction(mask_fraction, mask_seed)
        self._refuse_non_perspective_cameras()
        # The full-image datamanager undistorts into these cameras in place (OPENCV: a smaller image); files on disk
        # keep the dataparser's sizes.
        self._file_sizes = torch.stack([self.cameras.height, self.cameras.width], dim=-1).reshape(-1, 2).clone()

    def _find_masks(self, mask_dir: Optional[Path]) -> List[Optional[Path]]:
        """The ``<image stem>.png`` (else ``.npy``) mask of each view in ``mask_dir``, None where there is none."""
        if mask_dir is None:
            return [None] * len(self)
        paths: List[Optional[Path]] = []
        for image_path in self.image_filenames:
            folder = mask_folder(image_path, mask_dir)
            candidates = (folder / f"{image_path.stem}{suffix}" for suffix in LABEL_MAP_SUFFIXES)
            paths.append(next((path for path in candidates if path.is_file()), None))
        return paths

    def _keep_fraction(self, mask_fraction: float, mask_seed: int) -> int:
        """Drop both masks of all but a seeded ``mask_fraction`` of the views with an instance mask."""
        with_masks = [i for i, path in enumerate(self.instance_mask_paths) if path is not None]
        num_kept = max(1, round(mask_fraction * len(with_masks))) if with_masks else 0
        kept = set(np.random.default_rng(mask_seed).permutation(with_masks)[:num_kept].tolist())
        for i in set(with_masks) - kept:
            self.instance_mask_paths[i] = None
            self.semantic_mask_paths[i] = None
        return len(with_masks) - num_kept

    def _refuse_non_perspective_cameras(self) -> None:
        """Masks are undistorted like perspective images only; other camera models cannot be aligned."""
        for i, (instance, semantic) in enumerate(zip(self.instance_mask_paths, self.semantic_mask_paths)):
            camera_type = CameraType(int(self.cameras.camera_type[i].item()))
            if (instance is not None or semantic is not None) and camera_type != CameraType.PERSPECTIVE:
                raise InputError(
                    f"View {self.image_filenames[i]} has masks but a {camera_type.name} camera: UniC-Lift masks "
                    "need perspective (pinhole or OPENCV) cameras, since other camera models are not undistorted "
                    "into a pinhole image the masks could be aligned with."
                )

    def get_numpy_image(self, image_idx: int) -> np.ndarray:
        """nerfstudio's image loading, with unreadable (truncated, not an image) files named."""
        try:
            return super().get_numpy_image(image_idx)
        except OSError as err:
            raise InputError(f"Cannot read image {self.image_filenames[image_idx]}: {err}") from err

    def get_metadata(self, data: Dict) -> Dict[str, Tensor]:
        """Load the view's masks at the size of its image, once the image is known to have its camera's size."""
        image_idx = data["image_idx"]
        height, width = data["image"].shape[:2]
        expected = tuple(int(v) for v in self._file_sizes[image_idx])
        if (height, width) != expected:
            raise InputError(
                f"Image {self.image_filenames[image_idx]} is {width}x{height} pixels but its camera says "
                f"{expected[1]}x{expected[0]} (the dataparser's intrinsics, after any downscaling): fix the image "
                "or the camera file"
            )
        masks = {}
        for key, path in (
            ("instance_mask", self.instance_mask_paths[image_idx]),
            ("semantic_mask", self.semantic_mask_paths[image_idx]),
        ):
            if path is not None:
                masks[key] = self._load_mask(path, image_idx, height, width)
        return masks

    def _load_mask(self, path: Path, image_idx: int, height: int, width: int) -> Tensor:
        labels = torch.from_numpy(read_label_map(path))
        mask_height, mask_width = labels.shape
        if not same_aspect((mask_height, mask_width), (height, width)):
            raise InputError(
                f"Mask {path} is {mask_width}x{mask_height} pixels but its image {self.image_filenames[image_idx]} "
                f"is loaded at {width}x{height}: the aspect ratios differ, so the mask cannot be resized to fit"
            )
        if self.mask_scale < 1.0:
            coarse = (max(1, round(height * self.mask_scale)), max(1, round(width * self.mask_scale)))
            labels = resize_label_map(labels, *coarse)
        return resize_label_map(labels, height, width)


def mask_folder(image_path: Path, mask_dir: Path) -> Path:
    """Mask folder of an image: ``mask_dir`` relative to the parent of the image's folder (or absolute)."""
    return image_path.parent.parent / mask_dir
