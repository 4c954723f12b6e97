"""UniC-Lift on the segmentation backbone: a learnable d-dim embedding per Gaussian, rendered like colour (Eq. 3),
trained with the cluster-contrastive (Eq. 4), triplet (Eq. 5) and 3D neighbourhood (Eq. 6) losses of Eq. 7, and
decoded to instance labels by Embedding-to-Label (sigmoid, threshold 0.5, bits read as an integer).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar, Dict, List, Literal, Optional, Tuple, Type

import torch
from torch import Tensor
from torch.nn import Parameter

from unic_lift_ns.corrections import Corrections
from unic_lift_ns.errors import InputError
from unic_lift_ns.flag_ranges import AT_LEAST_0, AT_LEAST_1, POSITIVE, Range
from unic_lift_ns.instance_codes import label_to_bits, max_labels
from unic_lift_ns.losses import (
    boundary_triplets,
    cluster_contrastive_loss,
    code_push_loss,
    neighbour_pairs,
    neighbourhood_loss,
    random_triplets,
    stuff_pixels,
    triplet_loss,
)
from unic_lift_ns.models.backbone import SegmentationSplatModel, SegmentationSplatModelConfig
from unic_lift_ns.models.decoding import DECODINGS, Decoding, InstanceDecoding, VoteGate, by_vote_majority, vote_share
MAX_EMBEDDING_DIM = 24
"""Largest d: a d-bit label is exact in float32 (the viewer's ``instance_label``), int32 PLY properties and
32-bit label maps."""


@dataclass
class UniCLiftModelConfig(SegmentationSplatModelConfig):
    """UniC-Lift model: the backbone's per-Gaussian embeddings as instance codes (paper section 3.3)."""

    _target: Type = field(default_factory=lambda: UniCLiftModel)
    embedding_dim: int = 12
    """Dimension d of the per-Gaussian embedding v (Eq. 3), 1 to 24; at most 2^d instances can be told apart."""
    cluster_loss_weight: float = 0.1
    """lambda_cluster of Eq. 7 (cluster-contrastive loss, Eq. 4)."""
    triplet_loss_weight: float = 0.1
    """lambda_triplet of Eq. 7 (triplet loss, Eq. 5)."""
    neighbour_loss_weight: float = 0.1
    """lambda_3D of Eq. 7 (3D neighbourhood loss, Eq. 6)."""
    triplet_margin: float = 1.0
    """Margin delta of the triplet loss (Eq. 5)."""
    max_triplets: int = 3000
    """Maximum number of triplets per step."""
    triplet_mining: Literal["boundary", "random"] = "boundary"
    """Where triplets come from: 'boundary' (hard mining at mask boundaries, paper) or 'random' (appendix A.3)."""
    triplet_start: Optional[int] = None
    """Step from which the triplet loss is on; None = once densification has stopped (stop_split_at)."""
    use_linear_layer: bool = True
    """Apply the learnable d x d linear layer W before the triplet loss (z = W sigmoid(V)); off = ablation."""
    cluster_balance: Literal["mean", "sum"] = "mean"
    """Balance of Eq. 4's two terms: 'mean' (pixel mean minus centroid-pair mean) or 'sum' (the paper's sums, both
    divided by the pixel count; its inter-centroid term weighs K(K-1)/P as much, about 1/46 on the demo)."""
    cluster_stuff: Literal["segment", "label-0"] = "segment"
    """How the stuff (segments mostly of semantic class 0, the background) enters Eq. 4: 'segment' (like any
    segment, paper) or 'label-0' (its centroid fixed at the code-0 corner, so the background decodes to label 0);
    views without a semantic mask use 'segment'."""
    code_push_weight: float = 0.0
    """Weight of a term not in the paper that pushes the rendered codes of masked pixels off the cube's centre
    (losses.code_push_loss), where Eq. 4 leaves the floor; 0 = the paper's Eq. 7."""
    neighbour_tau: float = 0.01
    """tau of Eq. 6: Gaussians whose centres are within this SQUARED distance are neighbours."""
    neighbour_loss_start: int = 15000
    """Step from which the 3D neighbourhood loss is on (paper: 15000, appendix B.2)."""
    neighbour_refresh_every: Optional[int] = None
    """Also recompute the neighbour pairs of Eq. 6 every this many steps; None = only when the Gaussians are
    replaced (each gsplat refinement, loading a checkpoint). The paper's 3D loss starts once densification has
    stopped, after which the centres move little against tau, so by default the pairs are built once."""
    neighbour_pairs_per_step: int = 65536
    """Eq. 6 per step as the mean over this many neighbour pairs drawn uniformly (with replacement) from all of
    them: an unbiased estimate of the all-pairs mean and its gradient whose cost does not grow with the pair count
    (2 CPU cores, 1M Gaussians: 26 ms against 4.6 s for all 15M pairs; on the demo, 43k Gaussians and 670k pairs,
    gaussian-votes PQ^scene is 88.1 either way). 0 = every pair every step (the paper)."""
    max_neighbours: int = 16
    """At most this many neighbours per Gaussian in Eq. 6."""
    instance_decoding: InstanceDecoding = "rendered-embedding"
    """How pixels get labels outside training. 'rendered-embedding' (paper, Sec. 3.3): Embedding-to-Label of the
    rendered V. 'gaussian-votes': Embedding-to-Label of every Gaussian first, then each pixel decodes the
    alpha-composited +-1 bits of the Gaussians that vote (vote_gate; pixels no Gaussian votes for get label 0).
    Still O(n) and clustering-free; it removes the third codes that blends of unequal embeddings decode to at
    object boundaries. 'nearest-code': sigmoid(V) of each pixel (and of each Gaussian) takes the nearest corner
    among the Embedding-to-Label codes of the Gaussians that vote, or label 2^d (no code) where the cube's centre is
    nearer (only when some Gaussians do not vote); no clustering (the codes are read, not fitted), O(pixels x
    codes). Third codes and codes no voting Gaussian holds then cannot appear."""
    vote_gate: Literal["confidence", "semantic", "semantic-and-confidence", "none"] = "confidence"
    """Which Gaussians vote with 'gaussian-votes' (and whose codes 'nearest-code' snaps to). 'confidence'
    (class-agnostic): those whose every bit is at least vote_confidence from 0.5 (min_i |sigmoid(v_i) - 0.5|), so
    the codes Eq. 4 leaves near the cube's centre (large background segments, regions no mask covers) do not;
    'semantic': those of semantic class != 0 (the semantic guidance of Contrastive Lift, appendix B.3; every
    Gaussian when the head saw no semantic masks); 'semantic-and-confidence': both; 'none': every Gaussian."""
    vote_confidence: float = 0.2
    """Smallest min_i |sigmoid(v_i) - 0.5| of a voting Gaussian for the confidence gates (0 to 0.5)."""
    vote_majority: Literal["auto", "on", "off"] = "auto"
    """'gaussian-votes' (and corrections): a pixel takes its voters' label only where Gaussians that vote give it
    at least as much alpha as those that do not, else label 2^d (no code, like nearest-code's cube centre).
    Without semantic masks the background is an instance whose codes Eq. 4 leaves unconfident, so it does not vote,
    and the objects' votes would claim its pixels. 'auto': on when the semantic head saw no semantic masks
    (class-agnostic masks such as SAM's); with them, the semantic class marks background pixels."""
    snap_votes: bool = False
    """With 'gaussian-votes': a pixel takes, among the labels of the Gaussians that vote, the one whose +-1 bits are
    nearest its composited votes (the largest dot product), instead of each vote's sign. Where three or more labels
    blend (junctions of objects, thin parts), the signs can spell a code no Gaussian holds: a label of a few pixels
    that no object has. O(pixels x labels), no clustering (the labels are read, not fitted)."""
    split_collisions: bool = False
    """With 'gaussian-votes': split code collisions (unic_lift_ns.collisions). Parts of one label that are
    separate 3D components never seen together in a training view get unused codes; the Gaussians vote the bits of
    their split label, and gaussian_labels() (export, viewer) returns it. Needs the datamanager's train cameras."""
    collision_radius: float = 5.0
    """Neighbour radius of the collision split's 3D components, in median nearest-neighbour distances of the voting
    Gaussians' centres (scale-free)."""
    collision_min_gaussians: int = 5
    """Components of fewer voting Gaussians keep their label in the collision split; a train view that shows this
    many (or half) of a component's centres sees it. Also the smallest group the mask split gives a code."""
    split_by_masks: bool = False
    """With 'gaussian-votes': split each label's voting Gaussians that the train views' own instance masks keep
    apart (unic_lift_ns.mask_split; no clustering of embeddings): touching objects that training gave one code get
    codes of their own. Runs after split_collisions; its depth tolerance is collision_radius. Needs the
    datamanager's train cameras and masks."""
    merge_by_masks: bool = False
    """With 'gaussian-votes': merge labels (after split_by_masks where on) whose voting Gaussians the train views'
    instance masks put in one segment more often than mask_split_agreement: one object that training left on
    several codes becomes one label. Needs the datamanager's train cameras and masks."""
    recover_by_masks: bool = False
    """With 'gaussian-votes': groups of the Gaussians that do not vote (vote_gate), grouped by the train views'
    instance masks like a label's, take a code of their own where they are most of the Gaussians their mask segments
    show: objects whose codes training left unconfident, which would otherwise take no label. Runs after
    split_by_masks and before merge_by_masks. Needs the datamanager's train cameras and masks."""
    mask_split_agreement: float = 0.5
    """The mask split merges groups of a label whose co-visible Gaussian pairs share a mask segment in more than
    this fraction of the train views that show both (0 to 1)."""
    mask_keep_owners: bool = True
    """With split_by_masks, recover_by_masks or merge_by_masks: a group (or label) of fewer than
    collision_min_gaussians Gaussians stays apart where it owns its mask segments (on average it is more than half
    of the Gaussians each of its segments shows): a small object the masks segment on its own, where a fragment of a
    larger object or of the floor shares their segments and joins them. False: every small group joins another."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        "embedding_dim": Range(
            1, MAX_EMBEDDING_DIM, why="labels have d bits and must stay exact in the viewer's float32 instance_label output"
        ),
        "cluster_loss_weight": AT_LEAST_0, "triplet_loss_weight": AT_LEAST_0, "neighbour_loss_weight": AT_LEAST_0,
        "triplet_margin": AT_LEAST_0, "max_triplets": AT_LEAST_1, "triplet_start": AT_LEAST_0,
        "code_push_weight": AT_LEAST_0, "neighbour_tau": POSITIVE, "neighbour_loss_start": AT_LEAST_0,
        "neighbour_refresh_every": AT_LEAST_1, "neighbour_pairs_per_step": AT_LEAST_0, "max_neighbours": AT_LEAST_1,
        "vote_confidence": Range(0, 0.5, open_high=True), "collision_radius": POSITIVE,
        "collision_min_gaussians": AT_LEAST_1, "mask_split_agreement": Range(0, 1, open_high=True),
    }  # fmt: skip
    """Allowed values of UniC-Lift's numeric fields (:mod:`unic_lift_ns.flag_ranges`)."""
    decoding_fields: ClassVar[Tuple[str, ...]] = (
        "instance_decoding", "vote_gate", "vote_confidence", "vote_majority", "snap_votes", "split_collisions",
        "collision_radius", "collision_min_gaussians", "split_by_masks", "merge_by_masks", "recover_by_masks",
        "mask_split_agreement", "mask_keep_owners",
    )  # fmt: skip
    """What :meth:`~unic_lift_ns.models.backbone.SegmentationSplatModel.set_decoding` may change."""


class UniCLiftModel(SegmentationSplatModel):
    """The backbone with UniC-Lift's losses (Eq. 7), its linear layer W and Embedding-to-Label decoding."""

    config: UniCLiftModelConfig

    def populate_modules(self) -> None:
        """The backbone's Gaussians, plus the linear layer W of the triplet branch (Eq. 5), initialised to I."""
        cfg = self.config
        self.decoding_changed()
        super().populate_modules()
        self.triplet_projection = torch.nn.Linear(cfg.embedding_dim, cfg.embedding_dim, bias=False)
        torch.nn.init.eye_(self.triplet_projection.weight)
        self._triplet_generator = torch.Generator()
        self._triplet_generator.manual_seed(0)
        self._neighbour_generator = torch.Generator()  # Eq. 6's per-step sample of pairs
        self._neighbour_generator.manual_seed(1)
        self.vote_gate = VoteGate()  # which Gaussians vote, for the decodings that read the Gaussians' codes
        self.corrections = Corrections()  # the user's label corrections, replayed by gaussian_labels()
        self._check_segment_counts()

    def _check_segment_counts(self) -> None:
        """Refuse masks with more segments than the 2^d labels the embedding can encode."""
        counts: Dict = self.kwargs.get("metadata", {}).get("segment_counts", {}) or {}
        limit = max_labels(self.config.embedding_dim)
        too_many = {path: n for path, n in counts.items() if n > limit}
        if too_many:
            path, n = next(iter(too_many.items()))
            raise InputError(
                f"{path} has {n} segments, more than the 2^{self.config.embedding_dim} = {limit} labels of a "
                f"{self.config.embedding_dim}-d embedding ({len(too_many)} mask file(s) affected); "
                "raise --pipeline.model.embedding-dim"
            )

    def get_extra_state(self) -> Dict[str, Any]:
        """The backbone's state and the triplet sampler's generator."""
        return {
            **super().get_extra_state(),
            "triplet_generator": self._triplet_generator.get_state(),
            "neighbour_generator": self._neighbour_generator.get_state(),
        }

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        super().set_extra_state(state)
        self._triplet_generator.set_state(state["triplet_generator"])
        if "neighbour_generator" in state:  # absent from checkpoints saved before Eq. 6 sampled its pairs
            self._neighbour_generator.set_state(state["neighbour_generator"])

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = super().get_param_groups()
        groups["triplet_projection"] = list(self.triplet_projection.parameters())
        return groups

    def rendered_loss_weights(self) -> List[float]:
        """The semantic loss's weight, lambda_cluster and lambda_triplet (Eq. 7) and the code push's weight."""
        cfg = self.config
        weights = [cfg.cluster_loss_weight, cfg.triplet_loss_weight, cfg.code_push_weight]
        return super().rendered_loss_weights() + weights

    def segmentation_features(self, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The embedding v (Eq. 3) and semantic logits, plus, outside training, the decoding's own per-Gaussian
        features (the votes of 'gaussian-votes'), or with corrections the +-1 bits of each Gaussian's corrected label
        (d + 1 bits: deleted instances are label 2^d) from the Gaussians the decoding lets vote, composited as
        'gaussian-votes' composites its votes."""
        features = super().segmentation_features(params)
        if self.training:
            return features
        if self.corrections.operations:  # pixels read the corrected labels of their Gaussians
            votes = 2.0 * label_to_bits(self.gaussian_labels(), self.config.embedding_dim + 1) - 1.0
            voting, drawn = self.decoding.voting(self), self.drawn_gaussians()
            if voting is not None:  # decodings whose Gaussians all vote need no majority
                voters = voting.unsqueeze(-1).float()
                votes = votes * voters
                features.update(vote_share(self, voters if drawn is None else voters[drawn]))
            features["corrected_votes"] = votes if drawn is None else votes[drawn]
        else:
            features.update(self.decoding.features(self, params))
        return features

    @property
    def decoding(self) -> Decoding:
        """The decoding ``instance_decoding`` names (:mod:`unic_lift_ns.models.decoding`)."""
        return DECODINGS[self.config.instance_decoding]

    def decoding_changed(self) -> None:
        """Refuse split_collisions and the mask split's flags without the train cameras (and masks) they project
        into."""
        mask_flags = ("split_by_masks", "merge_by_masks", "recover_by_masks")
        needed = [("split_collisions", "train_cameras")]
        needed += [(flag, needs) for flag in mask_flags for needs in ("train_cameras", "train_instance_masks")]
        for flag, needs in needed:
            if getattr(self.config, flag) and getattr(self, needs) is None:
                raise InputError(
                    f"--pipeline.model.{flag.replace('_', '-')} needs the train "
                    f"{'cameras' if needs == 'train_cameras' else 'instance masks'}, which the unic-lift datamanager "
                    f"passes in the model's metadata ('{needs}')"
                )

    def set_corrections(self, corrections: Corrections) -> None:
        """Replay ``corrections`` (:mod:`unic_lift_ns.corrections`) on the decoding's labels from now on: in
        :meth:`gaussian_labels` and so in every pixel label, export and evaluation."""
        self.corrections = corrections

    @torch.no_grad()
    def gaussian_labels(self) -> Tensor:
        """Each Gaussian's label under the decoding, with the corrections replayed (cached per step, decoding
        settings and corrections)."""
        if not self.corrections.operations:
            return self.decoding.gaussian_labels(self)
        cfg = self.config
        key = (cfg.decoding_settings(), self.corrections)

        def build() -> Tensor:
            labels = self.decoding.gaussian_labels(self)
            return self.corrections.apply(labels, self.means, cfg.embedding_dim, cfg.collision_radius,
                                          cfg.collision_min_gaussians)  # fmt: skip

        return self.gaussian_cache("corrected_labels", build, 1, key=key)

    def decode_instances(self, maps: Dict[str, Tensor]) -> Tensor:
        """Embedding-to-Label (Sec. 3.3) as the decoding reads it; no clustering. With corrections, the composited
        bits of the Gaussians' corrected labels."""
        if "corrected_votes" in maps:
            return by_vote_majority(self, self.decoding.corrected_pixel_labels(self, maps["corrected_votes"]), maps)
        return self.decoding.pixel_labels(self, maps)

    def instance_losses(
        self, outputs: Dict[str, Tensor], segments: Tensor, semantics: Optional[Tensor]
    ) -> Dict[str, Tensor]:
        """The 2D instance losses on the rendered embedding: lambda_cluster Eq. 4 and lambda_triplet Eq. 5 (arguments
        as in the backbone's hook; ``semantics`` serves cluster_stuff 'label-0')."""
        cfg, slots = self.config, self.num_segments
        embedding = outputs["embedding"]
        squashed = torch.sigmoid(embedding.reshape(-1, cfg.embedding_dim))
        pinned = None
        if cfg.cluster_stuff == "label-0" and semantics is not None:
            pinned = stuff_pixels(segments, semantics, num_segments=slots)
        cluster = cluster_contrastive_loss(squashed, segments, cfg.cluster_balance, pinned, slots)
        loss_dict = {"cluster_loss": cfg.cluster_loss_weight * cluster}
        if cfg.code_push_weight > 0:
            loss_dict["code_push_loss"] = cfg.code_push_weight * code_push_loss(squashed, segments)
        triplet_start = cfg.stop_split_at if cfg.triplet_start is None else cfg.triplet_start
        if cfg.triplet_loss_weight > 0 and self.step >= triplet_start:
            segment_map = segments.reshape(embedding.shape[:2])
            if cfg.triplet_mining == "boundary":
                triplets = boundary_triplets(segment_map, cfg.max_triplets, self._triplet_generator, num_segments=slots)
            else:
                triplets = random_triplets(segment_map, cfg.max_triplets, self._triplet_generator)
            z = self.triplet_projection(squashed) if cfg.use_linear_layer else squashed
            loss_dict["triplet_loss"] = cfg.triplet_loss_weight * triplet_loss(z, triplets, cfg.triplet_margin)
        return loss_dict

    def gaussian_losses(self) -> Dict[str, Tensor]:
        """lambda_3D Eq. 6 from ``neighbour_loss_start`` on, over the cached neighbour pairs (a uniform sample of
        ``neighbour_pairs_per_step`` of them)."""
        cfg = self.config
        if cfg.neighbour_loss_weight <= 0 or self.step < cfg.neighbour_loss_start:
            return {}
        pairs = self.gaussian_cache(
            "neighbour_pairs",
            lambda: neighbour_pairs(self.means.detach(), cfg.neighbour_tau, cfg.max_neighbours),
            cfg.neighbour_refresh_every,
        )
        loss = neighbourhood_loss(self.embeddings, pairs, cfg.neighbour_pairs_per_step, self._neighbour_generator)
        return {"neighbour_loss": cfg.neighbour_loss_weight * loss}
