"""unic-lift-export: per-instance Gaussian splats, point clouds and edited scenes of a trained unic-lift run.

Examples::

    unic-lift-export instances --load-config outputs/demo/unic-lift/RUN/config.yml --output-dir exports/demo
    unic-lift-export edit --load-config outputs/demo/unic-lift/RUN/config.yml --output-dir exports/demo \\
        --move 5 --translate 0.2 0 0 --rotate 0 0 90

Every PLY of Gaussians is a standard 3DGS PLY with the vertex properties of ``ns-export gaussian-splat``. Unlike
``ns-export``, Gaussians of low opacity are kept (so the instances add up to the whole model); Gaussians with
non-finite parameters are dropped with a warning. Input is checked before anything is written, and the files of
``instances`` are written to a temporary folder next to ``--output-dir`` and moved there only once complete.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, Optional, Tuple, Union

import numpy as np
import tyro
import yaml
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE
from typing_extensions import Annotated

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
from unic_lift_ns.model import UniCLiftModel, UniCLiftModelConfig
from unic_lift_ns.scripts.cli import run_cli


def checkpoint_dir(config_path: Path, config: TrainerConfig) -> Path:
    """The run's checkpoint folder: next to config.yml (a moved run) or where the config says."""
    for folder in (config_path.parent / config.relative_model_dir, config.get_checkpoint_dir()):
        if folder.is_dir() and any(folder.glob("step-*.ckpt")):
            return folder.resolve()
    raise FileNotFoundError(f"--load-config: no step-*.ckpt checkpoint next to {config_path} or in {folder}")


def load_model(config_path: Path) -> UniCLiftModel:
    """Load the UniC-Lift model of a run's config.yml (latest checkpoint), refusing other methods' runs."""
    from nerfstudio.utils.eval_utils import eval_setup

    if not config_path.is_file():
        raise FileNotFoundError(f"--load-config: no such file {config_path}")
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, ImportError, AttributeError, TypeError) as err:
        raise ValueError(f"--load-config: {config_path} is not a readable nerfstudio config ({err})") from err
    if not isinstance(config, TrainerConfig):
        raise ValueError(f"--load-config: {config_path} is not a nerfstudio config.yml")
    if not isinstance(config.pipeline.model, UniCLiftModelConfig):
        raise ValueError(
            f"--load-config: {config_path} is a '{config.method_name}' run "
            f"({type(config.pipeline.model).__name__}), not a unic-lift run"
        )
    folder = checkpoint_dir(config_path, config)

    def use_folder(loaded: TrainerConfig) -> TrainerConfig:
        loaded.relative_model_dir = folder  # absolute, so get_checkpoint_dir() returns it unchanged
        return loaded

    try:
        _, pipeline, _, _ = eval_setup(config_path, test_mode="inference", update_config_callback=use_folder)
    except RuntimeError as err:  # e.g. tensor shapes that do not match the config
        raise ValueError(f"--load-config: cannot load the checkpoint in {folder}: {err}") from err
    return pipeline.model


def describe_labels(groups: Dict[int, np.ndarray], limit: int = 20) -> str:
    """'label (count), ...' of the largest instances, for error messages."""
    largest = sorted(groups, key=lambda label: -groups[label].size)
    shown = ", ".join(f"{label} ({groups[label].size})" for label in largest[:limit])
    more = f" and {len(largest) - limit} more" if len(largest) > limit else ""
    return f"{len(largest)} labels present, largest first with Gaussian counts: {shown}{more}"


def check_labels(flag: str, wanted: Tuple[int, ...], groups: Dict[int, np.ndarray]) -> None:
    """Refuse labels that no Gaussian has, naming the flag that asked for them."""
    unknown = [str(label) for label in wanted if label not in groups]
    if unknown:
        raise ValueError(f"{flag}: no Gaussian has label {', '.join(unknown)} ({describe_labels(groups)})")


@contextmanager
def staged(output_dir: Path) -> Iterator[Path]:
    """A temporary folder next to ``output_dir`` whose files move into ``output_dir`` only if the block succeeds."""
    output_dir.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", suffix=".tmp", dir=output_dir.parent))
    try:
        yield stage
        if not output_dir.exists():
            os.replace(stage, output_dir)
            return
        for path in sorted(stage.rglob("*")):
            if path.is_file():
                target = output_dir / path.relative_to(stage)
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(path, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


@dataclass
class Exporter:
    """Load a trained unic-lift run and write into a folder."""

    load_config: Path
    """Path to the config.yml of a trained unic-lift run."""
    output_dir: Path
    """Folder to write into (created if needed); files of the same names are replaced, others are kept."""

    def check_output_dir(self) -> None:
        if self.output_dir.exists() and not self.output_dir.is_dir():
            raise NotADirectoryError(f"--output-dir: {self.output_dir} exists and is not a folder")

    def load(self) -> Tuple[Splats, np.ndarray]:
        """The finite Gaussians of the run and their instance labels."""
        return model_splats(load_model(self.load_config))


@dataclass
class ExportInstances(Exporter):
    """Write each instance as a 3DGS PLY and a coloured point cloud, all of them as one PLY with an integer
    ``instance`` vertex property, and instances.json (label, colour, Gaussian count, bounding box, centroid)."""

    instances: Tuple[int, ...] = ()
    """Instance labels to export; all by default."""
    min_gaussians: int = 1
    """Leave out instances with fewer Gaussians than this."""

    def main(self) -> None:
        self.check_output_dir()
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
        with staged(self.output_dir) as stage:
            records = export_instances(splats, labels, chosen, stage)
        total = sum(record.num_gaussians for record in records)
        CONSOLE.print(
            f"[bold green]:white_check_mark: {len(records)} instances ({total} of {len(labels)} Gaussians) -> "
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
        self.check_output_dir()
        self.check_flags()
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
        self.output_dir.mkdir(parents=True, exist_ok=True)
        path = write_ply(self.output_dir / self.output_filename, splats.vertices())
        CONSOLE.print(f"[bold green]:white_check_mark: Edited scene ({len(splats)} Gaussians) -> {path}")


Commands = tyro.conf.FlagConversionOff[
    Union[
        Annotated[ExportInstances, tyro.conf.subcommand(name="instances")],
        Annotated[EditScene, tyro.conf.subcommand(name="edit")],
    ]
]


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-export", Commands)


if __name__ == "__main__":
    entrypoint()
