"""Per-instance selection, export and editing of a UniC-Lift scene.

Every function takes Gaussians (:class:`~unic_lift_ns.export.ply.Splats`) and their instance labels (a model's
``gaussian_labels()``, its Embedding-to-Label codes), never a model. Instances are grouped with one stable sort, so
exporting all of them costs O(N log N), not O(N x instances).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np
import torch
from nerfstudio.models.splatfacto import SplatfactoModel
from nerfstudio.utils.rich_utils import CONSOLE
from scipy.spatial.transform import Rotation
from torch import Tensor
from tqdm import tqdm

from unic_lift_ns.export.ply import Splats, write_ply
from unic_lift_ns.instance_codes import label_palette
from unic_lift_ns.safe_files import json_signature, write_json

POINTCLOUD_DIR = "pointclouds"
"""Sub-folder of the coloured point clouds, one per instance."""
COMBINED_PLY = "instances.ply"
"""Name of the PLY holding every exported Gaussian with its ``instance`` property."""
INSTANCES_JSON = "instances.json"
"""Name of the per-instance records."""
GENERATOR = "unic-lift-export"
"""Value of the first field of instances.json, ``generator``: what marks the file as one this package wrote."""
JSON_SIGNATURE = json_signature(GENERATOR)
"""How instances.json starts."""


def instance_filename(label: int) -> str:
    """File name of one instance's PLY (splat or point cloud)."""
    return f"instance_{label}.ply"


def model_splats(model: SplatfactoModel, labels: Tensor) -> Tuple[Splats, np.ndarray]:
    """The finite Gaussians of a Splatfacto-like ``model`` (NaN/Inf ones are dropped with a warning) and their
    [N] int64 ``labels`` (e.g. ``model.gaussian_labels()``)."""
    splats, labels = Splats.from_model(model), labels.cpu().numpy()
    finite = splats.finite()
    if not finite.all():
        CONSOLE.print(f"[yellow]Dropping {int((~finite).sum())} Gaussians with NaN/Inf parameters")
        splats, labels = splats.subset(finite), labels[finite]
    return splats, labels


def group_by_label(labels: np.ndarray) -> Dict[int, np.ndarray]:
    """Map each label to the sorted indices of its Gaussians (one stable argsort)."""
    order = np.argsort(labels, kind="stable")
    starts = np.flatnonzero(np.diff(labels[order])) + 1
    groups = np.split(order, starts)
    return {int(labels[group[0]]): group for group in groups if group.size}


def label_colour(label: int) -> Tuple[int, int, int]:
    """The label's fixed palette colour (as in the viewer) as 8-bit RGB."""
    rgb = label_palette(torch.tensor([label], dtype=torch.long))[0]
    return tuple(int(c) for c in torch.round(rgb * 255).to(torch.uint8).tolist())  # type: ignore[return-value]


@dataclass
class InstanceRecord:
    """What instances.json says about one instance."""

    label: int
    """Embedding-to-Label instance label."""
    colour: Tuple[int, int, int]
    """8-bit RGB palette colour of the label."""
    num_gaussians: int
    """Number of Gaussians with this label."""
    bbox_min: Tuple[float, float, float]
    """Minimum corner of the axis-aligned box of the Gaussian centres."""
    bbox_max: Tuple[float, float, float]
    """Maximum corner of the axis-aligned box of the Gaussian centres."""
    centroid: Tuple[float, float, float]
    """Mean of the Gaussian centres."""

    @classmethod
    def from_means(cls, label: int, means: np.ndarray) -> "InstanceRecord":
        """Record of the instance whose Gaussian centres are ``means`` [M, 3]."""
        as_tuple = lambda v: tuple(float(x) for x in v)  # noqa: E731
        return cls(label, label_colour(label), int(means.shape[0]), as_tuple(means.min(0)), as_tuple(means.max(0)),
                   as_tuple(means.mean(0, dtype=np.float64)))  # fmt: skip


def point_cloud(means: np.ndarray, label: int) -> np.ndarray:
    """[M] PLY vertices (``x y z`` float, ``red green blue`` uchar) of an instance's Gaussian centres ``means``,
    coloured with the label's palette colour: a coloured point cloud for Open3D, MeshLab or CloudCompare."""
    dtype = [(name, "<f4") for name in ("x", "y", "z")] + [(name, "u1") for name in ("red", "green", "blue")]
    cloud = np.empty(means.shape[0], dtype=dtype)
    cloud["x"], cloud["y"], cloud["z"] = means.T
    cloud["red"], cloud["green"], cloud["blue"] = label_colour(label)
    return cloud


def export_instance(splats: Splats, labels: np.ndarray, label: int, output_dir: Path) -> Path:
    """Write ``output_dir/instance_<label>.ply``, a standard 3DGS PLY of the Gaussians labelled ``label``.

    Raises:
        ValueError: no Gaussian has ``label``.
        FileExistsError: the file is a link, a folder or a file this package did not write.
    """
    mask = labels == label
    if not mask.any():
        raise ValueError(f"No Gaussian has instance label {label}")
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    return write_ply(output_dir / instance_filename(label), splats.subset(mask).vertices())


def export_instances(
    splats: Splats, labels: np.ndarray, chosen: Sequence[int], output_dir: Path, progress: bool = True
) -> List[InstanceRecord]:
    """Write the PLY and the coloured point cloud of every ``chosen`` label, the combined PLY (with the
    ``instance`` property) of their Gaussians and instances.json into ``output_dir``; returns the records.

    Every chosen label must occur in ``labels``.
    """
    groups = group_by_label(labels)
    output_dir = Path(output_dir)
    (output_dir / POINTCLOUD_DIR).mkdir(parents=True, exist_ok=True)
    vertices = splats.vertices()
    records = []
    for label in tqdm(chosen, desc="Exporting instances", unit="instance", disable=not progress):
        index = groups[label]
        write_ply(output_dir / instance_filename(label), vertices[index])
        means = splats.means[index]
        write_ply(output_dir / POINTCLOUD_DIR / instance_filename(label), point_cloud(means, label))
        records.append(InstanceRecord.from_means(label, means))
    selected = np.sort(np.concatenate([groups[label] for label in chosen]))
    if selected.size < len(splats):
        splats, labels = splats.subset(selected), labels[selected]
    write_ply(output_dir / COMBINED_PLY, splats.vertices(instance=labels))
    summary = {
        "num_gaussians": len(splats),
        "num_instances": len(records),
        "instances": [asdict(record) for record in records],
    }
    write_json(output_dir / INSTANCES_JSON, summary, GENERATOR)
    return records


def quaternion_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of (w, x, y, z) quaternions, broadcast over leading dimensions."""
    aw, ax, ay, az = np.moveaxis(a, -1, 0)
    bw, bx, by, bz = np.moveaxis(b, -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


def remove_instances(splats: Splats, labels: np.ndarray, remove: Sequence[int]) -> Tuple[Splats, np.ndarray]:
    """The scene without the Gaussians labelled ``remove``, and the labels of those kept."""
    keep = ~np.isin(labels, np.asarray(remove, dtype=labels.dtype))
    return splats.subset(keep), labels[keep]


def move_instance(
    splats: Splats,
    labels: np.ndarray,
    label: int,
    translation: Sequence[float] = (0.0, 0.0, 0.0),
    rotation_deg: Sequence[float] = (0.0, 0.0, 0.0),
) -> Splats:
    """The scene with instance ``label`` rotated about its centroid, then translated.

    ``rotation_deg`` holds extrinsic x, y, z Euler angles in degrees. Means and quaternions are transformed;
    higher-order SH coefficients are not rotated, so the instance's view-dependent colour keeps its world-frame
    orientation (degree-0 colour is unaffected).
    """
    mask = labels == label
    rotation = Rotation.from_euler("xyz", rotation_deg, degrees=True)
    x, y, z, w = rotation.as_quat()
    means, quats = splats.means.copy(), splats.quats.copy()
    centroid = means[mask].mean(axis=0, dtype=np.float64)
    offsets = means[mask].astype(np.float64) - centroid
    means[mask] = offsets @ rotation.as_matrix().T + centroid + np.asarray(translation, dtype=np.float64)
    quats[mask] = quaternion_multiply(np.array([w, x, y, z]), quats[mask].astype(np.float64))
    return replace(splats, means=means, quats=quats)
