"""Instance tools for nerfstudio's live viewer: decoding choice, colour overlay, click-to-pick, isolate/hide and
export.

:class:`InstanceViewer` is a parameter-free ``nn.Module`` attribute of the pipeline (GARField's pattern), so
nerfstudio's viewer finds its ``Viewer*`` elements (``parse_object`` only descends into modules) and installs them
under "Custom Elements". It drives the model through its render settings (decoding, overlay opacity, highlighted
label, Gaussian filter); the model knows nothing of it. The pure logic (label under a click, Gaussian masks, export
folder confinement) lives in functions that need no viewer.
"""

from __future__ import annotations

import contextlib
import weakref
from pathlib import Path
from typing import TYPE_CHECKING, List, Literal, Optional, Tuple, get_args, get_type_hints

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerSlider,
    ViewerText,
)
from torch import Tensor, nn


if TYPE_CHECKING:
    from unic_lift_ns.models.backbone import SegmentationSplatModel

PICK_HEIGHT = 256
"""Height in pixels of the render that decodes the label under a click."""
MIN_ALPHA = 0.5
"""A click on a pixel with less accumulated opacity hits background, not an instance."""


def label_at(labels: Tensor, accumulation: Tensor, screen_pos: Tuple[float, float]) -> Optional[int]:
    """Instance label under a click, or None when the click hits background.

    Args:
        labels: [H, W] or [H, W, 1] integer labels (any dtype).
        accumulation: [H, W] or [H, W, 1] accumulated opacity of the same render.
        screen_pos: click position normalised to [0, 1], OpenCV convention (x right, y down).
    """
    height, width = labels.shape[:2]
    col = min(max(int(screen_pos[0] * width), 0), width - 1)
    row = min(max(int(screen_pos[1] * height), 0), height - 1)
    if float(accumulation[row, col].reshape(-1)[0]) < MIN_ALPHA:
        return None
    return int(labels[row, col].reshape(-1)[0])


def gaussian_filter_for(labels: Tensor, selected: int, mode: Literal["isolate", "hide"]) -> Tensor:
    """Boolean [N] mask of the Gaussians to draw: only the selected instance, or everything but it."""
    chosen = labels == selected
    return chosen if mode == "isolate" else ~chosen


def confined_folder(run_dir: Path, text: str) -> Path:
    """The folder ``text`` names inside ``run_dir``, symlinks resolved. ``text`` comes from a viewer client, so it is
    hostile input: only relative paths without ``~`` or ``..`` that stay inside ``run_dir`` are accepted.

    Raises:
        ValueError: ``text`` is absolute, starts with ``~``, has a ``..`` component or resolves (through symlinks of
            existing components) outside ``run_dir``.
    """
    relative = Path(text)
    if relative.is_absolute():
        raise ValueError(f"{text!r} is absolute; give a folder relative to the run directory")
    if relative.parts and relative.parts[0].startswith("~"):
        raise ValueError(f"{text!r} starts with '~'; give a folder relative to the run directory")
    if ".." in relative.parts:
        raise ValueError(f"{text!r} has a '..' component")
    root = run_dir.resolve()
    try:
        folder = (root / relative).resolve()
    except RuntimeError as error:  # a symlink loop
        raise ValueError(f"{text!r}: {error}") from error
    if not folder.is_relative_to(root):
        raise ValueError(f"{text!r} resolves to {folder}, outside the run directory {root}")
    return folder


def decoding_options(model: SegmentationSplatModel) -> List[str]:
    """The ``instance_decoding`` values the model's config type allows (a subclass may narrow the Literal); none
    for a method without a decoding choice (the clustering baselines)."""
    return list(get_args(get_type_hints(type(model.config)).get("instance_decoding", ())))


class InstanceViewer(nn.Module):
    """Viewer GUI of UniC-Lift, shown in the viewer's Control tab under Custom Elements.

    nerfstudio lists the elements by attribute name, so the names below sort in display order.
    """

    def __init__(self, model: SegmentationSplatModel) -> None:
        super().__init__()
        self._model = weakref.ref(model)  # a weak reference: registering the model as a submodule would loop
        self.selected: Optional[int] = None
        self.viewer_control = ViewerControl()
        options = decoding_options(model)
        if options:
            self.decoding = ViewerDropdown(
                "Instance decoding",
                model.config.instance_decoding,
                options,
                cb_hook=lambda _: self.set_decoding(),
                hint="How pixels get instance labels (the model config's instance_decoding)",
            )
        self.overlay_opacity = ViewerSlider(
            "Overlay opacity", model.overlay_opacity, 0.0, 1.0, 0.05, cb_hook=lambda _: self.set_overlay_opacity(),
            hint="Instance colours over RGB in the instance_overlay output",
        )  # fmt: skip
        self.pick_instance = ViewerButton("Pick instance", cb_hook=lambda _: self.start_pick())
        self.picked = ViewerText("Selected", "none (click Pick instance, then the scene)", disabled=True)
        self.subset_hide = ViewerButton("Hide", cb_hook=lambda _: self.set_subset("hide"))
        self.subset_isolate = ViewerButton("Isolate", cb_hook=lambda _: self.set_subset("isolate"))
        self.subset_show_all = ViewerButton("Show all", cb_hook=lambda _: self.show_all())
        self.write_folder = ViewerText(
            "Export folder", "exports", hint="A folder inside the run directory: relative, without '~' or '..'"
        )
        self.write_selected = ViewerButton("Export selected", cb_hook=lambda _: self.export_selected())
        self.written = ViewerText("Exported to", "", disabled=True)

    def _owner(self) -> SegmentationSplatModel:
        model = self._model()
        assert model is not None, "the model of this viewer GUI was deleted"
        return model

    def set_decoding(self) -> None:
        """Decode pixels as the dropdown says; nerfstudio re-renders after every custom element's callback."""
        model = self._owner()
        if self.decoding.value not in self.decoding.options:  # a client can send any string
            self.decoding.value = model.config.instance_decoding
            return
        model.set_decoding(instance_decoding=self.decoding.value)

    def set_overlay_opacity(self) -> None:
        """Tint ``instance_overlay`` as strongly as the slider says."""
        self._owner().overlay_opacity = float(self.overlay_opacity.value)

    def select(self, label: Optional[int]) -> None:
        """Select an instance (None clears; ``instance_overlay`` highlights it) and show its Gaussian count."""
        self.selected = label
        self._owner().highlighted_label = label
        if label is None:
            self.picked.value = "none"
        else:
            count = int((self._owner().gaussian_labels() == label).sum())
            self.picked.value = f"label {label}: {count} Gaussians"

    def set_subset(self, mode: Literal["isolate", "hide"]) -> None:
        """Draw only the selected instance, or everything but it."""
        if self.selected is None:
            self.picked.value = "none: pick an instance first"
            return
        model = self._owner()
        model.gaussian_filter = gaussian_filter_for(model.gaussian_labels(), self.selected, mode)

    def show_all(self) -> None:
        """Draw every Gaussian again and clear the selection."""
        self._owner().gaussian_filter = None
        self.select(None)

    def start_pick(self) -> None:
        """Listen for ONE click: viser disables camera control while a pointer callback is registered."""
        self.picked.value = "click on an instance in the scene"
        self.viewer_control.register_pointer_cb("click", self._on_click)

    def _on_click(self, click: ViewerClick) -> None:
        self.viewer_control.unregister_pointer_cb()
        camera = self._viewer_camera()
        if camera is None:
            return
        outputs = self.render_for_pick(camera)
        label = label_at(outputs["instance_label"], outputs["accumulation"], click.screen_pos)
        if label is None:
            self.picked.value = "none: the click hit background"
        else:
            self.select(label)

    def _viewer_camera(self) -> Optional[Cameras]:
        """The first client's current view at ``PICK_HEIGHT`` rows, with its aspect ratio."""
        clients = self.viewer_control.viser_server.get_clients()
        if not clients:
            return None
        aspect = next(iter(clients.values())).camera.aspect
        return self.viewer_control.get_camera(PICK_HEIGHT, max(1, round(PICK_HEIGHT * aspect)))

    @torch.no_grad()
    def render_for_pick(self, camera: Cameras) -> dict:
        """Evaluation render of one camera with the viewer's crop, safe to run beside training."""
        model = self._owner()
        viewer = getattr(self.viewer_control, "viewer", None)
        lock = viewer.train_lock if viewer is not None and viewer.train_lock is not None else contextlib.nullcontext()
        obb = viewer.control_panel.crop_obb if viewer is not None and viewer.control_panel.crop_viewport else None
        with lock:
            was_training = model.training
            model.eval()
            try:
                return model.get_outputs_for_camera(camera, obb_box=obb)
            finally:
                model.train(was_training)

    def run_dir(self) -> Optional[Path]:
        """The run directory (where config.yml and the viewer log are), None without a viewer."""
        viewer = getattr(self.viewer_control, "viewer", None)
        return None if viewer is None else Path(viewer.log_filename).parent

    def export_selected(self) -> Optional[Path]:
        """Write the selected instance's Gaussians with ``unic_lift_ns.export.instances.export_instance`` into the
        "Export folder", confined to the run directory; a link or another program's file under the file's name is
        refused (nothing is written through links). Refusals and errors are shown in "Exported to"."""
        self.written.value = ""
        if self.selected is None:
            self.written.value = "nothing selected: pick an instance first"
            return None
        from unic_lift_ns.export.instances import export_instance, model_splats

        run_dir = self.run_dir()
        try:
            if run_dir is None:
                raise ValueError("no run directory: export from a viewer started on a run")
            folder = confined_folder(run_dir, self.write_folder.value)
        except ValueError as error:
            self.written.value = f"refused: {error}"
            return None
        try:
            model = self._owner()
            path = export_instance(*model_splats(model, model.gaussian_labels()), self.selected, folder)
        except (ValueError, OSError) as error:  # no such label; folder is a file; a link or foreign file, ...
            self.written.value = f"not exported: {error}"
            return None
        self.written.value = str(path)
        return path
