"""Corrections of instance labels (issue #30): merge, split, delete and undo on per-Gaussian labels, the file they
are kept in, and what the model's labels and pixels show with them."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from unic_lift_ns.data.label_maps import read_label_map
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
    out = Corrections().then(Correction("split", 3)).apply(labels, means, BITS, min_size=13)
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


def copy_of_run(trained_run: Path, tmp_path: Path) -> Path:
    """A copy of the trained run's folder (config.yml and checkpoint): corrections are written next to it."""
    return Path(shutil.copytree(trained_run, tmp_path / "run", ignore=shutil.ignore_patterns("*.log", "events.*")))


def test_corrections_reach_labels_pixels_eval_and_export(unic_lift_eval, trained_run, tmp_path, monkeypatch):
    """Merge the two most-drawn labels, split nothing, delete a third: eval's label maps, its instance count and
    unic-lift-export see it; --no-corrections leaves it out; a bad file is one line before rendering."""
    from unic_lift_ns.runs import load_run
    from unic_lift_ns.scripts.export import entrypoint as export

    run = copy_of_run(trained_run, tmp_path)
    config = run / "config.yml"
    model = load_run(config).model
    labels = model.gaussian_labels()
    counts = torch.bincount(labels)
    counts[0] = 0  # label 0: the Gaussians that do not vote under the run's gaussian-votes
    keep, merged, deleted = torch.argsort(counts, descending=True)[:3].tolist()

    def evaluate(folder: str) -> tuple[dict, dict]:
        proc, stdout = unic_lift_eval("--load-config", config, "--save-labels", tmp_path / folder, "--no-baselines",
                                      "--output-json", tmp_path / f"{folder}.json")  # fmt: skip
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        (row,) = json.loads((tmp_path / f"{folder}.json").read_text())["results"].values()
        maps = {p.stem: read_label_map(p) for p in sorted((tmp_path / folder / "instances").iterdir())}
        return row, maps

    before, before_maps = evaluate("before")
    corrections = Corrections().then(Correction("merge", merged, into=keep)).then(Correction("delete", deleted))
    corrections.save(run)
    after, after_maps = evaluate("after")
    background = 2**model.config.embedding_dim
    for stem, old in before_maps.items():
        new = after_maps[stem]
        assert merged not in new and deleted not in new
        assert (new[old == merged] == keep).mean() > 0.95 and (new[old == deleted] == background).mean() > 0.95
        untouched = (old != merged) & (old != deleted) & (old != keep)
        assert (new[untouched] == old[untouched]).mean() > 0.95  # boundary pixels may change hands
    seen = {int(v) for m in before_maps.values() for v in np.unique(m)}
    assert after["num_pred_instances"] == before["num_pred_instances"] - (merged in seen)

    def exported(name: str, *flags: str) -> set:
        out = tmp_path / name
        monkeypatch.setattr(sys, "argv", ["unic-lift-export", "instances", "--load-config", str(config),
                                          "--output-dir", str(out), "--min-gaussians", "1", *flags])  # fmt: skip
        export()
        return {entry["label"] for entry in json.loads((out / "instances.json").read_text())["instances"]}

    with_corrections, without = exported("corrected"), exported("as-decoded", "--no-corrections")
    assert merged not in with_corrections and background in with_corrections
    assert {merged, deleted} <= without and background not in without

    (run / CORRECTIONS_FILE).write_text('{"generator": "unic-lift-corrections", "operations": [{"op": "split"}]}')
    proc, stdout = unic_lift_eval("--load-config", config, "--report", tmp_path / "report")
    assert proc.returncode == 2 and f"{run / CORRECTIONS_FILE}: operation 1" in stdout
    assert not (tmp_path / "report").exists()
