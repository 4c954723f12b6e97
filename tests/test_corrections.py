"""Corrections of instance labels (issue #30): merge, split, delete and undo on per-Gaussian labels, the file they
are kept in, and what the model's labels and pixels show with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from unic_lift_ns.corrections import CORRECTIONS_FILE, Correction, Corrections, load_corrections
from unic_lift_ns.errors import InputError

BITS = 4


def two_blobs(label: int, offset: float, count: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` Gaussians of ``label`` on a line spaced 0.1 apart, starting at x = ``offset``."""
    means = torch.zeros(count, 3)
    means[:, 0] = offset + 0.1 * torch.arange(count)
    return torch.full((count,), label), means


@pytest.fixture
def scene() -> tuple[torch.Tensor, torch.Tensor]:
    """Label 3: two separate rows of 20 and 12 Gaussians; label 5: one row; label 7: one row."""
    parts = [two_blobs(3, 0.0), two_blobs(3, 10.0, 12), two_blobs(5, 20.0), two_blobs(7, 30.0)]
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def test_merge_split_delete_and_undo(scene) -> None:
    labels, means = scene
    merged = Corrections().then(Correction("merge", 5, into=7))
    out = merged.apply(labels, means, BITS)
    assert (out[labels == 5] == 7).all() and (out[labels != 5] == labels[labels != 5]).all()

    split = merged.then(Correction("split", 3))
    out = split.apply(labels, means, BITS)
    assert (out[:20] == 3).all()  # the larger part keeps the label
    new = out[20:32].unique().tolist()
    assert len(new) == 1 and new[0] not in (0, 3, 5, 7) and new[0] < 2**BITS  # a code no Gaussian has, never 0

    deleted = split.then(Correction("delete", 7))
    out = deleted.apply(labels, means, BITS)
    assert (out[labels == 7] == 2**BITS).all() and (out[labels == 5] == 2**BITS).all()  # 5 was merged into 7

    assert deleted.undone() == split and split.undone().undone() == Corrections()
    assert torch.equal(Corrections().apply(labels, means, BITS), labels)


def test_split_keeps_small_parts_with_the_label(scene) -> None:
    labels, means = scene
    out = Corrections(min_size=13).then(Correction("split", 3)).apply(labels, means, BITS)
    assert (out[:32] == 3).all()  # the 12-Gaussian part is below min_size


def test_the_file_round_trips_and_replaces_only_its_own(tmp_path: Path, scene) -> None:
    corrections = Corrections().then(Correction("merge", 5, into=7)).then(Correction("split", 3))
    path = corrections.save(tmp_path)
    assert path == tmp_path / CORRECTIONS_FILE
    assert load_corrections(path) == corrections
    corrections.undone().save(tmp_path)  # over our own file
    assert load_corrections(path) == corrections.undone()
    path.unlink()
    path.write_text('{"operations": []}')  # another program's file of that name
    with pytest.raises(FileExistsError):
        corrections.save(tmp_path)
    assert path.read_text() == '{"operations": []}'


@pytest.mark.parametrize(
    "text, message",
    [
        ("not json", "not a corrections file"),
        ('{"generator": "someone-else", "operations": []}', "not a corrections file of unic-lift"),
        ('{"generator": "unic-lift-corrections", "operations": [{"op": "rename", "label": 1}]}', "operation 1"),
        ('{"generator": "unic-lift-corrections", "operations": [{"op": "merge", "label": 1}]}', "non-negative"),
        ('{"generator": "unic-lift-corrections", "operations": [{"op": "delete", "label": -2}]}', "non-negative"),
    ],
)
def test_bad_files_get_one_clear_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / CORRECTIONS_FILE
    path.write_text(text)
    with pytest.raises(InputError, match=message) as error:
        load_corrections(path)
    assert str(path) in str(error.value) and "\n" not in str(error.value)
    assert path.read_text() == text


def test_corrections_file_is_json_a_person_can_read(tmp_path: Path) -> None:
    Corrections().then(Correction("delete", 4)).save(tmp_path)
    data = json.loads((tmp_path / CORRECTIONS_FILE).read_text())
    assert data == {"generator": "unic-lift-corrections", "operations": [{"op": "delete", "label": 4}]}
