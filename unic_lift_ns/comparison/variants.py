"""The benchmarked variants as data: UniC-Lift, its ablations (paper Table 4, appendix A.3; sparse masks, Fig. 9;
coarse masks, Fig. 8) and the clustering baselines. Each is an `ns-train` method plus the flags that make it the variant
and the decoding it is scored with; variants that train alike share one training."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping


@dataclass(frozen=True)
class Variant:
    """One row of the benchmark: an `ns-train` method with extra flags."""

    name: str
    """Short name, used by --methods and as the run folder name."""
    method: str
    """The `ns-train` method it trains."""
    label: str
    """Row label of the table."""
    flags: Mapping[str, str] = field(default_factory=dict)
    """Flags that make the variant, applied after (and over) the budget's flags."""
    decoding: Mapping[str, Any] = field(default_factory=dict)
    """Model config fields set on the trained run before it is scored (how it labels pixels; no effect on
    training): variants that differ only in these share one training (see :func:`training_groups`)."""


UNIC_LIFT = "unic-lift"
"""The `ns-train` method (and variant) name of UniC-Lift."""

NO_SEMANTICS = "--pipeline.datamanager.semantic-mask-dir"
"""The flag that, set to None, trains without the scene's semantic masks."""

VOTES = {"instance_decoding": "gaussian-votes"}
"""The decoding of the gaussian-votes variants."""
NEAREST_CODE = {"instance_decoding": "nearest-code"}
"""The decoding of the nearest-code variants."""
SNAP = {"snap_votes": True}
"""Pixels read only the voting Gaussians' labels (no third codes where labels blend)."""
MASK_SPLIT_MERGE = {"split_by_masks": True, "merge_by_masks": True}
"""Labels split and merged by the train masks (unic_lift_ns.mask_split)."""
MASK_SPLIT_RECOVER = {"split_by_masks": True, "recover_by_masks": True}
"""Labels split by the train masks, and the groups of Gaussians without a code that own segments given codes."""

GAUSSIAN_CLUSTERING_PAPER_LABELS = {
    "semantic_guided_clustering": False,
    "cluster_min_opacity": 0.0,
    "cluster_min_size": 50,
}
"""Contrastive Gaussian Clustering's own labels (the model's defaults), which the CPU budgets change."""

VARIANTS: tuple[Variant, ...] = (
    Variant(UNIC_LIFT, UNIC_LIFT, "UniC-Lift"),
    Variant("unic-lift-votes", UNIC_LIFT, "UniC-Lift, gaussian-votes (confidence gate)", decoding=VOTES),
    Variant("unic-lift-votes-semantic", UNIC_LIFT, "UniC-Lift, gaussian-votes (semantic gate)",
            decoding={**VOTES, "vote_gate": "semantic"}),
    Variant("unic-lift-votes-split", UNIC_LIFT, "UniC-Lift, gaussian-votes (confidence gate), code collisions split",
            decoding={**VOTES, "split_collisions": True}),
    Variant("unic-lift-votes-snap", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped to the voting labels",
            decoding={**VOTES, **SNAP}),
    Variant("unic-lift-votes-snap-mask-merge", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped, labels merged by the train masks",
            decoding={**VOTES, **SNAP, "merge_by_masks": True}),
    Variant("unic-lift-votes-snap-mask-split-merge", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped, labels split and merged by the train masks",
            decoding={**VOTES, **SNAP, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-snap-mask-recover-merge", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped, labels split, recovered and merged by the train "
            "masks", decoding={**VOTES, **SNAP, **MASK_SPLIT_RECOVER, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-mask-split", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split by the train masks",
            decoding={**VOTES, "split_by_masks": True}),
    Variant("unic-lift-votes-mask-split-merge", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split and merged by the train masks",
            decoding={**VOTES, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-mask-recover", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split and recovered by the train masks",
            decoding={**VOTES, **MASK_SPLIT_RECOVER}),
    Variant("unic-lift-votes-mask-recover-merge", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split, recovered and merged by the train masks",
            decoding={**VOTES, **MASK_SPLIT_RECOVER, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-nearest-code", UNIC_LIFT, "UniC-Lift, nearest-code decoding (confidence gate)",
            decoding=NEAREST_CODE),
    Variant("unic-lift-no-semantics", UNIC_LIFT, "UniC-Lift, no semantic masks (class-agnostic scoring)",
            {NO_SEMANTICS: "None"}),
    Variant("unic-lift-votes-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), no semantic masks (class-agnostic scoring)",
            {NO_SEMANTICS: "None"}, VOTES),
    Variant("unic-lift-nearest-code-no-semantics", UNIC_LIFT,
            "UniC-Lift, nearest-code decoding (confidence gate), no semantic masks (class-agnostic scoring)",
            {NO_SEMANTICS: "None"}, NEAREST_CODE),
    Variant("unic-lift-votes-mask-split-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split by the train masks, no semantic masks "
            "(class-agnostic scoring)", {NO_SEMANTICS: "None"}, {**VOTES, "split_by_masks": True}),
    Variant("unic-lift-votes-mask-split-merge-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split and merged by the train masks, no semantic "
            "masks (class-agnostic scoring)", {NO_SEMANTICS: "None"}, {**VOTES, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-mask-recover-merge-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), labels split, recovered and merged by the train masks, no "
            "semantic masks (class-agnostic scoring)", {NO_SEMANTICS: "None"},
            {**VOTES, **MASK_SPLIT_RECOVER, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-snap-mask-split-merge-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped, labels split and merged by the train masks, no "
            "semantic masks (class-agnostic scoring)", {NO_SEMANTICS: "None"}, {**VOTES, **SNAP, **MASK_SPLIT_MERGE}),
    Variant("unic-lift-votes-snap-mask-recover-merge-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), snapped, labels split, recovered and merged by the train "
            "masks, no semantic masks (class-agnostic scoring)", {NO_SEMANTICS: "None"},
            {**VOTES, **SNAP, **MASK_SPLIT_RECOVER, **MASK_SPLIT_MERGE}),
    Variant("no-triplet", UNIC_LIFT, "UniC-Lift w/o triplet loss", {"--pipeline.model.triplet-loss-weight": "0"}),
    Variant("no-linear-layer", UNIC_LIFT, "UniC-Lift w/o linear layer", {"--pipeline.model.use-linear-layer": "False"}),
    Variant("no-3d-loss", UNIC_LIFT, "UniC-Lift w/o 3D loss", {"--pipeline.model.neighbour-loss-weight": "0"}),
    Variant("3d-loss-from-start", UNIC_LIFT, "UniC-Lift, 3D loss from step 0",
            {"--pipeline.model.neighbour-loss-start": "0"}),
    Variant("random-triplets", UNIC_LIFT, "UniC-Lift, random triplets", {"--pipeline.model.triplet-mining": "random"}),
    Variant("cluster-sum", UNIC_LIFT, "UniC-Lift, Eq. 4 with the paper's sums (cluster-balance sum)",
            {"--pipeline.model.cluster-balance": "sum"}),
    Variant("stuff-label-0", UNIC_LIFT, "UniC-Lift, stuff centroid pinned to label 0 (cluster-stuff label-0)",
            {"--pipeline.model.cluster-stuff": "label-0"}),
    *(Variant(f"masks-{p}pct", UNIC_LIFT, f"UniC-Lift, masks for {p}% of views",
              {"--pipeline.datamanager.mask-fraction": str(p / 100)}) for p in (5, 10, 20)),
    *(Variant(f"masks-{s}x", UNIC_LIFT, f"UniC-Lift, masks at {s}x resolution",
              {"--pipeline.datamanager.mask-scale": str(s)}) for s in (0.5, 0.25)),
    Variant("contrastive-lift", "contrastive-lift", "Contrastive Lift"),
    Variant("gaussian-clustering", "gaussian-clustering", "Gaussian clustering"),
    Variant("gaussian-clustering-paper-labels", "gaussian-clustering",
            "Gaussian clustering, its paper's labels (all Gaussians in one clustering, minimum size 50)",
            decoding=GAUSSIAN_CLUSTERING_PAPER_LABELS),
)
"""Every benchmarked variant, in table order."""


def select_variants(names: tuple[str, ...]) -> list[Variant]:
    """The variants named in ``names`` (table order kept); a ValueError names any unknown one."""
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    return [v for v in VARIANTS if v.name in names]


def training_groups(variants: list[Variant]) -> list[list[Variant]]:
    """``variants`` grouped by what they train (method and flags), in order: each group is trained once and
    scored with each member's decoding."""
    groups: dict[tuple, list[Variant]] = {}
    for variant in variants:
        groups.setdefault((variant.method, tuple(sorted(variant.flags.items()))), []).append(variant)
    return list(groups.values())


def trains_like_paper(name: str) -> bool:
    """Whether the variant ``name`` trains what UniC-Lift's default (``unic-lift``) trains: only its decoding
    differs, so HDBSCAN on its rendered maps is the same row whichever decoding of the training was run first.
    A name no variant has (e.g. one an older bench ran) does not."""
    known = {v.name: v for v in VARIANTS}
    return name in known and len(training_groups([known[name], known[UNIC_LIFT]])) == 1
