"""unic-lift-export: per-instance Gaussian splats, point clouds and edited scenes of a trained unic-lift run.

Examples::

    unic-lift-export instances --load-config outputs/demo/unic-lift/RUN/config.yml --output-dir exports/demo
    unic-lift-export edit --load-config outputs/demo/unic-lift/RUN/config.yml --output-dir exports/demo \\
        --move 5 --translate 0.2 0 0 --rotate 0 0 90

Every PLY of Gaussians is a standard 3DGS PLY with the vertex properties of ``ns-export gaussian-splat``. Both drop
Gaussians with non-finite parameters (with a warning), but ``ns-export gaussian-splat`` (nerfstudio 1.1.5) also drops
those of opacity below 1/255, which the CUDA rasteriser skips; they are kept here, so the instances add up to the
whole model, and the success line says how many of them there are (so how many fewer ``ns-export`` writes).

Input is checked before anything is written. A non-empty ``--output-dir`` is refused unless ``--overwrite`` is given,
which replaces only the files an earlier export of the same command wrote. Files are written to a hidden folder next
to ``--output-dir`` and moved there only once complete; on an error, Ctrl-C or SIGTERM that folder is removed.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Pattern, Sequence, Tuple, Union

import numpy as np
import tyro
from nerfstudio.utils.rich_utils import CONSOLE
from typing_extensions import Annotated

from unic_lift_ns.errors import few
from unic_lift_ns.export.instances import (
    COMBINED_PLY,
    INSTANCES_JSON,
    POINTCLOUD_DIR,
    export_instances,
    group_by_label,
    model_splats,
    move_instance,
    remove_instances,
)
from unic_lift_ns.export.ply import Splats, write_ply
from unic_lift_ns.runs import load_run
from unic_lift_ns.scripts.cli import run_cli

INSTANCES_FILES = re.compile(
    rf"(?:{POINTCLOUD_DIR}/)?instance_(?:0|[1-9][0-9]*)\.ply|{re.escape(COMBINED_PLY)}|{re.escape(INSTANCES_JSON)}"
)
"""Paths (relative, POSIX) that ``instances`` writes into --output-dir: those its --overwrite replaces or deletes."""
NS_EXPORT_MIN_OPACITY = -5.5373
"""logit(1/255), as nerfstudio 1.1.5 writes it: ``ns-export gaussian-splat`` drops Gaussians of lower logit opacity."""


def describe_labels(groups: Dict[int, np.ndarray], limit: int = 20) -> str:
    """'label (count), ...' of the largest instances, for error messages."""
    largest = sorted(groups, key=lambda label: -groups[label].size)
    shown = ", ".join(f"{label} ({groups[label].size})" for label in largest[:limit])
    more = f" and {len(largest) - limit} more" if len(largest) > limit else ""
    return f"{len(largest)} labels present, largest first with Gaussian counts: {shown}{more}"


def faint_note(opacities: np.ndarray) -> str:
    """Why ``ns-export gaussian-splat`` writes fewer Gaussians than the export of logit ``opacities``."""
    faint = int((opacities < NS_EXPORT_MIN_OPACITY).sum())
    return f"ns-export gaussian-splat would also drop the {faint} of them with opacity below 1/255"


def check_labels(flag: str, wanted: Tuple[int, ...], groups: Dict[int, np.ndarray]) -> None:
    """Refuse labels that no Gaussian has, naming the flag that asked for them."""
    unknown = [str(label) for label in wanted if label not in groups]
    if unknown:
        raise ValueError(f"{flag}: no Gaussian has label {', '.join(unknown)} ({describe_labels(groups)})")


@contextmanager
def staged(output_dir: Path, earlier: Sequence[Path]) -> Iterator[Path]:
    """A new folder to write an export into, hidden next to ``output_dir``.

    If the block succeeds the folder becomes ``output_dir`` or, when that exists, its files replace those of the
    same names there and the ``earlier`` files (paths relative to ``output_dir``) that none replaced are deleted.
    On an error, Ctrl-C or SIGTERM (see ``run_cli``) it is removed and ``output_dir`` is left as it was. Folders
    get the user's normal permissions (0o777 minus the umask).
    """
    output_dir = output_dir.resolve()  # '.' and 'a/..' have no name and no real parent
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    holder = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    stage = holder / "export"  # made by mkdir, so with the umask (mkdtemp's own folder is 0700)
    try:
        stage.mkdir()
        yield stage
        if not output_dir.exists():
            os.replace(stage, output_dir)
            return
        replaced = set()
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                relative = path.relative_to(stage)
                (output_dir / relative).parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, output_dir / relative)
                replaced.add(relative)
        for relative in set(earlier) - replaced:
            (output_dir / relative).unlink(missing_ok=True)
    finally:
        shutil.rmtree(holder, ignore_errors=True)


@dataclass
class Exporter:
    """Load a trained unic-lift run and write into a folder."""

    load_config: Path
    """Path to the config.yml of a trained unic-lift run."""
    output_dir: Path
    """Folder to write into, created if needed; one that is not empty is refused unless --overwrite is given."""
    overwrite: bool = False
    """Write into a non-empty --output-dir, touching only the files the command writes: `instances` replaces
    instance_<label>.ply, instances.ply, instances.json and pointclouds/instance_<label>.ply and deletes those of
    an earlier export that it does not write again (so no stale instance survives); `edit` replaces only
    --output-filename. Every other file is kept untouched."""

    def check_output_dir(self, written: Pattern[str]) -> List[Path]:
        """Refuse an --output-dir this export may not write into, and return the files in it (relative paths) that
        ``written`` matches: those an earlier export wrote and --overwrite replaces or deletes (at most 2 deep)."""
        folder = self.output_dir
        if folder.exists() and not folder.is_dir():
            raise NotADirectoryError(f"--output-dir: {folder} exists and is not a folder")
        if not folder.is_dir():
            return []
        entries = sorted(folder.iterdir())
        if entries and not self.overwrite:
            raise FileExistsError(
                f"--output-dir: {folder} is not empty ({few([p.name for p in entries])}); pass --overwrite to replace "
                "the files of an earlier unic-lift-export there and keep the others"
            )
        inside = entries + [sub for p in entries if p.is_dir() and not p.is_symlink() for sub in sorted(p.iterdir())]
        earlier = [p.relative_to(folder) for p in inside if written.fullmatch(p.relative_to(folder).as_posix())]
        for relative in earlier:
            if (folder / relative).is_symlink() or not (folder / relative).is_file():
                raise FileExistsError(
                    f"--output-dir: {folder / relative} is a folder, link or special file, not one unic-lift-export "
                    "wrote; move it away"
                )
        return earlier

    def load(self) -> Tuple[Splats, np.ndarray]:
        """The finite Gaussians of the run and their instance labels."""
        model = load_run(self.load_config, test_mode="inference").model
        return model_splats(model, model.gaussian_labels())


@dataclass
class ExportInstances(Exporter):
    """Write each instance as a 3DGS PLY and a coloured point cloud, all of them as one PLY with an integer
    ``instance`` vertex property, and instances.json (label, colour, Gaussian count, bounding box, centroid)."""

    instances: Tuple[int, ...] = ()
    """Instance labels to export; all by default."""
    min_gaussians: int = 10
    """Leave out instances with fewer Gaussians than this. The default 10 leaves out the specks of a few Gaussians
    that end up with a label of their own (floaters, stray votes), which are noise rather than objects; pass 1 to
    export every instance."""

    def main(self) -> None:
        earlier = self.check_output_dir(INSTANCES_FILES)
        pointclouds = self.output_dir / POINTCLOUD_DIR
        if pointclouds.is_symlink() or (pointclouds.exists() and not pointclouds.is_dir()):
            raise NotADirectoryError(f"--output-dir: {pointclouds} is not a folder an export wrote; move it away")
        if self.min_gaussians < 1:
            raise ValueError(f"--min-gaussians must be at least 1, got {self.min_gaussians}")
        splats, labels = self.load()
        groups = group_by_label(labels)
        check_labels("--instances", self.instances, groups)
        requested = list(dict.fromkeys(self.instances)) or sorted(groups)
        chosen = [label for label in requested if groups[label].size >= self.min_gaussians]
        if not chosen:
            raise ValueError(
                f"--min-gaussians {self.min_gaussians} leaves no instance to export: the largest of the "
                f"{len(requested)} requested has {max(groups[label].size for label in requested)} Gaussians"
            )
        if len(chosen) < len(requested):
            left_out = len(requested) - len(chosen)
            CONSOLE.print(f"Leaving out {left_out} instances with fewer than {self.min_gaussians} Gaussians")
        with staged(self.output_dir, earlier) as stage:
            records = export_instances(splats, labels, chosen, stage)
        total = sum(record.num_gaussians for record in records)
        exported = np.isin(labels, chosen)
        CONSOLE.print(
            f"[bold green]:white_check_mark: {len(records)} instances ({total} of {len(labels)} Gaussians; "
            f"{faint_note(splats.opacities[exported])}) -> "
            f"{self.output_dir}: instance_<label>.ply, {POINTCLOUD_DIR}/, {COMBINED_PLY}, {INSTANCES_JSON}"
        )


@dataclass
class EditScene(Exporter):
    """Remove and/or move instances and write the whole scene as one standard 3DGS PLY (paper Fig. 10)."""

    remove: Tuple[int, ...] = ()
    """Instance labels whose Gaussians are deleted."""
    move: Optional[int] = None
    """Instance label to rotate (about its centroid) and translate."""
    translate: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Translation of --move, in the scene's (dataparser-transformed) coordinates."""
    rotate: Tuple[float, float, float] = (0.0, 0.0, 0.0)
    """Rotation of --move about its centroid before --translate: extrinsic x, y, z Euler angles in degrees."""
    output_filename: str = "edited.ply"
    """Name of the PLY written into --output-dir."""

    def check_flags(self) -> None:
        """Refuse flag combinations that edit nothing or contradict each other."""
        if not self.remove and self.move is None:
            raise ValueError("Nothing to edit: pass --remove and/or --move")
        if self.move is None and (any(self.translate) or any(self.rotate)):
            raise ValueError("--translate and --rotate need --move")
        if self.move is not None and self.move in self.remove:
            raise ValueError(f"--move {self.move} is also in --remove")
        if Path(self.output_filename).name != self.output_filename or not self.output_filename.endswith(".ply"):
            raise ValueError(f"--output-filename must be a file name ending in .ply, got {self.output_filename!r}")

    def main(self) -> None:
        self.check_flags()
        earlier = self.check_output_dir(re.compile(re.escape(self.output_filename)))
        splats, labels = self.load()
        groups = group_by_label(labels)
        check_labels("--remove", self.remove, groups)
        check_labels("--move", () if self.move is None else (self.move,), groups)
        if self.move is not None:
            splats = move_instance(splats, labels, self.move, self.translate, self.rotate)
        if self.remove:
            splats, labels = remove_instances(splats, labels, self.remove)
        if len(splats) == 0:
            raise ValueError("--remove deletes every Gaussian: nothing left to write")
        with staged(self.output_dir, earlier) as stage:
            write_ply(stage / self.output_filename, splats.vertices())
        CONSOLE.print(
            f"[bold green]:white_check_mark: Edited scene ({len(splats)} Gaussians; {faint_note(splats.opacities)}) "
            f"-> {self.output_dir / self.output_filename}"
        )


Commands = Union[
    Annotated[ExportInstances, tyro.conf.subcommand(name="instances")],
    Annotated[EditScene, tyro.conf.subcommand(name="edit")],
]


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-export", Commands)


if __name__ == "__main__":
    entrypoint()
