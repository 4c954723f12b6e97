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
    scene.json                      every generation parameter, the seed, the object list, and the size and
                                    sha256 of every other file (written last, with the sha256 of its own text)

``--overwrite`` replaces only a folder that holds such a scene and nothing else: every file in it is one that
scene.json lists, unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List, Literal, Optional, Tuple

import numpy as np
from PIL import Image
from tqdm import tqdm

from unic_lift_ns.errors import few
from unic_lift_ns.synth.cameras import Intrinsics, dome_trajectory
from unic_lift_ns.synth.physics import floor_side, settle_objects
from unic_lift_ns.synth.pointcloud import backproject, write_ply
from unic_lift_ns.synth.scene_renderer import SceneRenderer
from unic_lift_ns.synth.segmenter import PRESETS, simulate_segmenter

FORMAT_VERSION = 2
"""Version of the layout above, recorded in scene.json (2: scene.json lists the files written)."""
GENERATOR = "unic-lift-synth"
"""What scene.json's "generator" says."""
VIEW_DIRS = ("images", "instance_masks", "semantic_masks", "gt/instances", "gt/semantics")
"""Sub-folders holding one PNG per view."""
RECORD = "scene.json"
"""The file that records the scene's settings and the files written with it."""

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
    """Replace an existing --output folder, but only one that holds nothing but files unic-lift-synth wrote there,
    unchanged (its scene.json lists their sizes and sha256); it is replaced only once the new scene is complete.
    The current folder, its ancestors and the home folder are never replaced."""

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


def _digest(path: Path) -> Dict[str, object]:
    """Size and sha256 of the file ``path``, as scene.json records them."""
    data = path.read_bytes()
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _record_text(scene: dict) -> str:
    """scene.json's text: ``scene`` plus the sha256 of its own text, so that an edit of scene.json shows too."""
    digest = hashlib.sha256(json.dumps(scene, indent=2).encode()).hexdigest()
    return json.dumps({**scene, "sha256": digest}, indent=2)


def _read_record(folder: Path) -> Optional[dict]:
    """The scene ``folder/scene.json`` records if generate_scene wrote that file (unchanged), else None; raises if
    an older unic-lift-synth wrote it, as it recorded no files."""
    try:
        text = (folder / RECORD).read_text()
        scene = json.loads(text)
    except (OSError, ValueError):  # missing, unreadable, not UTF-8 or not JSON
        return None
    if not isinstance(scene, dict) or scene.get("generator") != GENERATOR:
        return None
    if "files" not in scene:
        raise ValueError(
            f"--output: {folder / RECORD} is from an older {GENERATOR}, which did not record the files it wrote, so "
            "--overwrite cannot tell them from yours: choose another --output, or delete the folder by hand"
        )
    scene.pop("sha256", None)
    return scene if text == _record_text(scene) else None


def _differing_paths(folder: Path, files: Dict[str, dict]) -> Tuple[List[str], List[str]]:
    """Sorted relative paths in ``folder`` that ``files`` (scene.json's record) does not list, and those it lists
    with another size or sha256. Links and special files are never listed; a foreign folder is named, not entered."""
    dirs = {p.as_posix() for name in files for p in PurePosixPath(name).parents} - {"."}
    foreign, changed = [], []
    for root, subdirs, names in os.walk(folder):
        base = Path(root).relative_to(folder)
        known = []
        for name in subdirs + names:
            path, relative = Path(root) / name, (base / name).as_posix()
            info = path.lstat()
            if stat.S_ISDIR(info.st_mode) and relative in dirs:
                known.append(name)
            elif not stat.S_ISREG(info.st_mode) or (relative not in files and relative != RECORD):
                foreign.append(relative)
            elif relative != RECORD and (info.st_size != files[relative]["size"] or _digest(path) != files[relative]):
                changed.append(relative)  # scene.json itself is checked by _read_record
        subdirs[:] = [d for d in subdirs if d in known]  # os.walk descends only into these
    return sorted(foreign), sorted(changed)


def _check_replaceable(output: Path) -> None:
    """Refuse to replace the existing ``output`` unless it is a folder holding only files generate_scene wrote
    there, unchanged (as its scene.json records them)."""
    if output.is_symlink():
        raise ValueError(f"--output: {output} is a symbolic link; --overwrite replaces only a scene folder itself")
    if not output.is_dir():
        raise NotADirectoryError(
            f"--output: {output} exists and is not a folder; --overwrite replaces only a scene folder {GENERATOR} wrote"
        )
    scene = _read_record(output)
    if scene is None:
        raise ValueError(
            f"--output: {output} is not a scene {GENERATOR} wrote (no unchanged scene.json with "
            f'"generator": "{GENERATOR}"); --overwrite replaces only such a folder'
        )
    foreign, changed = _differing_paths(output, scene["files"])
    if foreign:
        raise ValueError(
            f"--output: {output} holds files {GENERATOR} did not write ({few(foreign)}); "
            "--overwrite does not replace it: move them away or choose another --output"
        )
    if changed:
        raise ValueError(
            f"--output: {output} holds files changed since {GENERATOR} wrote them ({few(changed)}); "
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


def _transforms(intr: Intrinsics, stems: List[str], c2ws, train_stems: List[str], eval_stems: List[str]) -> Dict:
    """nerfstudio's transforms.json: one OPENCV camera without distortion, the views and their split."""
    return {
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

        transforms = _transforms(intr, stems, c2ws, train_stems, eval_stems)
        (tmp / "transforms.json").write_text(json.dumps(transforms, indent=2))
        (tmp / "split.json").write_text(json.dumps({"train": train_stems, "eval": eval_stems}, indent=2))
        files = {p.relative_to(tmp).as_posix(): _digest(p) for p in sorted(tmp.rglob("*")) if p.is_file()}
        scene = {
            "generator": GENERATOR,
            "format_version": FORMAT_VERSION,
            "config": scene_settings(cfg),
            "geometry": geo,
            "segmenter_noise": asdict(noise),
            "num_visible_objects": len(visible),
            "objects": [o.to_json() for o in objects],
            "files": files,
        }
        (tmp / RECORD).write_text(_record_text(scene))

        if output.exists():
            _check_replaceable(output)  # again: files may have been added while rendering
            shutil.rmtree(output)
        tmp.rename(output)
    finally:  # also on Ctrl-C and SIGTERM (see unic_lift_ns.scripts.cli.run_cli)
        shutil.rmtree(staging, ignore_errors=True)
    tqdm.write(f"Wrote {cfg.output} ({cfg.num_views} views, {len(visible)}/{cfg.num_objects} objects visible) "
               f"in {time.perf_counter() - start:.1f} s")
    return cfg.output
