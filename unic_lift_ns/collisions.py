"""Code collisions of Embedding-to-Label: one d-bit code on objects that no training view shows together.

The 2D losses only push apart the codes of objects that share a view, so with many objects (2^d = 4096 codes at
d = 12, 500 objects in Messy Rooms) two objects that are never seen together can land on one code. Such a label is
split without clustering any embedding:

1. 3D components: Gaussians of one label whose centres are closer than ``radius_factor`` times the median
   nearest-neighbour distance of the centres are connected. The radius is scale-free (it follows how densely the
   Gaussians sample the scene, in whatever units the dataparser left them) and need not be tight: it only has to
   keep one object's Gaussians together, and same-label parts a few spacings apart are seen together anyway
   (step 2), while objects that never share a view lie about a view's footprint, many spacings, apart.
2. Co-occurrence: a component is *seen* by a training view where at least ``visible_fraction`` of its centres, or
   ``min_size`` of them, project inside the image in front of the camera (occlusion is not tested, so a hidden
   component counts as seen and stays merged). Two components of one label seen by one view would have been two
   mask segments there had they been two objects, yet training gave them one code: they are one object cut apart
   by sparse Gaussians, and stay one label, as do chains of such pairs.
3. Every other group of components gets a code no Gaussian has (never 0, the label of pixels no Gaussian votes
   for), so labels still fit in d bits; the group with the most Gaussians keeps the code. Components of fewer than
   ``min_size`` Gaussians keep their label: a stray Gaussian or two cannot be told from a floater.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Tuple

import numpy as np
from scipy.sparse import coo_matrix, csr_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree


@dataclass(frozen=True)
class CollisionReport:
    """What :func:`split_label_collisions` did."""

    radius: float
    """Radius of the neighbour graph, in scene units."""
    labels_split: int
    """Labels whose Gaussians now carry more than one label."""
    new_labels: int
    """Codes given to split-off groups."""
    unsplit_groups: int
    """Groups left on their label because every code of the 2^d was taken."""


def split_label_collisions(
    means: np.ndarray,
    labels: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
    num_bits: int,
    radius_factor: float = 5.0,
    min_size: int = 5,
    visible_fraction: float = 0.5,
) -> Tuple[np.ndarray, CollisionReport]:
    """Give a new code to each group of same-label 3D components that no view sees with the rest of its label.

    Args:
        means: [N, 3] Gaussian centres.
        labels: [N] int labels in [0, 2^num_bits).
        viewmats: [V, 4, 4] world-to-camera matrices of the training views (OpenCV axes: +z looks forward).
        Ks: [V, 3, 3] camera intrinsics, in pixels of images ``widths`` x ``heights`` ([V] each).
        num_bits: d: new codes are < 2^d.
        radius_factor: neighbour radius of the 3D components, in median nearest-neighbour distances.
        min_size: components of fewer Gaussians keep their label; a view that shows this many of a component's
            centres sees it.
        visible_fraction: a view that shows this fraction of a component's centres sees it.

    Returns:
        [N] int64 labels, and a :class:`CollisionReport`.
    """
    means, labels = np.asarray(means, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    if len(labels) == 0:
        return labels.copy(), CollisionReport(0.0, 0, 0, 0)
    radius = radius_factor * median_neighbour_distance(means)
    components = label_components(means, labels, radius)
    sizes = np.bincount(components)
    component_labels = np.zeros(len(sizes), dtype=np.int64)
    component_labels[components] = labels
    big = np.flatnonzero(sizes >= min_size)
    frame_counts = _frame_counts(means, components, len(sizes), viewmats, Ks, widths, heights)[:, big]
    seen = frame_counts >= np.minimum(visible_fraction * sizes[big], min_size)

    codes_of = component_labels.copy()
    free = free_codes(labels, num_bits)
    labels_split = new_labels = unsplit = 0
    for label in np.unique(component_labels[big]):
        members = np.flatnonzero(component_labels[big] == label)
        if len(members) < 2:
            continue
        views = seen[:, members].astype(np.int64)
        num_groups, groups = connected_components(csr_matrix(views.T @ views > 0), directed=False)
        if num_groups < 2:
            continue
        codes, given, missing = recode_groups(np.bincount(groups, weights=sizes[big[members]]), free)
        for group in np.flatnonzero(codes >= 0):
            codes_of[big[members[groups == group]]] = codes[group]
        labels_split, new_labels, unsplit = labels_split + (given > 0), new_labels + given, unsplit + missing
    return codes_of[components], CollisionReport(radius, labels_split, new_labels, unsplit)


def median_neighbour_distance(means: np.ndarray) -> float:
    """Median distance from a centre to its nearest other centre, over centres that do not coincide with one
    (densification clones start on their parent); 0 with fewer than two distinct centres."""
    if len(means) < 2:
        return 0.0
    distances = cKDTree(means).query(means, k=2)[0][:, 1]
    distances = distances[distances > 0]
    return float(np.median(distances)) if len(distances) else 0.0


def label_components(means: np.ndarray, labels: np.ndarray, radius: float) -> np.ndarray:
    """[N] component ids (0..C-1) of the graph joining same-label centres at most ``radius`` apart."""
    pairs = cKDTree(means).query_pairs(radius, output_type="ndarray")
    pairs = pairs[labels[pairs[:, 0]] == labels[pairs[:, 1]]]
    n = len(labels)
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(n, n))
    return connected_components(graph, directed=False)[1]


def _frame_counts(
    means: np.ndarray,
    components: np.ndarray,
    num_components: int,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    widths: np.ndarray,
    heights: np.ndarray,
) -> np.ndarray:
    """[V, C] number of each component's centres that project inside view v's image, in front of its camera."""
    viewmats, Ks = np.asarray(viewmats, dtype=np.float64), np.asarray(Ks, dtype=np.float64)
    counts = np.zeros((len(viewmats), num_components), dtype=np.int64)
    for view, (viewmat, K, width, height) in enumerate(zip(viewmats, Ks, np.ravel(widths), np.ravel(heights))):
        camera = means @ viewmat[:3, :3].T + viewmat[:3, 3]
        z = camera[:, 2]
        front = z > 0
        u = K[0, 0] * camera[front, 0] / z[front] + K[0, 2]
        v = K[1, 1] * camera[front, 1] / z[front] + K[1, 2]
        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
        counts[view] = np.bincount(components[front][inside], minlength=num_components)
    return counts


def recode_groups(group_sizes: np.ndarray, free: Iterator[int]) -> Tuple[np.ndarray, int, int]:
    """Codes for the G groups one label is split into: the largest keeps the label's code, the others take codes
    from ``free`` while any are left. Returns [G] codes (-1: keeps the label's code), how many codes were given, and
    how many groups found none."""
    codes = np.full(len(group_sizes), -1, dtype=np.int64)
    missing = 0
    for group in np.argsort(-np.asarray(group_sizes), kind="stable")[1:]:
        code = next(free, None)
        if code is None:
            missing += 1
        else:
            codes[group] = code
    return codes, int((codes >= 0).sum()), missing


def free_codes(labels: np.ndarray, num_bits: int) -> Iterator[int]:
    """The codes in [1, 2^num_bits) that no label uses, ascending."""
    used = set(np.unique(labels).tolist())
    return (code for code in range(1, 2**num_bits) if code not in used)
