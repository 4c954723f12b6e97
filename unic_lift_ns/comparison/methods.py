"""The benchmarked variants as data: UniC-Lift, its ablations (paper Table 4, appendix A.3; sparse masks, Fig. 9;
coarse masks, Fig. 8) and the clustering baselines. Each is an `ns-train` method plus the flags that make it the variant."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping


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


UNIC_LIFT = "unic-lift"
"""The `ns-train` method (and variant) name of UniC-Lift."""

NO_SEMANTICS = "--pipeline.datamanager.semantic-mask-dir"
"""The flag that, set to None, trains without the scene's semantic masks."""

VARIANTS: tuple[Variant, ...] = (
    Variant(UNIC_LIFT, UNIC_LIFT, "UniC-Lift"),
    Variant("unic-lift-votes", UNIC_LIFT, "UniC-Lift, gaussian-votes (confidence gate)",
            {"--pipeline.model.instance-decoding": "gaussian-votes"}),
    Variant("unic-lift-votes-semantic", UNIC_LIFT, "UniC-Lift, gaussian-votes (semantic gate)",
            {"--pipeline.model.instance-decoding": "gaussian-votes", "--pipeline.model.vote-gate": "semantic"}),
    Variant("unic-lift-nearest-code", UNIC_LIFT, "UniC-Lift, nearest-code decoding (confidence gate)",
            {"--pipeline.model.instance-decoding": "nearest-code"}),
    Variant("unic-lift-no-semantics", UNIC_LIFT, "UniC-Lift, no semantic masks (class-agnostic scoring)",
            {NO_SEMANTICS: "None"}),
    Variant("unic-lift-votes-no-semantics", UNIC_LIFT,
            "UniC-Lift, gaussian-votes (confidence gate), no semantic masks (class-agnostic scoring)",
            {"--pipeline.model.instance-decoding": "gaussian-votes", NO_SEMANTICS: "None"}),
    Variant("no-triplet", UNIC_LIFT, "UniC-Lift w/o triplet loss", {"--pipeline.model.triplet-loss-weight": "0"}),
    Variant("no-linear-layer", UNIC_LIFT, "UniC-Lift w/o linear layer", {"--pipeline.model.use-linear-layer": "False"}),
    Variant("no-3d-loss", UNIC_LIFT, "UniC-Lift w/o 3D loss", {"--pipeline.model.neighbour-loss-weight": "0"}),
    Variant("3d-loss-from-start", UNIC_LIFT, "UniC-Lift, 3D loss from step 0",
            {"--pipeline.model.neighbour-loss-start": "0"}),
    Variant("random-triplets", UNIC_LIFT, "UniC-Lift, random triplets", {"--pipeline.model.triplet-mining": "random"}),
    Variant("unic-lift-nearest-code-no-semantics", UNIC_LIFT,
            "UniC-Lift, nearest-code decoding (confidence gate), no semantic masks (class-agnostic scoring)",
            {"--pipeline.model.instance-decoding": "nearest-code", NO_SEMANTICS: "None"}),
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
)
"""Every benchmarked variant, in table order."""


def select_variants(names: tuple[str, ...]) -> list[Variant]:
    """The variants named in ``names`` (table order kept); a ValueError names any unknown one."""
    known = {v.name: v for v in VARIANTS}
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--methods: unknown method {unknown[0]!r}; choose from {', '.join(known)}")
    return [v for v in VARIANTS if v.name in names]
