"""The viewer's instance list and corrections (issue #30), driven over viser's real websocket: list, choose, split,
delete, undo; merge by a click; corrections saved in the run directory, restored by a new viewer, refused when
the file is not ours."""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from nerfstudio.viewer.viewer_elements import ViewerClick
from test_model import make_camera, make_model
from test_viewer import FakeControl, GuiClient, served

from unic_lift_ns.corrections import CORRECTIONS_FILE
from unic_lift_ns.instance_codes import label_palette
from unic_lift_ns.viewer import NO_INSTANCE, InstanceViewer, instance_summaries, label_of_entry

BACKGROUND = 2**12


def three_slabs():
    """A model whose Gaussians with |x| > 0.2 decode to label 9 (two slabs far apart) and the rest to label 5."""
    model = make_model(num_points=600)
    with torch.no_grad():
        codes = torch.where(model.means[:, 0].abs() > 0.2, 9, 5)
        bits = ((codes.unsqueeze(-1) >> torch.arange(12)) & 1).float()
        model.gauss_params["embeddings"].copy_(8.0 * (2 * bits - 1))
        model.gauss_params["opacities"].fill_(4.0)
    model.eval()
    return model


def entries(client: GuiClient, check=lambda options: True, timeout: float = 30.0) -> list:
    """The instance list's entries once ``check`` accepts them."""
    client.wait("Instances", lambda _: True)
    deadline = time.monotonic() + timeout
    while not check(client.options[client.ids["Instances"]]):
        assert time.monotonic() < deadline, client.options[client.ids["Instances"]]
        try:
            client.wait("Instances", lambda _: False, timeout=0.2)
        except TimeoutError:
            pass
    return client.options[client.ids["Instances"]]


def labels_listed(options: list) -> list:
    return [label_of_entry(entry) for entry in options[1:]]


def test_instance_summaries_count_and_measure_each_label():
    labels = torch.tensor([3, 3, 3, 7, 7])
    means = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [5, 5, 5], [5, 5.5, 5]])
    by_count = instance_summaries(labels, means)
    assert [(s.label, s.count, s.size) for s in by_count] == [(3, 3, 2.0), (7, 2, 0.5)]
    assert [s.label for s in instance_summaries(labels.flip(0), means, "label")] == [3, 7]
    assert label_of_entry(by_count[0].entry()) == 3 and label_of_entry(NO_INSTANCE) is None
    assert label_of_entry("../etc: 3") is None


def test_list_choose_split_delete_undo_over_the_websocket_and_after_a_restart(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    model = three_slabs()
    gui = InstanceViewer(model)
    with served(gui, run) as client:
        options = entries(client, lambda o: len(o) == 3)
        assert options[0] == NO_INSTANCE and sorted(labels_listed(options)) == [5, 9]
        counts = torch.bincount(model.gaussian_labels())
        assert [int(o.split()[1]) for o in options[1:]] == sorted([int(counts[5]), int(counts[9])], reverse=True)
        client.choose("Sort instances by", "label")
        assert labels_listed(entries(client, lambda o: labels_listed(o) == [5, 9])) == [5, 9]

        client.choose("Instances", next(o for o in options if label_of_entry(o) == 9))  # as a pick does
        assert client.wait("Selected", lambda v: v.startswith("label 9")) == f"label 9: {int(counts[9])} Gaussians"
        colour = client.wait("Colour", lambda v: tuple(v) != (0, 0, 0))
        assert tuple(colour) == tuple(int(round(255 * float(c))) for c in label_palette(torch.tensor([9]))[0])

        client.click("Split into 3D parts")
        options = entries(client, lambda o: len(o) == 4)
        parts = set(labels_listed(options)) - {5, 9}
        assert len(parts) == 1 and 0 < next(iter(parts)) < BACKGROUND  # a free d-bit code
        labels = model.gaussian_labels()
        x = model.means[:, 0]
        assert set(labels[x > 0.2].tolist()) | set(labels[x < -0.2].tolist()) == {9, *parts}
        assert len(set(labels[x > 0.2].tolist())) == 1 and len(set(labels[x < -0.2].tolist())) == 1
        assert client.wait("Corrections", lambda v: v.startswith("1:")) == "1: split 9"

        client.choose("Instances", next(o for o in options if label_of_entry(o) == 5))
        client.wait("Selected", lambda v: v.startswith("label 5"))
        client.click("Delete (make background)")
        assert set(labels_listed(entries(client, lambda o: 5 not in labels_listed(o)))) == {9, *parts, BACKGROUND}
        assert client.wait("Selected", lambda v: v == "none") == "none"
        rendered = model.get_outputs_for_camera(make_camera())["instance_label"]
        assert 5 not in rendered.long().unique().tolist()

        client.click("Undo correction")
        assert 5 in labels_listed(entries(client, lambda o: 5 in labels_listed(o)))
        assert client.wait("Corrections", lambda v: v == "1: split 9") == "1: split 9"
    saved = json.loads((run / CORRECTIONS_FILE).read_text())
    assert saved == {"generator": "unic-lift-corrections", "operations": [{"op": "split", "label": 9}]}

    restarted = three_slabs()  # a new viewer on the same run, as ns-viewer after a restart
    gui = InstanceViewer(restarted)
    with served(gui, run) as client:
        assert set(labels_listed(entries(client, lambda o: len(o) == 4))) == {5, 9, *parts}
        assert client.wait("Corrections", lambda v: v != "none") == "1: split 9"
    assert torch.equal(restarted.gaussian_labels(), model.gaussian_labels())


def test_merge_by_click_and_a_foreign_file_is_refused(tmp_path: Path):
    run = tmp_path / "run"
    run.mkdir()
    model = three_slabs()
    gui = InstanceViewer(model)
    gui.viewer_control = FakeControl()
    gui.viewer_control.viewer = SimpleNamespace(log_filename=run / "viewer_log_filename.txt", train_lock=None,
                                                control_panel=SimpleNamespace(crop_viewport=False))  # fmt: skip
    gui.select(5)
    gui.start_merge()
    outputs = gui.render_for_pick(make_camera(256))
    covered = (outputs["accumulation"][..., 0] > 0.9) & (outputs["instance_label"][..., 0] == 9)
    row, col = covered.nonzero()[0].tolist()
    gui.viewer_control.callback(ViewerClick((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), ((col + 0.5) / 256, (row + 0.5) / 256)))
    assert set(model.gaussian_labels().tolist()) == {5} and gui.selected == 5
    assert gui.picked_corrections.value == "1: merge 9 into 5"

    (run / CORRECTIONS_FILE).unlink()
    (run / CORRECTIONS_FILE).write_text("my notes")  # another program's file of that name
    gui.undo()
    assert gui.picked_corrections.value.startswith("not saved, not applied: ")
    assert set(model.gaussian_labels().tolist()) == {5} and (run / CORRECTIONS_FILE).read_text() == "my notes"


@pytest.mark.parametrize("text", ["not json", '{"generator": "unic-lift-corrections", "operations": [{"op": "x"}]}'])
def test_a_bad_corrections_file_is_not_applied_and_said_once(tmp_path: Path, text: str, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / CORRECTIONS_FILE).write_text(text)
    model = three_slabs()
    gui = InstanceViewer(model)
    with served(gui, run) as client:
        message = client.wait("Corrections", lambda v: v.startswith("not applied"))
    assert str(run / CORRECTIONS_FILE) in message and set(model.gaussian_labels().tolist()) == {5, 9}
    assert (run / CORRECTIONS_FILE).read_text() == text
    printed = " ".join(capsys.readouterr().out.split())
    assert printed.count(f"unic-lift viewer: {run / CORRECTIONS_FILE}") == 1
