"""Mask split and merge of Embedding-to-Label labels: Gaussians of one label that the train views' own 2D masks
keep apart get their own codes, and labels the masks put together merge, with no clustering of embeddings.

Training gives touching objects one code when their 2D masks merge them often enough (segmenters merge touching
objects, and with hundreds of objects every code has neighbours), and Eq. 4 then pulls them together. The masks
still say, view by view, which Gaussians belong together. Each train view with an instance mask partitions the
Gaussians it shows: a centre that projects inside the image, in front of the camera and not behind a nearer centre
(a point z-buffer) takes the mask segment of its pixel (0, unlabelled, takes none). Two Gaussians *agree* in a view
that gives both a segment when it is the same one. A label's Gaussians are then grouped, for each label on its own:

1. Pivot grouping (KwikCluster, Ailon, Charikar and Newman 2008): the unassigned Gaussian seen in the most views
   takes every unassigned Gaussian of its label that agrees with it in more than half of the views that show both.
   Groups hold Gaussians that agree directly with one pivot, so a few boundary Gaussians cannot chain two objects.
2. Average agreement: two groups merge while some pair of groups agrees in more than ``min_agreement`` of their
   co-visible Gaussian pairs over all views (the best pair first), so an object that a view or two split stays one.
3. Groups of fewer than ``min_size`` Gaussians join the group they agree with most (the largest one where they share
   no view), and Gaussians no view gives a segment stay on the largest group. With ``keep_owners`` a small group
   that *owns* its segments (step 4) stays apart: a small object the masks segment on its own, where a fragment
   shares its segments with the Gaussians of a larger object or of the floor. The largest group keeps the code;
   the others get codes no Gaussian has (never 0), so labels still fit in d bits.
4. Recover (optional): the Gaussians that do not vote (``no_code``) and that some view gives a segment are grouped
   like a label (steps 1-3). A group that *owns* its segments (on average over its Gaussians' views, it is more
   than half of the Gaussians each segment shows) takes a free code: an object whose codes training left
   unconfident is a segment no voting Gaussian shows. Unconfident Gaussians at a voting object's boundary share its
   segments with its voters, own none, and keep no code.
5. Merge (optional): step 2 over whole labels, for an object that training left on several codes. The Gaussians
   that do not vote form one more label (``no_code``), never split: they occlude, and a label the masks put with
   them (floor Gaussians that took an object's code, once split off it) takes no code when they are the larger
   side. Without semantic masks the floor is such a segment in every view.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, List, Optional, Sequence, Tuple

import numpy as np
from scipy import ndimage
from scipy.sparse import csr_matrix

from unic_lift_ns.collisions import free_codes, recode_groups


@dataclass(frozen=True)
class MaskSplitReport:
    """What :func:`split_labels_by_masks` did."""

    views: int
    """Train views with an instance mask that took part."""
    labels_split: int
    """Labels whose Gaussians now carry more than one label."""
    new_labels: int
    """Codes given to split-off groups."""
    unsplit_groups: int
    """Groups left on their label because every code of the 2^d was taken."""
    labels_merged: int = 0
    """Labels that took another label's code (with ``merge``)."""
    labels_recovered: int = 0
    """Groups of Gaussians without a code that took one (with ``recover``)."""


def split_labels_by_masks(
    means: np.ndarray,
    labels: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    masks: Sequence[Optional[np.ndarray]],
    num_bits: int,
    depth_tolerance: float,
    min_size: int = 5,
    min_agreement: float = 0.5,
    split: bool = True,
    merge: bool = False,
    no_code: Optional[int] = None,
    recover: bool = False,
    keep_owners: bool = False,
) -> Tuple[np.ndarray, MaskSplitReport]:
    """Give a new code to each group of a label's Gaussians that the train masks keep apart from the rest.

    Args:
        means: [N, 3] Gaussian centres (they also occlude each other).
        labels: [N] int labels in [0, 2^num_bits).
        viewmats: [V, 4, 4] world-to-camera matrices of the train views (OpenCV axes: +z looks forward).
        Ks: [V, 3, 3] intrinsics, in pixels of the views' masks.
        masks: V instance masks [H, W] int (0 = unlabelled), or None for a view without one.
        num_bits: d: new codes are < 2^d.
        depth_tolerance: a centre at most this far behind the nearest centre on its pixel is visible.
        min_size: smaller groups join another group of their label.
        min_agreement: groups whose co-visible pairs agree in more than this fraction merge.
        split: split each label's groups (steps 1-3).
        merge: then merge labels whose Gaussians agree like one label's groups (step 2 over labels), for objects
            that training left on several codes.
        no_code: the label of Gaussians without a code (those that do not vote): never split, and with ``merge`` a
            label like the others, so groups that the masks put with them (e.g. floor Gaussians that took an
            object's code) lose their code when they are the larger side.
        recover: then give codes to the groups of ``no_code`` Gaussians that own their segments (step 4).
        keep_owners: groups (and with ``merge`` labels) of fewer than ``min_size`` Gaussians that own their segments
            stay apart (step 3): small objects the masks give segments of their own, not fragments.

    Returns:
        [N] int64 labels, and a :class:`MaskSplitReport`.
    """
    means, labels = np.asarray(means, dtype=np.float64), np.asarray(labels, dtype=np.int64)
    segments, seen = view_segments(means, viewmats, Ks, masks, depth_tolerance)
    shown = np.asarray(segments.sum(axis=0)).ravel()  # [S] Gaussians each segment shows
    owners_shown = shown if keep_owners else None  # small groups that own their segments stay apart
    out, free = labels.copy(), free_codes(labels, num_bits)
    labels_split = new_labels = unsplit = 0
    for label in np.unique(labels) if split else ():
        members = np.flatnonzero(labels == label)
        if len(members) < 2 * min_size or label == no_code:
            continue
        groups = _group_label(segments[members], seen[members], min_size, min_agreement, owners_shown)
        codes, given, missing = recode_groups(np.bincount(groups), free)
        for group in np.flatnonzero(codes >= 0):
            out[members[groups == group]] = codes[group]
        labels_split, new_labels, unsplit = labels_split + (given > 0), new_labels + given, unsplit + missing
    recovered = merged = 0
    if recover and no_code is not None:
        out, recovered = recover_labels(out, segments, seen, no_code, free, min_size, min_agreement, shown,
                                        keep_owners)  # fmt: skip
    if merge:
        out, merged = merge_labels(out, segments, seen, min_agreement, min_size, owners_shown)
    views = sum(mask is not None for mask in masks)
    return out, MaskSplitReport(views, labels_split, new_labels, unsplit, merged, recovered)


def recover_labels(
    labels: np.ndarray,
    segments: csr_matrix,
    seen: csr_matrix,
    no_code: int,
    free: Iterator[int],
    min_size: int,
    min_agreement: float,
    shown: np.ndarray,
    keep_owners: bool = False,
) -> Tuple[np.ndarray, int]:
    """Step 4: the ``no_code`` Gaussians that some view gives a segment are grouped (steps 1-3, with
    ``keep_owners``), and each group of at least ``min_size`` Gaussians that owns its segments (:func:`owns_segments`
    of the Gaussians ``shown`` [S] in each segment) takes a code from ``free``, largest first. Returns the labels and
    how many groups took a code."""
    members = np.flatnonzero((labels == no_code) & (seen.getnnz(axis=1) > 0))
    if len(members) < min_size:
        return labels, 0
    groups = _group_label(segments[members], seen[members], min_size, min_agreement, shown if keep_owners else None)
    member = csr_matrix((np.ones(len(members)), (groups, np.arange(len(members)))),
                        shape=(groups.max() + 1, len(members)))  # fmt: skip
    owned = owns_segments(member @ segments[members], shown)
    sizes, out, recovered = np.bincount(groups), labels.copy(), 0
    for group in np.argsort(-sizes, kind="stable"):
        if sizes[group] < min_size or not owned[group]:
            continue
        code = next(free, None)
        if code is None:
            break
        out[members[groups == group]] = code
        recovered += 1
    return out, recovered


def owns_segments(hits: csr_matrix, shown: np.ndarray) -> np.ndarray:
    """[G] bool: whether each of G groups owns the segments it shows in, i.e. the mean, over its Gaussians' (view,
    segment) hits ``hits`` [G, S], of its share of the Gaussians ``shown`` [S] in the segment is more than half."""
    hits = csr_matrix(hits)
    share = hits.multiply(hits).multiply(1.0 / np.maximum(shown, 1.0)[None, :]).sum(axis=1)
    return np.asarray(share).ravel() / np.maximum(np.asarray(hits.sum(axis=1)).ravel(), 1.0) > 0.5


def merge_labels(
    labels: np.ndarray, segments: csr_matrix, seen: csr_matrix, min_agreement: float, min_size: int,
    shown: Optional[np.ndarray] = None,
) -> Tuple[np.ndarray, int]:  # fmt: skip
    """Labels whose Gaussians' co-visible pairs share a segment in more than ``min_agreement`` of the views merge,
    best pair first, and labels of fewer than ``min_size`` Gaussians join the one they agree with most (if any),
    except, with ``shown`` (as in :func:`_group_label`), those that own their segments; each merged set takes the
    code of its label with the most Gaussians. Returns the labels and how many labels took another's code."""
    codes, index = np.unique(labels, return_inverse=True)
    member = csr_matrix((np.ones(len(labels)), (index, np.arange(len(labels)))), shape=(len(codes), len(labels)))
    histograms, views = member @ segments, member @ seen
    sizes = np.bincount(index, minlength=len(codes))
    merging = _Agglomeration((histograms @ histograms.T).toarray(), (views @ views.T).toarray(), sizes)
    merging.merge_above(min_agreement)
    owners = None if shown is None else owns_segments(histograms, shown)
    merging.absorb_small(min_size, to_largest=False, owners=owners)
    kept = np.zeros(len(codes), dtype=np.int64)
    for root in np.unique(merging.parent):
        group = np.flatnonzero(merging.parent == root)
        kept[group] = codes[group[np.argmax(sizes[group])]]
    return kept[index], int(np.sum(kept != codes))


def view_segments(
    means: np.ndarray,
    viewmats: np.ndarray,
    Ks: np.ndarray,
    masks: Sequence[Optional[np.ndarray]],
    depth_tolerance: float,
) -> Tuple[csr_matrix, csr_matrix]:
    """Which segment of which view each centre shows in: a [N, S] 0/1 matrix over the S segments of all views, and a
    [N, V] 0/1 matrix of the views that give the centre a segment."""
    rows: List[np.ndarray] = []
    segment_cols: List[np.ndarray] = []
    view_cols: List[np.ndarray] = []
    offset = 0
    for view, (viewmat, K, mask) in enumerate(zip(np.asarray(viewmats, np.float64), np.asarray(Ks, np.float64), masks)):
        if mask is None:
            continue
        mask = np.asarray(mask)
        index, segment = visible_segments(means, viewmat, K, mask, depth_tolerance)
        ids, compact = np.unique(segment, return_inverse=True)
        rows.append(index)
        segment_cols.append(offset + compact)
        view_cols.append(np.full(len(index), view))
        offset += len(ids)
    n = len(means)
    row = np.concatenate(rows) if rows else np.zeros(0, np.int64)
    ones = np.ones(len(row), dtype=np.float32)
    segments = csr_matrix((ones, (row, np.concatenate(segment_cols) if rows else row)), shape=(n, offset))
    seen = csr_matrix((ones, (row, np.concatenate(view_cols) if rows else row)), shape=(n, len(masks)))
    return segments, seen


def visible_segments(
    means: np.ndarray, viewmat: np.ndarray, K: np.ndarray, mask: np.ndarray, depth_tolerance: float
) -> Tuple[np.ndarray, np.ndarray]:
    """Indices of the centres one view shows with a segment, and that segment."""
    height, width = mask.shape
    camera = means @ viewmat[:3, :3].T + viewmat[:3, 3]
    z = camera[:, 2]
    index = np.flatnonzero(z > 0)
    u = np.floor(K[0, 0] * camera[index, 0] / z[index] + K[0, 2]).astype(np.int64)
    v = np.floor(K[1, 1] * camera[index, 1] / z[index] + K[1, 2]).astype(np.int64)
    inside = (u >= 0) & (u < width) & (v >= 0) & (v < height)
    index, u, v, depth = index[inside], u[inside], v[inside], z[index[inside]]
    nearest = np.full((height, width), np.inf)
    np.minimum.at(nearest, (v, u), depth)
    nearest = ndimage.minimum_filter(nearest, size=3)  # close the gaps between the projected centres
    segment = mask[v, u].astype(np.int64)
    keep = (depth <= nearest[v, u] + depth_tolerance) & (segment > 0)
    return index[keep], segment[keep]


def _group_label(
    segments: csr_matrix, seen: csr_matrix, min_size: int, min_agreement: float, shown: Optional[np.ndarray] = None
) -> np.ndarray:
    """[n] group ids 0..G-1 of one label's Gaussians (steps 1-3 of the module docstring); with ``shown`` [S], the
    Gaussians each segment of all views shows, small groups that own their segments stay apart."""
    n = segments.shape[0]
    columns = np.unique(segments.indices)
    segments = segments[:, columns]  # the label's own segments
    views_seen = np.asarray(seen.sum(axis=1)).ravel()
    groups = np.full(n, -1, dtype=np.int64)
    num_groups = 0
    for pivot in np.argsort(-views_seen, kind="stable"):
        if groups[pivot] >= 0 or views_seen[pivot] == 0:
            continue
        agree = (segments @ segments[pivot].T).toarray().ravel()
        both = (seen @ seen[pivot].T).toarray().ravel()
        take = (groups < 0) & (2 * agree > both) & (both > 0)
        take[pivot] = True
        groups[take] = num_groups
        num_groups += 1
    if num_groups <= 1:
        return np.zeros(n, dtype=np.int64)
    observed = groups >= 0
    member = csr_matrix((np.ones(int(observed.sum())), (groups[observed], np.flatnonzero(observed))),
                        shape=(num_groups, n))  # fmt: skip
    histograms, views = member @ segments, member @ seen
    owners = None if shown is None else owns_segments(histograms, shown[columns])
    merged = _merge_groups((histograms @ histograms.T).toarray(), (views @ views.T).toarray(),
                           np.bincount(groups[observed]), min_size, min_agreement, owners)  # fmt: skip
    out = np.zeros(n, dtype=np.int64)
    out[observed] = merged[groups[observed]]
    largest = np.argmax(np.bincount(out[observed]))
    out[~observed] = largest
    return np.unique(out, return_inverse=True)[1]


def _merge_groups(
    agree: np.ndarray, both: np.ndarray, sizes: np.ndarray, min_size: int, min_agreement: float,
    owners: Optional[np.ndarray] = None,
) -> np.ndarray:  # fmt: skip
    """[G] merged group ids of G groups, from their [G, G] pair counts (see :class:`_Agglomeration`); then groups of
    fewer than ``min_size`` Gaussians join the group they agree with most (else the largest), except ``owners``."""
    merging = _Agglomeration(agree, both, sizes)
    merging.merge_above(min_agreement)
    merging.absorb_small(min_size, to_largest=True, owners=owners)
    return merging.parent


class _Agglomeration:
    """Average-agreement merging of groups: ``agree`` [G, G] counts the Gaussian pairs x views in which two groups'
    Gaussians share a segment, ``both`` those in which both have one; both are linear in the groups' members."""

    def __init__(self, agree: np.ndarray, both: np.ndarray, sizes: np.ndarray) -> None:
        self.agree, self.both = np.asarray(agree, np.float64), np.asarray(both, np.float64)
        self.sizes, self.parent = np.asarray(sizes, np.int64).copy(), np.arange(len(sizes))
        self.alive = np.ones(len(sizes), dtype=bool)

    def ratio(self, row: int) -> np.ndarray:
        """[G] agreement of group ``row`` with every live group; -1 where none (itself, dead, never co-visible)."""
        both = self.both[row]
        out = np.where(both > 0, self.agree[row] / np.maximum(both, 1e-12), -1.0)
        out[~self.alive] = -1.0
        out[row] = -1.0
        return out

    def absorb(self, keep: int, gone: int) -> None:
        for pairs in (self.agree, self.both):
            pairs[keep] += pairs[gone]
            pairs[:, keep] += pairs[:, gone]
        self.sizes[keep] += self.sizes[gone]
        self.alive[gone] = False
        self.parent[self.parent == gone] = keep

    def absorb_small(self, min_size: int, to_largest: bool, owners: Optional[np.ndarray] = None) -> None:
        """Groups of fewer than ``min_size`` Gaussians, smallest first, join the group they agree with most; one
        that shares no view with another joins the largest group with ``to_largest``, else stays. Groups that
        ``owners`` [G] marks (by their index before merging) stay too."""
        for small in np.argsort(self.sizes, kind="stable"):
            if not self.alive[small] or self.sizes[small] >= min_size or self.alive.sum() < 2:
                continue
            if owners is not None and owners[small]:
                continue
            row = self.ratio(small)
            if row.max() >= 0:
                self.absorb(int(np.argmax(row)), small)
            elif to_largest:
                others = self.alive & (np.arange(len(row)) != small)
                self.absorb(int(np.argmax(np.where(others, self.sizes, -1))), small)

    def merge_above(self, min_agreement: float) -> None:
        """Merge the best-agreeing pair of live groups while its agreement exceeds ``min_agreement``."""
        best = np.full(len(self.sizes), -1.0)
        partner = np.zeros(len(self.sizes), dtype=np.int64)

        def refresh(row: int) -> None:
            ratios = self.ratio(row)
            partner[row] = np.argmax(ratios)
            best[row] = ratios[partner[row]]

        for row in range(len(self.sizes)):
            refresh(row)
        while len(best) and best.max() > min_agreement:
            keep = int(np.argmax(best))
            gone = int(partner[keep])
            self.absorb(keep, gone)
            best[gone] = -1.0
            ratios = self.ratio(keep)
            for row in np.flatnonzero(self.alive & ((partner == keep) | (partner == gone))):
                refresh(row)
            better = self.alive & (ratios > best)  # rows whose agreement with the grown group now leads
            best[better], partner[better] = ratios[better], keep
            refresh(keep)
