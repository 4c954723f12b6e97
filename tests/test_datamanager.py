"""UniC-Lift datamanager on generated scenes: mask lookup, resizing, formats, undistortion and errors."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import pytest
import torch
from PIL import Image

from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from unic_lift_ns.data.datamanager import SegmentationDataManager, SegmentationDataManagerConfig
from unic_lift_ns.data.label_maps import number_segments, read_label_map, resize_label_map, write_label_map

NUM_TRAIN = 14  # the 16-view tiny scene holds out views 0 and 8


@pytest.fixture
def scene(tiny_scene: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny scene that a test may edit."""
    return Path(shutil.copytree(tiny_scene, tmp_path / "scene"))


def setup(scene: Path, device: str = "cpu", **overrides) -> SegmentationDataManager:
    overrides.setdefault("dataparser", NerfstudioDataParserConfig(load_3D_points=True))
    return SegmentationDataManagerConfig(data=scene, **overrides).setup(device=device)


def train_batches(manager: SegmentationDataManager) -> Dict[Path, dict]:
    """One batch of every train view, by image file, through next_train."""
    batches = {}
    for step in range(len(manager.train_dataset)):
        camera, batch = manager.next_train(step)
        batches[manager.train_dataset.image_filenames[camera.metadata["cam_idx"]]] = batch
    assert len(batches) == len(manager.train_dataset)
    return batches


def mask_file(image: Path, folder: str = "instance_masks") -> Path:
    return image.parent.parent / folder / f"{image.stem}.png"


def set_camera(scene: Path, **fields) -> None:
    meta = json.loads((scene / "transforms.json").read_text())
    meta.update(fields)
    (scene / "transforms.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("cache_images", ["gpu", "cpu"])
def test_masks_load_and_align_with_images(scene: Path, cache_images: str) -> None:
    manager = setup(scene, cache_images=cache_images)
    for image_path, batch in train_batches(manager).items():
        expected_image = np.asarray(Image.open(image_path).convert("RGB"), dtype=np.float32) / 255.0
        np.testing.assert_allclose(batch["image"].numpy(), expected_image)
        for key, folder in (("instance_mask", "instance_masks"), ("semantic_mask", "semantic_masks")):
            assert batch[key].dtype == torch.int64 and batch[key].shape == batch["image"].shape[:2]
            expected = torch.from_numpy(read_label_map(mask_file(image_path, folder)))
            if key == "instance_mask":  # the same segments, numbered 1..K
                expected = number_segments(expected)[0]
            np.testing.assert_array_equal(batch[key].numpy(), expected.numpy())
    _, eval_batch = manager.next_eval(0)
    assert {"instance_mask", "semantic_mask"} <= eval_batch.keys()
    assert all("instance_mask" in batch for _, batch in manager.fixed_indices_eval_dataloader)
    path = mask_file(manager.train_dataset.image_filenames[0])
    assert manager.segment_counts[path] == len(set(np.unique(read_label_map(path)).tolist()) - {0})
    assert len(manager.segment_counts) == NUM_TRAIN


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("cache_images", ["gpu", "cpu"])
def test_masks_follow_the_image_to_cuda(scene: Path, cache_images: str) -> None:
    manager = setup(scene, device="cuda", cache_images=cache_images)
    _, batch = manager.next_train(0)
    _, eval_batch = manager.next_eval(0)
    for data in (batch, eval_batch):
        assert data["image"].is_cuda and data["instance_mask"].is_cuda and data["semantic_mask"].is_cuda


@pytest.mark.parametrize("how", ["images_2 folder", "camera_res_scale_factor"])
def test_downscaled_images_get_nearest_resized_masks(scene: Path, how: str) -> None:
    if how == "images_2 folder":
        (scene / "images_2").mkdir()
        for path in (scene / "images").iterdir():
            Image.open(path).resize((24, 24), Image.Resampling.BILINEAR).save(scene / "images_2" / path.name)
        manager = setup(scene, dataparser=NerfstudioDataParserConfig(downscale_factor=2, load_3D_points=True))
    else:
        manager = setup(scene, camera_res_scale_factor=0.5)
    for image_path, batch in train_batches(manager).items():
        assert batch["image"].shape == (24, 24, 3)
        original = torch.from_numpy(read_label_map(mask_file(image_path)))
        assert torch.equal(batch["instance_mask"], number_segments(resize_label_map(original, 24, 24))[0])
        assert set(batch["semantic_mask"].unique().tolist()) <= {0, 1, 255}


@pytest.mark.parametrize("storage", ["8-bit png", "16-bit png", "npy"])
def test_mask_storage_formats(scene: Path, storage: str) -> None:
    expected = {}
    for path in sorted((scene / "instance_masks").iterdir()):
        labels = np.unique(read_label_map(path), return_inverse=True)[1].reshape(48, 48) * 7
        if storage == "npy":
            path.unlink()
            np.save(path.with_suffix(".npy"), labels.astype(np.int32))
        else:
            write_label_map(path, labels, bit_depth=8 if storage == "8-bit png" else 16)
        expected[path.stem] = number_segments(torch.from_numpy(labels))[0].numpy()
    for image_path, batch in train_batches(setup(scene)).items():
        np.testing.assert_array_equal(batch["instance_mask"].numpy(), expected[image_path.stem])


def test_view_without_mask_trains_on_rgb_only(scene: Path, capsys: pytest.CaptureFixture) -> None:
    (scene / "instance_masks" / "frame_00001.png").unlink()
    (scene / "instance_masks" / "frame_00002.png").unlink()
    (scene / "semantic_masks" / "frame_00002.png").unlink()
    (scene / "semantic_masks" / "frame_00003.png").unlink()
    manager = setup(scene)
    assert "12 of 14 train views with instance IDs, 2 without a mask" in " ".join(capsys.readouterr().out.split())
    batches = {path.name: batch for path, batch in train_batches(manager).items()}
    assert "instance_mask" not in batches["frame_00001.png"] and "semantic_mask" in batches["frame_00001.png"]
    assert "instance_mask" not in batches["frame_00002.png"] and "semantic_mask" not in batches["frame_00002.png"]
    assert "instance_mask" in batches["frame_00003.png"] and "semantic_mask" not in batches["frame_00003.png"]
    assert sum("instance_mask" in batch for batch in batches.values()) == NUM_TRAIN - 2
    assert len(manager.segment_counts) == NUM_TRAIN - 2


def test_semantic_masks_can_be_disabled(scene: Path) -> None:
    for batch in train_batches(setup(scene, semantic_mask_dir=None)).values():
        assert "instance_mask" in batch and "semantic_mask" not in batch


def test_mask_fraction_keeps_a_seeded_quarter_of_train_masks(scene: Path) -> None:
    def kept(seed: int) -> Tuple[set, SegmentationDataManager]:
        manager = setup(scene, mask_fraction=0.25, mask_seed=seed)
        views = {path.name for path, batch in train_batches(manager).items() if "instance_mask" in batch}
        return views, manager

    views, manager = kept(0)
    assert len(views) == round(0.25 * NUM_TRAIN)
    assert kept(0)[0] == views
    assert kept(1)[0] != views
    assert len(manager.segment_counts) == len(views)
    assert all(path is not None for path in manager.eval_dataset.instance_mask_paths)


def test_mask_scale_trains_on_coarse_masks(scene: Path) -> None:
    """--pipeline.datamanager.mask-scale 0.25: each train mask is the full mask sampled on a 4x coarser grid."""
    full, coarse = train_batches(setup(scene)), train_batches(setup(scene, mask_scale=0.25))
    for path, batch in coarse.items():
        labels, original = batch["instance_mask"], full[path]["instance_mask"]
        assert labels.shape == original.shape == (48, 48)
        expected = number_segments(resize_label_map(resize_label_map(original, 12, 12), 48, 48))[0]
        assert torch.equal(labels, expected) and not torch.equal(labels, original)
        assert torch.equal(labels[::4, ::4], labels[1::4, 1::4])  # constant over each 4x4 block
    with pytest.raises(ValueError, match="--pipeline.datamanager.mask-scale"):
        setup(scene, mask_scale=0.0)


def test_mask_folder_flag_and_missing_folder(scene: Path) -> None:
    (scene / "instance_masks").rename(scene / "segmenter")
    with pytest.raises(FileNotFoundError, match=re.escape(str(scene / "instance_masks"))):
        setup(scene)
    for folder in (Path("segmenter"), scene / "segmenter"):
        assert all("instance_mask" in batch for batch in train_batches(setup(scene, instance_mask_dir=folder)).values())


def test_mask_of_wrong_aspect_names_the_file(scene: Path) -> None:
    path = scene / "instance_masks" / "frame_00003.png"
    write_label_map(path, np.ones((48, 32), dtype=np.int64))
    with pytest.raises(ValueError, match=re.escape(str(path)) + ".*32x48.*48x48"):
        setup(scene)  # found when data loads, before any training step


def test_distorted_perspective_masks_are_undistorted_like_images(scene: Path) -> None:
    """Each image is a rendering of its mask (white where labelled); after undistortion they must still agree."""
    rows, cols = np.mgrid[:48, :48]
    for index, path in enumerate(sorted((scene / "images").iterdir())):
        blocks = (rows + 2 * index) // 6 * 8 + (cols + index) // 6
        labels = np.where((rows // 6 + cols // 6 + index) % 2 == 0, blocks + 1, 0)
        write_label_map(scene / "instance_masks" / f"{path.stem}.png", labels)
        write_label_map(scene / "semantic_masks" / f"{path.stem}.png", (labels > 0).astype(np.int64), bit_depth=8)
        Image.fromarray(np.repeat((labels > 0)[..., None] * 255, 3, axis=2).astype(np.uint8)).save(path)
    set_camera(scene, k1=-0.3, k2=0.08)
    manager = setup(scene)
    for image_path, batch in train_batches(manager).items():
        labels = batch["instance_mask"].numpy()
        assert labels.shape == batch["image"].shape[:2]
        assert len(np.unique(labels)) <= len(np.unique(read_label_map(mask_file(image_path))))  # no blended ids
        np.testing.assert_array_equal(batch["semantic_mask"].numpy(), labels > 0)
        white = batch["image"][..., 0].numpy() > 0.5
        mismatch = white != (labels > 0)
        assert mismatch.mean() < 0.03
        assert not (mismatch & ~_near_boundary(labels > 0)).any()
        distorted = read_label_map(mask_file(image_path))[: labels.shape[0], : labels.shape[1]] > 0
        assert (white != distorted).mean() > 5 * mismatch.mean() + 0.05  # undistortion did move the boundaries
    assert not torch.allclose(manager.train_dataset.cameras.fx, manager.train_dataparser_outputs.cameras.fx)
    # Undistortion shrank the cameras; reading a view again from disk (the viewer's init_scene does) still works.
    assert int(manager.train_dataset.cameras.width[0]) != 48
    assert manager.train_dataset[0]["image"].shape[:2] == (48, 48)


def test_fisheye_cameras_are_refused(scene: Path) -> None:
    set_camera(scene, camera_model="OPENCV_FISHEYE", k1=0.05, k2=0.01, k3=0.0, k4=0.0)
    with pytest.raises(ValueError, match="FISHEYE camera"):
        setup(scene)


def _near_boundary(foreground: np.ndarray) -> np.ndarray:
    """Pixels within one pixel (8-neighbourhood) of a foreground/background change."""
    padded = np.pad(foreground, 1, mode="edge")
    height, width = foreground.shape
    windows = [padded[dy : dy + height, dx : dx + width] for dy in range(3) for dx in range(3)]
    return np.any([window != foreground for window in windows], axis=0)


def test_resize_label_map_down_by_two() -> None:
    labels = torch.arange(36).reshape(6, 6)
    resized = resize_label_map(labels, 3, 3)
    assert torch.equal(resized, labels[1::2, 1::2])


def test_resize_label_map_up_by_two() -> None:
    labels = torch.arange(12).reshape(3, 4)
    expected = labels.repeat_interleave(2, dim=0).repeat_interleave(2, dim=1)
    assert torch.equal(resize_label_map(labels, 6, 8), expected)
    assert torch.equal(resize_label_map(expected, 3, 4), labels)


@pytest.mark.parametrize("size", [(7, 5), (17, 23), (33, 31), (48, 48)])
def test_resize_label_map_samples_the_nearest_pixel_centre(size: Tuple[int, int]) -> None:
    """Labels encode their pixel; every output pixel must come from the input pixel nearest to its centre."""
    in_height, in_width = 10, 12
    labels = torch.arange(in_height * in_width).reshape(in_height, in_width) * 3 + 5
    resized = resize_label_map(labels[None], *size)[0]
    assert resized.shape == size and resized.dtype == labels.dtype
    assert set(resized.unique().tolist()) <= set(labels.unique().tolist())
    source_rows, source_cols = ((resized - 5) // 3).div(in_width, rounding_mode="floor"), (resized - 5) // 3 % in_width
    centres_y = (torch.arange(size[0])[:, None] + 0.5) * in_height / size[0]
    centres_x = (torch.arange(size[1])[None, :] + 0.5) * in_width / size[1]
    assert ((source_rows + 0.5 - centres_y).abs() <= 0.5 + 1e-9).all()
    assert ((source_cols + 0.5 - centres_x).abs() <= 0.5 + 1e-9).all()


def test_mask_files_that_match_no_image_are_listed_in_a_warning(scene: Path, capsys: pytest.CaptureFixture) -> None:
    """A typo in a mask's name would otherwise leave its view on RGB only without a word."""
    typo = scene / "instance_masks" / "frame_0001.png"
    shutil.copy(scene / "instance_masks" / "frame_00001.png", typo)
    other = scene / "semantic_masks" / "IMG_1234.npy"
    np.save(other, np.zeros((48, 48), dtype=np.int32))
    setup(scene)
    lines = [line for line in capsys.readouterr().out.splitlines() if "match no train or eval image" in line]
    assert lines == [f"2 mask file(s) match no train or eval image and are not used: {typo}, {other}"]
