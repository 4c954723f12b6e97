"""Viewer instance tools: label under a click, isolate/hide masks, overlay, the one-shot pick and the export wiring."""

from __future__ import annotations

import sys
import types
from pathlib import Path
from types import SimpleNamespace

import torch
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerClick, ViewerControl, ViewerElement
from test_model import make_camera, make_model

from unic_lift_ns.labels import label_palette
from unic_lift_ns.viewer import DIM, gaussian_filter_for, instance_overlay, label_at


def test_label_at_reads_the_clicked_pixel_and_rejects_background():
    labels = torch.arange(12).reshape(3, 4, 1).float()
    alpha = torch.ones(3, 4, 1)
    assert label_at(labels, alpha, (0.0, 0.0)) == 0
    assert label_at(labels, alpha, (0.6, 0.5)) == 6  # column 2 of 4, row 1 of 3
    assert label_at(labels, alpha, (1.0, 1.0)) == 11  # the far edge clamps to the last pixel
    alpha[1, 2] = 0.1
    assert label_at(labels, alpha, (0.6, 0.5)) is None


def test_isolate_and_hide_masks_are_complements():
    labels = torch.tensor([3, 5, 3, 0, 5])
    isolate = gaussian_filter_for(labels, 3, "isolate")
    hide = gaussian_filter_for(labels, 3, "hide")
    assert isolate.tolist() == [True, False, True, False, False]
    assert torch.equal(hide, ~isolate)


def test_overlay_blends_and_highlights_the_selection():
    rgb = torch.rand(4, 5, 3)
    labels = torch.tensor([1, 2]).repeat_interleave(10).reshape(4, 5)
    assert torch.allclose(instance_overlay(rgb, labels, 0.0), rgb)
    assert torch.allclose(instance_overlay(rgb, labels, 1.0), label_palette(labels))
    half = instance_overlay(rgb, labels.unsqueeze(-1), 0.5, selected=2)
    chosen = labels == 2
    assert torch.allclose(half[chosen], 0.5 * rgb[chosen] + 0.5 * label_palette(labels)[chosen])
    assert torch.allclose(half[~chosen], DIM * rgb[~chosen])


def test_viewer_finds_the_elements_on_the_model():
    model = make_model()
    names = {path.split("/")[-1] for path, _ in parse_object(model, ViewerElement, "Custom Elements")}
    assert {"overlay_opacity", "pick_instance", "subset_isolate", "subset_hide", "write_selected"} <= names
    assert [e for _, e in parse_object(model, ViewerControl, "Custom Elements")] == [model.instance_gui.viewer_control]
    assert not [key for key in model.state_dict() if "instance_gui" in key]  # checkpoints are unchanged


def test_overlay_output_follows_the_slider():
    model = make_model()
    model.eval()
    model.instance_gui.overlay_opacity.value = 1.0
    outputs = model.get_outputs_for_camera(make_camera())
    assert torch.allclose(outputs["instance_overlay"], outputs["instance"])


class FakeControl:
    """ViewerControl stand-in: one client whose view is ``make_camera()``; records pointer (un)registration."""

    def __init__(self) -> None:
        self.callback = None
        client = SimpleNamespace(camera=SimpleNamespace(aspect=1.0))
        self.viser_server = SimpleNamespace(get_clients=lambda: {0: client})

    def register_pointer_cb(self, event_type, cb, removed_cb=None) -> None:
        assert event_type == "click" and self.callback is None
        self.callback = cb

    def unregister_pointer_cb(self) -> None:
        assert self.callback is not None
        self.callback = None

    def get_camera(self, height: int, width: int):
        return make_camera(height)


def trained_like_model():
    """A model whose left half of Gaussians decodes to label 5 and right half to label 9."""
    model = make_model(num_points=400)
    with torch.no_grad():
        left = model.means[:, 0] < 0
        codes = torch.where(left, 5, 9)
        bits = ((codes.unsqueeze(-1) >> torch.arange(12)) & 1).float()
        model.gauss_params["embeddings"].copy_(8.0 * (2 * bits - 1))
        model.gauss_params["opacities"].fill_(4.0)
    model.eval()
    return model


def test_pick_is_one_shot_and_isolate_hide_show_all():
    model = trained_like_model()
    gui = model.instance_gui
    gui.viewer_control = FakeControl()
    gui.start_pick()
    assert gui.viewer_control.callback is not None
    outputs = gui.render_for_pick(make_camera(256))
    row, col = (outputs["accumulation"][..., 0] > 0.9).nonzero()[0].tolist()
    expected = int(outputs["instance_label"][row, col])
    gui.viewer_control.callback(ViewerClick((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), ((col + 0.5) / 256, (row + 0.5) / 256)))
    assert gui.viewer_control.callback is None  # camera control is back after one click
    assert gui.selected == expected and expected in (5, 9)
    count = int((model.gaussian_labels() == expected).sum())
    assert gui.picked.value == f"label {expected}: {count} Gaussians"

    gui.set_subset("isolate")
    assert int(model.gaussian_filter.sum()) == count
    isolated = model.get_outputs_for_camera(make_camera())
    covered = isolated["accumulation"][..., 0] > 0.5
    assert covered.any() and set(isolated["instance_label"][covered].long().unique().tolist()) == {expected}
    gui.set_subset("hide")
    assert int(model.gaussian_filter.sum()) == model.num_points - count
    gui.show_all()
    assert model.gaussian_filter is None and gui.selected is None


def test_click_on_background_keeps_the_selection():
    model = trained_like_model()
    gui = model.instance_gui
    gui.viewer_control = FakeControl()
    gui.select(9)
    gui.start_pick()
    far_corner = gui.render_for_pick(make_camera(256))["accumulation"][0, 0, 0]
    assert far_corner < 0.5
    gui.viewer_control.callback(ViewerClick((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0)))
    assert gui.selected == 9 and "background" in gui.picked.value


def test_export_selected_writes_into_the_run_directory(monkeypatch, tmp_path: Path):
    model = trained_like_model()
    gui = model.instance_gui
    assert gui.export_selected() is None and "pick" in gui.written.value
    calls = []

    def export_instance(model_arg, label: int, output_dir: Path) -> Path:
        calls.append((model_arg, label, output_dir))
        return output_dir / f"instance_{label}.ply"

    fake = types.ModuleType("unic_lift_ns.export.instances")
    fake.export_instance = export_instance  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "unic_lift_ns.export.instances", fake)
    control = FakeControl()
    control.viewer = SimpleNamespace(log_filename=tmp_path / "run" / "viewer_log_filename.txt")  # type: ignore
    gui.viewer_control = control
    gui.select(5)
    path = gui.export_selected()
    assert calls == [(model, 5, tmp_path / "run" / "exports")]
    assert gui.written.value == str(path) == str(tmp_path / "run" / "exports" / "instance_5.ply")


def test_absolute_export_folder_is_kept(tmp_path: Path):
    gui = make_model().instance_gui
    gui.write_folder.value = str(tmp_path / "out")
    assert gui.export_folder() == tmp_path / "out"


def test_export_selected_with_the_real_exporter(tmp_path: Path):
    model = trained_like_model()  # the GUI holds its model weakly
    gui = model.instance_gui
    gui.write_folder.value = str(tmp_path)
    gui.select(5)
    path = gui.export_selected()
    assert path is not None and path.exists() and gui.written.value == str(path)
    gui.select(4)  # no Gaussian carries label 4
    assert gui.export_selected() is None and gui.written.value.startswith("not exported")
