"""Viewer instance tools: label under a click, isolate/hide masks, overlay, the one-shot pick, the decoding dropdown
and the export, confined to the run directory and written through no link (driven over viser's real websocket)."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, Iterator, List, Literal

import msgspec
import pytest
import torch
import viser
from nerfstudio.viewer.utils import parse_object
from nerfstudio.viewer.viewer_elements import ViewerClick, ViewerControl, ViewerElement
from test_model import make_camera, make_model
from test_viewer_browser import free_port, wait_for
from websockets.sync.client import ClientConnection, connect

from conftest import setup_model
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from unic_lift_ns.data.datamanager import SegmentationDataManagerConfig
from unic_lift_ns.instance_codes import OVERLAY_DIM, instance_overlay, label_palette
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig
from unic_lift_ns.pipeline import SegmentationPipelineConfig
from unic_lift_ns.viewer import InstanceViewer, confined_folder, gaussian_filter_for, label_at


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
    half = instance_overlay(rgb, labels.unsqueeze(-1), 0.5, highlighted=2)
    chosen = labels == 2
    assert torch.allclose(half[chosen], 0.5 * rgb[chosen] + 0.5 * label_palette(labels)[chosen])
    assert torch.allclose(half[~chosen], OVERLAY_DIM * rgb[~chosen])


def test_viewer_finds_the_elements_on_the_pipeline(tiny_scene: Path):
    """GARField's layout: the GUI is on the pipeline (which nerfstudio's viewer parses), the model holds none."""
    datamanager = SegmentationDataManagerConfig(data=tiny_scene, dataparser=NerfstudioDataParserConfig(load_3D_points=True))
    config = SegmentationPipelineConfig(datamanager=datamanager, model=UniCLiftModelConfig())
    pipeline = config.setup(device="cpu", test_mode="inference")
    names = {path.split("/")[-1] for path, _ in parse_object(pipeline, ViewerElement, "Custom Elements")}
    assert {"decoding", "overlay_opacity", "pick_instance", "subset_isolate", "subset_hide", "write_selected"} <= names
    controls = [e for _, e in parse_object(pipeline, ViewerControl, "Custom Elements")]
    assert controls == [pipeline.instance_gui.viewer_control]
    assert parse_object(pipeline.model, ViewerElement, "Custom Elements") == []
    assert not [key for key in pipeline.state_dict() if "instance_gui" in key]  # checkpoints are unchanged


def test_overlay_output_follows_the_slider():
    model = make_model()
    model.eval()
    gui = InstanceViewer(model)
    gui.overlay_opacity.value = 1.0
    gui.set_overlay_opacity()  # what the slider's callback runs
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
    gui = InstanceViewer(model)
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
    gui = InstanceViewer(model)
    gui.viewer_control = FakeControl()
    gui.select(9)
    gui.start_pick()
    far_corner = gui.render_for_pick(make_camera(256))["accumulation"][0, 0, 0]
    assert far_corner < 0.5
    gui.viewer_control.callback(ViewerClick((0.0, 0.0, 0.0), (0.0, 0.0, 1.0), (0.0, 0.0)))
    assert gui.selected == 9 and "background" in gui.picked.value


def test_confined_folder_keeps_relative_folders_inside_the_run_directory(tmp_path: Path):
    run = tmp_path / "run"
    (run / "inner").mkdir(parents=True)
    (run / "alias").symlink_to(run / "inner")  # a symlink that stays inside is fine
    assert confined_folder(run, "exports") == run.resolve() / "exports"
    assert confined_folder(run, "a/./b/") == run.resolve() / "a" / "b"
    assert confined_folder(run, "") == run.resolve()
    assert confined_folder(run, "alias/x") == run.resolve() / "inner" / "x"
    assert not (run / "exports").exists()  # only a path, nothing is created


def escapes(tmp_path: Path) -> List[str]:
    """Export folder texts that leave ``tmp_path/run`` (or loop); makes the symlinks some of them go through."""
    run = tmp_path / "run"
    (run / "exports").mkdir(parents=True)
    (tmp_path / "outside").mkdir()
    (run / "link").symlink_to(tmp_path / "outside")
    (run / "loop").symlink_to(run / "loop")
    absolute = str(tmp_path / "outside")
    return ["../escape", "a/../../escape", "..", absolute, "~/escape", "~", "link", "link/deeper", "loop"]


def test_confined_folder_refuses_escapes(tmp_path: Path):
    for text in escapes(tmp_path):
        with pytest.raises(ValueError):
            confined_folder(tmp_path / "run", text)


def attach_run(gui, run_dir: Path) -> None:
    """What nerfstudio's Viewer gives the GUI's ViewerControl (``_setup``) that export uses: its log file."""
    gui.viewer_control.viewer = SimpleNamespace(log_filename=run_dir / "viewer_log_filename.txt")


def tree(root: Path) -> List[Path]:
    return sorted(root.rglob("*"))


def test_export_refusals_write_nothing(monkeypatch, tmp_path: Path):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # where '~' would lead
    texts = escapes(tmp_path)
    model = trained_like_model()
    gui = InstanceViewer(model)
    attach_run(gui, tmp_path / "run")
    gui.select(5)
    before = tree(tmp_path)
    for text in texts:
        gui.write_folder.value = text
        assert gui.export_selected() is None
        assert gui.written.value.startswith("refused: "), (text, gui.written.value)
        assert tree(tmp_path) == before, text  # no file, no folder, anywhere
    assert not (tmp_path / "escape").exists() and not (tmp_path / "home").exists()
    assert not list((tmp_path / "outside").iterdir())


def test_export_without_a_viewer_is_refused(monkeypatch, tmp_path: Path):
    monkeypatch.chdir(tmp_path)  # relative paths must not land in the working directory
    model = trained_like_model()  # the GUI holds its model weakly
    gui = InstanceViewer(model)
    gui.select(5)
    assert gui.export_selected() is None
    assert gui.written.value.startswith("refused: no run directory")
    assert not list(tmp_path.iterdir())


def test_export_into_the_run_directory_and_errors_in_the_gui(tmp_path: Path):
    model = trained_like_model()  # the GUI holds its model weakly
    gui = InstanceViewer(model)
    assert gui.export_selected() is None and "pick" in gui.written.value
    run = tmp_path / "run"
    run.mkdir()
    attach_run(gui, run)
    gui.select(5)
    gui.write_folder.value = "exports/instance 5"
    path = gui.export_selected()
    assert path == run.resolve() / "exports" / "instance 5" / "instance_5.ply"
    assert path.exists() and gui.written.value == str(path)
    success = gui.written.value

    (run / "a_file").write_text("not a folder")
    for text in ("a_file", "a_file/sub"):  # mkdir fails: FileExistsError, NotADirectoryError
        gui.write_folder.value = text
        assert gui.export_selected() is None
        assert gui.written.value.startswith("not exported: ") and gui.written.value != success, gui.written.value
    assert (run / "a_file").read_text() == "not a folder"

    gui.write_folder.value = "exports"
    gui.select(4)  # no Gaussian carries label 4
    assert gui.export_selected() is None and gui.written.value.startswith("not exported")
    assert not (run / "exports" / "instance_4.ply").exists()


class GuiClient:
    """A websocket client of a viser server, as the viewer's web page is: it reads the GUI the server sends and
    clicks its buttons."""

    def __init__(self, socket: ClientConnection) -> None:
        self.socket = socket
        self.ids: Dict[str, str] = {}
        """GUI label -> element id."""
        self.values: Dict[str, Any] = {}
        """Element id -> its latest value."""
        self.options: Dict[str, Any] = {}
        """Element id -> the latest options of a dropdown."""
        camera = dict(wxyz=(1.0, 0.0, 0.0, 0.0), position=(0.0, 0.0, -3.0), fov=1.0, aspect=1.0,
                      look_at=(0.0, 0.0, 0.0), up_direction=(0.0, -1.0, 0.0))  # fmt: skip
        self.send("ViewerCameraMessage", **camera)  # viser counts a client as connected from its first camera

    def send(self, kind: str, **fields: Any) -> None:
        """Send one viser message of type ``kind``."""
        self.socket.send(msgspec.msgpack.encode({"type": kind, **fields}))

    def wait(self, label: str, check: Callable[[Any], bool], timeout: float = 30.0) -> Any:
        """The value of the GUI element ``label`` once ``check`` accepts it (TimeoutError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while label not in self.ids or not check(self.values[self.ids[label]]):
            for message in msgspec.msgpack.decode(self.socket.recv(timeout=max(deadline - time.monotonic(), 0))):
                if message["type"].startswith("GuiAdd"):
                    self.ids[message["label"]] = message["id"]
                    self.values[message["id"]] = message["value"]
                    self.options[message["id"]] = message.get("options")
                elif message["type"] == "GuiUpdateMessage":
                    if "value" in message["updates"]:
                        self.values[message["id"]] = message["updates"]["value"]
                    if "options" in message["updates"]:
                        self.options[message["id"]] = message["updates"]["options"]
        return self.values[self.ids[label]]

    def choose(self, label: str, value: Any) -> None:
        """Set the input ``label`` to ``value``, as the page does when a user picks an option."""
        self.wait(label, lambda _: True)
        self.send("GuiUpdateMessage", id=self.ids[label], updates={"value": value})

    def click(self, label: str) -> None:
        """Press the button ``label``, as the page does."""
        self.wait(label, lambda _: True)
        self.send("GuiUpdateMessage", id=self.ids[label], updates={"value": True})


@contextlib.contextmanager
def served(gui: InstanceViewer, run_dir: Path) -> Iterator[GuiClient]:
    """``gui`` on a real viser server, installed and set up as nerfstudio's Viewer does for a viewer started on
    ``run_dir``, and a websocket client of it."""
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    try:
        for _, element in parse_object(gui, ViewerElement, "Custom Elements"):
            element.install(server)
        viewer = SimpleNamespace(viser_server=server, log_filename=run_dir / "viewer_log_filename.txt")
        gui.viewer_control._setup(viewer)  # type: ignore[arg-type]
        with connect(f"ws://127.0.0.1:{server.get_port()}", max_size=None) as socket:
            client = GuiClient(socket)
            wait_for(server.get_clients, 30, "viser to register the client", every=0.05)
            yield client
    finally:
        server.stop()


def test_export_over_the_websocket_writes_through_no_link(tmp_path: Path):
    """Links planted in exports/ under the file's name and its former temporary name, pointing out of the run
    directory: *Export selected* refuses the first and ignores the second; nothing outside changes."""
    run, outside = tmp_path / "run", tmp_path / "outside"
    (run / "exports").mkdir(parents=True)
    outside.mkdir()
    target = outside / "precious.ply"
    target.write_bytes(b"the user's file")
    final, temporary = run / "exports" / "instance_5.ply", run / "exports" / ".instance_5.ply.tmp"
    final.symlink_to(target)
    temporary.symlink_to(target)
    model = trained_like_model()  # the GUI holds its model weakly
    gui = InstanceViewer(model)
    gui.select(5)
    with served(gui, run) as client:
        assert client.wait("Export folder", bool) == "exports"
        client.click("Export selected")
        refusal = client.wait("Exported to", bool)
        assert refusal == (
            f"not exported: {run.resolve() / 'exports' / final.name} exists and is not a file unic-lift-ns wrote "
            "(a link, a folder or another program's file); move it away"
        )
        assert final.is_symlink() and temporary.is_symlink() and target.read_bytes() == b"the user's file"
        assert sorted(p.name for p in (run / "exports").iterdir()) == [".instance_5.ply.tmp", "instance_5.ply"]

        final.unlink()  # the user moves the link away; the planted temporary name stays
        client.click("Export selected")
        written = client.wait("Exported to", lambda value: value not in ("", refusal))
        assert written == str(run.resolve() / "exports" / final.name) and not final.is_symlink()
        assert final.read_bytes().startswith(b"ply\nformat binary_little_endian 1.0\ncomment Generated by unic-lift-ns")
        assert temporary.is_symlink() and target.read_bytes() == b"the user's file"
        assert sorted(p.name for p in outside.iterdir()) == ["precious.ply"]

        first = final.stat().st_ino
        client.click("Export selected")  # again: it replaces its own file
        wait_for(lambda: final.stat().st_ino != first, 30, "the file to be replaced", every=0.05)
        assert client.wait("Exported to", bool) == written and not final.is_symlink()


def votes_scene():
    """:func:`trained_like_model` whose label-9 half is stuff (semantic class 0): its rendered embedding decodes to
    9, but stuff does not vote under the semantic gate, so 'gaussian-votes' decodes it to no label 9."""
    model = trained_like_model()
    model.set_decoding(vote_gate="semantic")
    stuff = model.gaussian_labels() == 9
    with torch.no_grad():
        model.gauss_params["semantic_logits"].copy_(torch.stack([stuff.float(), (~stuff).float()], dim=-1) * 5.0)
    return model


def test_decoding_dropdown_switches_the_model_decoding():
    model = votes_scene()
    gui = InstanceViewer(model)
    assert gui.decoding.options == ["rendered-embedding", "gaussian-votes", "nearest-code"]
    assert gui.decoding.value == model.config.instance_decoding == "rendered-embedding"

    def labels() -> set:
        return set(model.get_outputs(make_camera(48))["instance_label"].long().unique().tolist())

    assert {5, 9} <= labels()
    gui.decoding.value = "gaussian-votes"
    gui.decoding.cb_hook(gui.decoding)  # what the viewer calls when a client picks the option
    assert model.config.instance_decoding == "gaussian-votes"
    assert "label_votes" in model.segmentation_features(dict(model.gauss_params))
    seen = labels()
    assert 5 in seen and 9 not in seen, seen

    gui.decoding.value = "clustering"  # not an option: a hostile client can send any string
    gui.decoding.cb_hook(gui.decoding)
    assert model.config.instance_decoding == gui.decoding.value == "gaussian-votes"
    gui.decoding.value = "rendered-embedding"
    gui.decoding.cb_hook(gui.decoding)
    assert model.config.instance_decoding == "rendered-embedding" and 9 in labels()


@dataclass
class VotesOnlyConfig(UniCLiftModelConfig):
    """A model config that narrows the decoding, as a baseline could."""

    instance_decoding: Literal["gaussian-votes"] = "gaussian-votes"


def test_decoding_dropdown_offers_only_what_the_config_allows():
    model = setup_model(VotesOnlyConfig())
    gui = InstanceViewer(model)
    assert gui.decoding.options == ["gaussian-votes"] and gui.decoding.value == "gaussian-votes"


def test_ns_train_viewers_listen_on_this_machine_only() -> None:
    """The viewer has no authentication: the registered methods bind it to 127.0.0.1 unless a flag opens it."""
    from nerfstudio.configs.method_configs import all_methods

    for method in ("unic-lift", "contrastive-lift", "gaussian-clustering"):
        assert all_methods[method].viewer.websocket_host == "127.0.0.1", method
