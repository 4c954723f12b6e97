"""Instance tools for nerfstudio's live viewer: decoding choice, colour overlay, the instance list, click-to-pick,
corrections (merge, split, delete, undo; :mod:`unic_lift_ns.corrections`), isolate/hide and export.

:class:`InstanceViewer` is a parameter-free ``nn.Module`` attribute of the pipeline (GARField's pattern), so
nerfstudio's viewer finds its ``Viewer*`` elements (``parse_object`` only descends into modules) and installs them
under "Custom Elements". It drives the model through its render settings (decoding, overlay opacity, highlighted
label, Gaussian filter); the model knows nothing of it. The pure logic (label under a click, Gaussian masks, export
folder confinement) lives in functions that need no viewer.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, List, Literal, Optional, Tuple, get_args, get_type_hints

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.viewer.viewer_elements import (
    ViewerButton,
    ViewerClick,
    ViewerControl,
    ViewerDropdown,
    ViewerRGB,
    ViewerSlider,
    ViewerText,
)
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor, nn

from unic_lift_ns.corrections import CORRECTIONS_FILE, Correction, Corrections, load_corrections
from unic_lift_ns.errors import InputError
from unic_lift_ns.export.instances import export_instance, label_colour, model_splats

if TYPE_CHECKING:
    from unic_lift_ns.models.backbone import SegmentationSplatModel

PICK_HEIGHT = 256
"""Height in pixels of the render that decodes the label under a click."""
MIN_ALPHA = 0.5
"""A click on a pixel with less accumulated opacity hits background, not an instance."""
NO_INSTANCE = "(none)"
"""The instance list's entry that selects nothing."""
SORT_KEYS = ("Gaussian count", "label")
"""What the instance list can be sorted by."""


@dataclass(frozen=True)
class InstanceSummary:
    """One entry of the instance list."""

    label: int
    """The instance label."""
    count: int
    """How many Gaussians carry it."""
    size: float
    """Largest side of the bounding box of its Gaussians' centres, in scene units."""

    def entry(self) -> str:
        """How the list shows it; :func:`label_of_entry` reads the label back."""
        return f"{self.label}: {self.count} Gaussians, {self.size:.3g} wide"


def instance_summaries(labels: Tensor, means: Tensor, sort_by: str = SORT_KEYS[0]) -> List[InstanceSummary]:
    """Every label of the Gaussians with its count and size, by count (largest first) or by label."""
    unique, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
    index = inverse.unsqueeze(-1).expand(-1, 3)
    low = means.new_full((len(unique), 3), float("inf")).scatter_reduce(0, index, means, "amin")
    high = means.new_full((len(unique), 3), float("-inf")).scatter_reduce(0, index, means, "amax")
    sizes = (high - low).amax(dim=-1)
    summaries = [InstanceSummary(*row) for row in zip(unique.tolist(), counts.tolist(), sizes.tolist())]
    return summaries if sort_by == "label" else sorted(summaries, key=lambda s: -s.count)


def label_of_entry(entry: str) -> Optional[int]:
    """The label of an instance-list entry, None for :data:`NO_INSTANCE` or text that is not an entry (a client
    can send any string)."""
    head = entry.split(":", 1)[0]
    return int(head) if head.isdigit() else None


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


class RunViewerControl(ViewerControl):
    """nerfstudio's ViewerControl that calls ``on_setup`` once the viewer (and so the run directory) is known."""

    def __init__(self, on_setup: Callable[[], None]) -> None:
        super().__init__()
        self._on_setup = on_setup

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self._on_setup()


class InstanceViewer(nn.Module):
    """Viewer GUI of UniC-Lift, shown in the viewer's Control tab under Custom Elements.

    nerfstudio lists the elements by attribute name, so the names below sort in display order.
    """

    def __init__(self, model: SegmentationSplatModel) -> None:
        super().__init__()
        self._model = weakref.ref(model)  # a weak reference: registering the model as a submodule would loop
        self.selected: Optional[int] = None
        self.viewer_control = RunViewerControl(self.restore_corrections)
        self.lists_itself = hasattr(model, "set_corrections")  # labels per Gaussian, cheap: no clustering to run
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
        self.instances_list = ViewerDropdown(
            "Instances", NO_INSTANCE, [NO_INSTANCE], cb_hook=lambda _: self.choose_instance(),
            hint="Every instance: label, Gaussian count, size of its Gaussians; choosing one selects it",
        )  # fmt: skip
        self.instances_refresh = ViewerButton("List instances again", cb_hook=lambda _: self.refresh_instances())
        self.instances_sort = ViewerDropdown(
            "Sort instances by", SORT_KEYS[0], list(SORT_KEYS), cb_hook=lambda _: self.refresh_instances()
        )
        self.pick_instance = ViewerButton("Pick instance", cb_hook=lambda _: self.start_pick())
        self.picked = ViewerText("Selected", "none (click Pick instance, then the scene)", disabled=True)
        self.picked_colour = ViewerRGB("Colour", (0, 0, 0), disabled=True, hint="The selected instance's colour")
        if hasattr(model, "set_corrections"):  # UniC-Lift: labels per Gaussian, corrected without clustering
            self.picked_corrections = ViewerText(
                "Corrections", "none", disabled=True, hint=f"Saved in the run directory's {CORRECTIONS_FILE}"
            )
            self.picked_delete = ViewerButton("Delete (make background)", cb_hook=lambda _: self.correct("delete"))
            self.picked_merge = ViewerButton("Merge with a clicked one", cb_hook=lambda _: self.start_merge())
            self.picked_split = ViewerButton("Split into 3D parts", cb_hook=lambda _: self.correct("split"))
            self.picked_undo = ViewerButton("Undo correction", cb_hook=lambda _: self.undo())
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
        self.refresh_instances()

    def set_overlay_opacity(self) -> None:
        """Tint ``instance_overlay`` as strongly as the slider says."""
        self._owner().overlay_opacity = float(self.overlay_opacity.value)

    def select(self, label: Optional[int]) -> None:
        """Select an instance (None clears; ``instance_overlay`` highlights it), show its Gaussian count and colour,
        and choose it in the instance list."""
        self.selected = label
        self._owner().highlighted_label = label
        if label is None:
            self.picked.value = "none"
            self.instances_list.value = NO_INSTANCE
            return
        count = int((self._owner().gaussian_labels() == label).sum())
        self.picked.value = f"label {label}: {count} Gaussians"
        self.picked_colour.value = label_colour(label)
        entry = next((e for e in self.instances_list.options if label_of_entry(e) == label), None)
        if entry is not None and self.instances_list.value != entry:
            self.instances_list.value = entry

    def refresh_instances(self) -> None:
        """List the instances the Gaussians carry now (after a decoding change, a correction, or training)."""
        model = self._owner()
        summaries = instance_summaries(model.gaussian_labels(), model.means.detach(), self.instances_sort.value)
        entries = [NO_INSTANCE] + [summary.entry() for summary in summaries]
        current = next((e for e in entries if self.selected is not None and label_of_entry(e) == self.selected), None)
        self.instances_list.set_options(entries)
        self.instances_list.value = current or NO_INSTANCE

    def choose_instance(self) -> None:
        """Select the instance chosen in the list, as a pick does."""
        label = label_of_entry(self.instances_list.value)
        if label != self.selected and (label is not None or self.instances_list.value == NO_INSTANCE):
            self.select(label)

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
        self.viewer_control.register_pointer_cb("click", lambda click: self._on_click(click, self.select))

    def _on_click(self, click: ViewerClick, chosen: Callable[[int], None]) -> None:
        self.viewer_control.unregister_pointer_cb()
        camera = self._viewer_camera()
        if camera is None:
            return
        outputs = self.render_for_pick(camera)
        label = label_at(outputs["instance_label"], outputs["accumulation"], click.screen_pos)
        if label is None:
            self.picked.value = "none: the click hit background"
        else:
            chosen(label)

    def start_merge(self) -> None:
        """Arm one click: the instance clicked next joins the selected one."""
        if self.selected is None:
            self.picked_corrections.value = "nothing selected: pick an instance first"
            return
        self.picked_corrections.value = f"click the instance to merge into label {self.selected}"
        self.viewer_control.register_pointer_cb("click", lambda click: self._on_click(click, self.merge))

    def merge(self, label: int) -> None:
        """Merge the instance ``label`` into the selected one."""
        if label == self.selected:
            self.picked_corrections.value = f"label {label} is the selected instance: click another one"
            return
        self.correct("merge", label)

    def correct(self, op: Literal["merge", "split", "delete"], other: Optional[int] = None) -> None:
        """Apply one correction to the selected instance (merge: ``other`` joins it) and save the corrections."""
        if self.selected is None:
            self.picked_corrections.value = "nothing selected: pick an instance first"
            return
        model = self._owner()
        if op == "merge":
            correction = Correction("merge", other, into=self.selected)
        else:
            correction = Correction(op, self.selected)
        if self._save_and_apply(model.corrections.then(correction)):
            self.select(None if op == "delete" else self.selected)

    def undo(self) -> None:
        """Take the last correction back."""
        corrections = self._owner().corrections
        if not corrections.operations:
            self.picked_corrections.value = "nothing to undo"
            return
        if self._save_and_apply(corrections.undone()) and self.selected is not None:
            self.select(self.selected)

    def _save_and_apply(self, corrections: Corrections) -> bool:
        """Write ``corrections`` into the run directory, then label with them; on a refusal change nothing."""
        run_dir = self.run_dir()
        try:
            if run_dir is None:
                raise ValueError("no run directory: correct in a viewer started on a run")
            corrections.save(run_dir)
        except (ValueError, OSError) as error:  # a link or another program's file of that name, no permission, ...
            self.picked_corrections.value = f"not saved, not applied: {error}"
            return False
        self._owner().set_corrections(corrections)
        self._show_corrections()
        self.refresh_instances()
        return True

    def _show_corrections(self) -> None:
        operations = self._owner().corrections.operations
        described = [f"{c.op} {c.label}" + (f" into {c.into}" if c.into is not None else "") for c in operations]
        self.picked_corrections.value = f"{len(operations)}: " + ", ".join(described[-3:]) if operations else "none"

    def restore_corrections(self) -> None:
        """Once the viewer is set up: replay the run directory's corrections (from an earlier session) and list the
        instances. A bad file is one line on the console and in the GUI, and it is not applied."""
        model, run_dir = self._owner(), self.run_dir()
        path = None if run_dir is None else run_dir / CORRECTIONS_FILE
        if hasattr(model, "set_corrections") and path is not None and path.exists():
            try:
                model.set_corrections(load_corrections(path))
                self._show_corrections()
            except InputError as error:
                CONSOLE.print(f"unic-lift viewer: {error}", style="bold red", markup=False, soft_wrap=True)
                self.picked_corrections.value = f"not applied: {error}"
        if self.lists_itself:
            self.refresh_instances()

    def after_training_steps(self, step: int) -> None:
        """Training callback: list the instances again, as densification and training change the Gaussians."""
        if self.lists_itself and self.instances_list.gui_handle is not None:
            self.refresh_instances()

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
