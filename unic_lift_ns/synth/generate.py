"""Generate a Messy-Rooms-style scene folder that `ns-train` reads with the stock `nerfstudio-data` parser.

Layout written (all PNGs are lossless; the same seed gives the same bytes)::

    images/frame_00000.png          RGB views, in capture (trajectory) order
    instance_masks/frame_00000.png  16-bit simulated 2D-segmenter IDs, inconsistent across views, 0 = ignore
    semantic_masks/frame_00000.png  8-bit: 0 background, 1 object, 255 unlabelled (same segmenter)
    gt/instances/frame_00000.png    16-bit tracked IDs, consistent across views (evaluation only)
    gt/semantics/frame_00000.png    8-bit: 0 background, 1 object (evaluation only)
    transforms.json                 intrinsics, OpenGL camera-to-world, ply_file_path, train/val/test split
    split.json                      {"train": [...stems], "eval": [...stems]}: every `eval_interval`-th view held out
    sparse_pc.ply                   coloured points back-projected from the rendered depth
    scene.json                      every generation parameter, the seed and the object list

``--overwrite`` replaces only a folder that holds such a scene and nothing else (its scene.json names this generator).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import List, Literal, Optional

import numpy as np
from PIL import Image
from tqdm import tqdm

from unic_lift_ns.errors import few
from unic_lift_ns.synth.cameras import Intrinsics, dome_trajectory
from unic_lift_ns.synth.physics import floor_side, settle_objects
from unic_lift_ns.synth.pointcloud import backproject, write_ply
from unic_lift_ns.synth.scene_renderer import SceneRenderer
from unic_lift_ns.synth.segmenter import PRESETS, simulate_segmenter

FORMAT_VERSION = 1
"""Version of the layout above, recorded in scene.json."""
GENERATOR = "unic-lift-synth"
"""What scene.json's "generator" says: the signature that lets --overwrite replace a folder."""
VIEW_DIRS = ("images", "instance_masks", "semantic_masks", "gt/instances", "gt/semantics")
"""Sub-folders holding one PNG per view."""
TOP_FILES = ("transforms.json", "split.json", "sparse_pc.ply", "scene.json")
"""Files at the top of a scene folder."""
_VIEW_PNG = re.compile(r"frame_[0-9]{5,}\.png")

NoisePreset = Literal["clean", "realistic", "hard"]
"""Error presets of the simulated 2D segmenter (``segmenter.PRESETS``)."""


@dataclass
class SynthConfig:
    """Options of `unic-lift-synth`."""

    output: Path
    """Scene folder to write. It must not exist yet unless --overwrite is given."""
    num_objects: int = 25
    """Number of objects dropped into the scene (Messy Rooms uses 25, 50, 100 and 500)."""
    num_views: int = 120
    """Number of rendered views."""
    resolution: int = 256
    """Width and height of every view, in pixels."""
    noise: NoisePreset = "realistic"
    """Error preset of the simulated 2D segmenter that makes the training masks."""
    seed: int = 0
    """Random seed; the same seed gives byte-identical files."""
    eval_interval: int = 8
    """Every eval_interval-th view (0, 8, 16, ...) is held out for evaluation, as nerfstudio does."""
    num_points: int = 20000
    """Number of points in the initial point cloud (sparse_pc.ply)."""
    floor_side_25: float = 1.0
    """Floor side in metres for 25 objects; the floor area grows linearly with the number of objects."""
    camera_distance_25: float = 1.6
    """Camera distance in metres for 25 objects; it grows with sqrt(N/25)."""
    focal_25: float = 1.4
    """Focal length in units of the image width for 25 objects; it grows with sqrt(N/25)."""
    overwrite: bool = False
    """Replace an existing --output folder, but only one that holds a scene written by unic-lift-synth (its
    scene.json) and no other file; it is replaced only once the new scene is complete. The current folder, its
    ancestors and the home folder are never replaced."""

    def main(self) -> None:
        """Generate the scene (what `unic-lift-synth` runs)."""
        generate_scene(self)


def _scene_geometry(cfg: SynthConfig) -> dict:
    growth = math.sqrt(cfg.num_objects / 25.0)
    side = floor_side(cfg.num_objects, cfg.floor_side_25)
    distance = cfg.camera_distance_25 * growth
    return {
        "growth": growth,
        "floor_side": side,
        "camera_distance": distance,
        "focal_px": cfg.focal_25 * growth * cfg.resolution,
        "look_at_wander": side * (0.1 + 0.3 * (1.0 - 1.0 / growth)),
        "near": 0.05 * distance,
        "far": 10.0 * distance,
    }


def _save_png(path: Path, array: np.ndarray) -> None:
    Image.fromarray(array).save(path, format="PNG")


def _protected(target: Path) -> Optional[str]:
    """What the absolute, resolved ``target`` is if it is a folder that is never replaced, else None."""
    cwd = Path.cwd().resolve()
    if target == Path(target.anchor):
        return "the file-system root"
    if target == Path.home().resolve():
        return "the home folder"
    if target == cwd:
        return "the current folder"
    if target in cwd.parents:
        return "an ancestor of the current folder"
    return None


def _is_generated_scene(folder: Path) -> bool:
    """Whether ``folder/scene.json`` carries the signature generate_scene writes."""
    try:
        scene = json.loads((folder / "scene.json").read_text())
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return False
    return isinstance(scene, dict) and scene.get("generator") == GENERATOR and type(scene.get("format_version")) is int


def _foreign_paths(folder: Path) -> List[str]:
    """Sorted relative paths in ``folder`` that are not part of the layout above (a foreign folder is listed, not
    its contents); links and special files are always foreign."""
    known_dirs = {"gt", *VIEW_DIRS}
    foreign = []
    for root, dirs, files in os.walk(folder):
        base = Path(root).relative_to(folder)
        known = [d for d in dirs if (base / d).as_posix() in known_dirs and not (Path(root) / d).is_symlink()]
        foreign += [(base / name).as_posix() for name in dirs if name not in known]
        dirs[:] = known  # os.walk descends only into these
        for name in files:
            path, relative = Path(root) / name, (base / name).as_posix()
            expected = relative in TOP_FILES or (base.as_posix() in VIEW_DIRS and _VIEW_PNG.fullmatch(name))
            if not expected or path.is_symlink() or not path.is_file():
                foreign.append(relative)
    return sorted(foreign)


def _check_replaceable(output: Path) -> None:
    """Refuse to replace the existing ``output`` unless it is a folder holding a generated scene and nothing else."""
    if output.is_symlink():
        raise ValueError(f"--output: {output} is a symbolic link; --overwrite replaces only a scene folder itself")
    if not output.is_dir():
        raise NotADirectoryError(
            f"--output: {output} exists and is not a folder; --overwrite replaces only a scene folder {GENERATOR} wrote"
        )
    if not _is_generated_scene(output):
        raise ValueError(
            f'--output: {output} is not a scene {GENERATOR} wrote (no scene.json with "generator": "{GENERATOR}"); '
            "--overwrite replaces only such a folder"
        )
    foreign = _foreign_paths(output)
    if foreign:
        raise ValueError(
            f"--output: {output} holds files {GENERATOR} did not write ({few(foreign)}); "
            "--overwrite does not replace it: move them away or choose another --output"
        )


def _validate(cfg: SynthConfig) -> Path:
    """Refuse bad flags and an --output that may not be written; returns the absolute scene folder to write."""
    for flag, value, low in (
        ("--num-objects", cfg.num_objects, 1),
        ("--num-views", cfg.num_views, 2),
        ("--resolution", cfg.resolution, 16),
        ("--eval-interval", cfg.eval_interval, 2),
        ("--num-points", cfg.num_points, 1),
    ):
        if value < low:
            raise ValueError(f"{flag} must be at least {low}, got {value}")
    target = cfg.output.resolve()  # '.', 'a/..' and links name their real folder, with a real parent
    if cfg.output.is_symlink() or target.exists():
        protected = _protected(target)
        if protected is not None:
            raise ValueError(
                f"--output: {cfg.output} is {protected}, which is never replaced; "
                f"name a new sub-folder, e.g. --output {cfg.output / 'scene'}"
            )
        if not cfg.overwrite:
            raise FileExistsError(
                f"--output: {cfg.output} already exists; pass --overwrite to replace a scene {GENERATOR} wrote there"
            )
        _check_replaceable(cfg.output)
    return target


def scene_settings(cfg: SynthConfig) -> dict:
    """The settings that determine a scene's content, as ``scene.json`` records them (not output/overwrite)."""
    settings = asdict(cfg)
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in settings.items() if k not in ("output", "overwrite")}


def generate_scene(cfg: SynthConfig) -> Path:
    """Simulate, render and write one scene; returns the scene folder."""
    output = _validate(cfg)
    geo = _scene_geometry(cfg)
    rng = np.random.default_rng(cfg.seed)
    start = time.perf_counter()

    objects = settle_objects(cfg.num_objects, geo["floor_side"], rng)
    c2ws = dome_trajectory(cfg.num_views, geo["camera_distance"], geo["look_at_wander"], rng)
    intr = Intrinsics(width=cfg.resolution, height=cfg.resolution, focal=geo["focal_px"])
    noise = PRESETS[cfg.noise]
    stems = [f"frame_{i:05d}" for i in range(cfg.num_views)]
    eval_stems = [s for i, s in enumerate(stems) if i % cfg.eval_interval == 0]
    train_stems = [s for i, s in enumerate(stems) if i % cfg.eval_interval != 0]
    points_per_view = max(1, cfg.num_points // cfg.num_views)

    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{output.name}.", suffix=".tmp", dir=output.parent))
    tmp = staging / "scene"  # made by mkdir, so with the user's umask (mkdtemp's own folder is 0700)
    try:
        for sub in VIEW_DIRS:
            (tmp / sub).mkdir(parents=True)
        points, colors, visible = [], [], set()
        with SceneRenderer(objects, geo["near"], geo["far"]) as renderer:
            for i, (stem, c2w) in enumerate(tqdm(list(zip(stems, c2ws)), desc="Rendering views", unit="view")):
                view = renderer.render(c2w, intr)
                masks, semantics = simulate_segmenter(view.instances, noise, np.random.default_rng([cfg.seed, i]))
                _save_png(tmp / "images" / f"{stem}.png", view.rgb)
                _save_png(tmp / "instance_masks" / f"{stem}.png", masks)
                _save_png(tmp / "semantic_masks" / f"{stem}.png", semantics)
                _save_png(tmp / "gt/instances" / f"{stem}.png", view.instances)
                _save_png(tmp / "gt/semantics" / f"{stem}.png", (view.instances > 0).astype(np.uint8))
                visible.update(int(k) for k in np.unique(view.instances) if k > 0)
                pts, cols = backproject(view.depth, view.rgb, c2w, intr, points_per_view, np.random.default_rng([cfg.seed, i, 1]))
                points.append(pts)
                colors.append(cols)
        write_ply(tmp / "sparse_pc.ply", points, colors)

        transforms = {
            "camera_model": "OPENCV",
            "fl_x": intr.focal,
            "fl_y": intr.focal,
            "cx": intr.cx,
            "cy": intr.cy,
            "w": intr.width,
            "h": intr.height,
            "k1": 0.0,
            "k2": 0.0,
            "p1": 0.0,
            "p2": 0.0,
            "ply_file_path": "sparse_pc.ply",
            "frames": [
                {"file_path": f"images/{s}.png", "transform_matrix": np.round(m, 8).tolist()} for s, m in zip(stems, c2ws)
            ],
            "train_filenames": [f"images/{s}.png" for s in train_stems],
            "val_filenames": [f"images/{s}.png" for s in eval_stems],
            "test_filenames": [f"images/{s}.png" for s in eval_stems],
        }
        scene = {
            "generator": GENERATOR,
            "format_version": FORMAT_VERSION,
            "config": scene_settings(cfg),
            "geometry": geo,
            "segmenter_noise": asdict(noise),
            "num_visible_objects": len(visible),
            "objects": [o.to_json() for o in objects],
        }
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=2))
        (tmp / "split.json").write_text(json.dumps({"train": train_stems, "eval": eval_stems}, indent=2))
        (tmp / "scene.json").write_text(json.dumps(scene, indent=2))

        if output.exists():
            _check_replaceable(output)  # again: files may have been added while rendering
            shutil.rmtree(output)
        tmp.rename(output)
    finally:  # also on Ctrl-C and SIGTERM (see unic_lift_ns.scripts.cli.run_cli)
        shutil.rmtree(staging, ignore_errors=True)
    tqdm.write(f"Wrote {cfg.output} ({cfg.num_views} views, {len(visible)}/{cfg.num_objects} objects visible) "
               f"in {time.perf_counter() - start:.1f} s")
    return cfg.output
