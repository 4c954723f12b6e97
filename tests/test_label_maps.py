"""Reading, finding and writing label maps."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from unic_lift_ns.data.label_maps import find_label_map, read_label_map, write_label_map, write_label_maps


@pytest.mark.parametrize("bit_depth, high", [(16, 60_000), (8, 255)])
def test_png_round_trip(tmp_path: Path, bit_depth: int, high: int) -> None:
    labels = np.random.default_rng(0).integers(0, high + 1, (5, 7))
    path = tmp_path / "frame_00000.png"
    write_label_map(path, labels, bit_depth=bit_depth)
    with Image.open(path) as image:
        assert image.mode == ("L" if bit_depth == 8 else "I;16")
    read = read_label_map(path)
    assert read.dtype == np.int64 and read.shape == (5, 7)
    np.testing.assert_array_equal(read, labels)


def test_npy_is_read_as_int64(tmp_path: Path) -> None:
    path = tmp_path / "frame_00000.npy"
    np.save(path, np.arange(6, dtype=np.int32).reshape(2, 3))
    read = read_label_map(path)
    assert read.dtype == np.int64
    np.testing.assert_array_equal(read, np.arange(6).reshape(2, 3))


@pytest.mark.parametrize(
    "name, save",
    [
        ("float.npy", lambda p: np.save(p, np.zeros((2, 3), np.float32))),
        ("stack.npy", lambda p: np.save(p, np.zeros((2, 2, 3), np.int64))),
        ("rgb.png", lambda p: Image.new("RGB", (3, 2)).save(p)),
        ("rgba.png", lambda p: Image.new("RGBA", (3, 2)).save(p)),
        ("depth.tif", lambda p: Image.new("F", (3, 2)).save(p)),
    ],
)
def test_non_integer_or_multichannel_maps_are_rejected(tmp_path: Path, name: str, save) -> None:
    path = tmp_path / name
    save(path)
    with pytest.raises(ValueError, match=re.escape(str(path))):
        read_label_map(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "nope.png"))):
        read_label_map(tmp_path / "nope.png")


def test_find_label_map_prefers_png(tmp_path: Path) -> None:
    np.save(tmp_path / "a.npy", np.zeros((2, 2), np.int64))
    assert find_label_map(tmp_path, "a") == tmp_path / "a.npy"
    write_label_map(tmp_path / "a.png", np.zeros((2, 2), np.int64))
    assert find_label_map(tmp_path, "a") == tmp_path / "a.png"
    with pytest.raises(FileNotFoundError, match=rf"'b'.*{re.escape(str(tmp_path))}"):
        find_label_map(tmp_path, "b")
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "missing"))):
        find_label_map(tmp_path / "missing", "a")


@pytest.mark.parametrize(
    "labels, bit_depth, name",
    [
        (np.full((2, 2), 65_536), 16, "a.png"),
        (np.full((2, 2), 256), 8, "a.png"),
        (np.full((2, 2), -1), 16, "a.png"),
        (np.zeros((2, 2), np.float32), 16, "a.png"),
        (np.zeros((2, 2, 3), np.int64), 16, "a.png"),
        (np.zeros((2, 2), np.int64), 16, "a.jpg"),
        (np.zeros((2, 2), np.float32), 16, "a.npy"),
    ],
)
def test_write_rejects_what_a_png_label_map_cannot_hold(
    tmp_path: Path, labels: np.ndarray, bit_depth: int, name: str
) -> None:
    with pytest.raises(ValueError, match=name):
        write_label_map(tmp_path / name, labels, bit_depth=bit_depth)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize("high, dtype", [(2**24 - 1, np.int32), (2**40, np.int64), (-5, np.int32)])
def test_npy_holds_any_integer_labels(tmp_path: Path, high: int, dtype: type) -> None:
    labels = np.array([[0, 1], [high, 7]])
    path = tmp_path / "a.npy"
    write_label_map(path, labels)
    assert np.load(path).dtype == dtype
    np.testing.assert_array_equal(read_label_map(path), labels)


def test_write_label_maps_falls_back_to_npy_for_the_whole_folder(tmp_path: Path) -> None:
    small, large = np.full((2, 3), 65_535), np.full((2, 3), 65_536)
    fit = write_label_maps(tmp_path / "fit", ["a", "b"], [small, small])
    assert fit == [tmp_path / "fit" / f"{s}.png" for s in "ab"]
    paths = write_label_maps(tmp_path / "wide", ["a", "b"], [small, large])
    assert paths == [tmp_path / "wide" / f"{s}.npy" for s in "ab"]
    assert [find_label_map(tmp_path / "wide", s) for s in "ab"] == paths
    np.testing.assert_array_equal(read_label_map(paths[1]), large)
    assert write_label_maps(tmp_path / "sem", ["a"], [np.full((2, 2), 256)], bit_depth=8)[0].suffix == ".npy"
