"""What the two clustering baselines share: HDBSCAN's minimum cluster size and Contrastive Lift's semantic guidance
(its appendix B.3: each predicted thing class is clustered on its own, stuff gets its class label), as config
fields declared once, and the thing classes they cluster."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple

from unic_lift_ns.clustering import guided_thing_classes
from unic_lift_ns.flag_ranges import AT_LEAST_0, Range
from unic_lift_ns.models.backbone import SegmentationSplatModel, SegmentationSplatModelConfig


@dataclass
class ClusteringModelConfig(SegmentationSplatModelConfig):
    """A method whose labels come from clustering its embeddings (each subclass sets its paper's defaults)."""

    cluster_min_size: int = 100
    """HDBSCAN's minimum cluster size, in clustered samples (Contrastive Lift's appendix B.3 tunes it; smaller for
    more objects)."""
    semantic_guided_clustering: bool = True
    """Cluster each predicted thing class separately and give stuff its class label (Contrastive Lift, appendix
    B.3); False = one clustering of everything. Needs the semantic head (num_semantic_classes > 0)."""
    stuff_classes: Tuple[int, ...] = (0,)
    """Semantic classes that are stuff (Messy Rooms: background), with semantic guidance: stuff class k of this list
    gets label k and the thing clusters the labels after them."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        "cluster_min_size": Range(2, why="HDBSCAN's smallest cluster size"), "stuff_classes": AT_LEAST_0,
    }  # fmt: skip
    """Allowed values of the shared clustering fields (:mod:`unic_lift_ns.flag_ranges`)."""
    decoding_fields: ClassVar[Tuple[str, ...]] = ("cluster_min_size", "semantic_guided_clustering", "stuff_classes")
    """The clustering's settings: what ``set_decoding`` may change (subclasses add theirs)."""


class ClusteringModel(SegmentationSplatModel):
    """A model labelled by clustering; a bad ``--pipeline.model.stuff-classes`` fails when it is built."""

    config: ClusteringModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        guided_thing_classes(self.config)

    @property
    def thing_classes(self) -> Optional[List[int]]:
        """The classes clustered separately (semantic guidance), or None: everything in one group."""
        return guided_thing_classes(self.config, self.semantic_head_trained())
