"""UniC-Lift's instance decodings: how rendered maps and Gaussians become labels, with no clustering (Sec. 3.3).

Every decoding is one :class:`Decoding`: per-Gaussian features it composites outside training, per-pixel labels
from the rendered maps and per-Gaussian labels. 'rendered-embedding' is the paper's Embedding-to-Label of the
rendered V; 'gaussian-votes' and 'nearest-code' read the codes of the Gaussians that vote, chosen by the one
:class:`VoteGate` the model holds. A decoding is chosen by the model config's ``instance_decoding`` (set it with
the model's ``set_decoding``); a new one is a subclass here, its name in :data:`InstanceDecoding` and in
:data:`DECODINGS`.
"""

from __future__ import annotations

from typing import ClassVar, Dict, Literal, Optional, Tuple

import torch
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from unic_lift_ns.clustering import assign_nearest
from unic_lift_ns.collisions import CollisionReport, median_neighbour_distance, split_label_collisions
from unic_lift_ns.instance_codes import embedding_to_label, label_to_bits, max_labels
from unic_lift_ns.mask_split import MaskSplitReport, split_labels_by_masks
from unic_lift_ns.models.backbone import SegmentationSplatModel
from unic_lift_ns.models.portable_splatfacto import world_to_camera

DecodedModel = SegmentationSplatModel
"""What the decodings read: a UniC-Lift model (its config's vote and collision fields, its ``vote_gate``); named
by its base class, since ``models/unic_lift.py`` imports this module."""

InstanceDecoding = Literal["rendered-embedding", "gaussian-votes", "nearest-code"]
"""The instance decodings of UniC-Lift (see ``UniCLiftModelConfig.instance_decoding``)."""

MIN_CONFIDENT_FRACTION = 0.01
"""The confidence vote gate applies only when at least this fraction of the Gaussians pass it (an undertrained
model has none, and would decode every pixel to 0)."""


class VoteGate:
    """Which Gaussians vote (``vote_gate``, ``vote_confidence``), for 'gaussian-votes' and 'nearest-code'; it says
    once when the gate cannot apply."""

    def __init__(self) -> None:
        self._semantic_gated: Optional[bool] = None  # whether the semantic gate last had a trained head
        self._logged_unconfident = False

    @staticmethod
    def settings(model: DecodedModel) -> Tuple[str, float]:
        """What decides, within a step, which Gaussians vote: the key of the caches built from the voters."""
        return model.config.vote_gate, model.config.vote_confidence

    def voters(self, model: DecodedModel, params: Dict[str, Tensor]) -> Tensor:
        """[N, 1] float: 1 for the Gaussians of ``params`` that vote under vote_gate, else 0."""
        gate, voting = model.config.vote_gate, torch.ones_like(params["embeddings"][:, :1])
        if gate in ("confidence", "semantic-and-confidence"):
            confidence = (torch.sigmoid(params["embeddings"]) - 0.5).abs().min(dim=-1, keepdim=True).values
            confident = confidence >= model.config.vote_confidence
            fraction = float(confident.float().mean()) if len(confident) else 0.0
            if fraction >= MIN_CONFIDENT_FRACTION:
                voting = voting * confident
            elif not self._logged_unconfident:  # an undertrained model: do not decode everything to label 0
                self._logged_unconfident = True
                CONSOLE.print(
                    f"gaussian-votes: only {100 * fraction:.2f}% of the Gaussians have codes confident to "
                    f"{model.config.vote_confidence} (training too short?), so every Gaussian votes",
                    style="yellow", markup=False, soft_wrap=True,
                )  # fmt: skip
        semantic = gate in ("semantic", "semantic-and-confidence")
        trained = semantic and "semantic_logits" in params and model.semantic_head_trained()
        if trained:
            voting = voting * (params["semantic_logits"].argmax(dim=-1, keepdim=True) != 0)
        if semantic and trained != self._semantic_gated:
            self._semantic_gated = trained
            self._log_semantic_gate(trained)
        return voting

    def voting(self, model: DecodedModel) -> Tensor:
        """[N] bool: the model's Gaussians that vote."""
        return self.voters(model, model.gauss_params).squeeze(-1) > 0

    @staticmethod
    def _log_semantic_gate(gated: bool) -> None:
        """Say once (and again when it changes) whether the semantic gate leaves background Gaussians out."""
        if gated:
            CONSOLE.log("gaussian-votes: Gaussians of semantic class 0 (background) do not vote")
        else:
            CONSOLE.log(
                "[yellow]gaussian-votes: the semantic head saw no semantic masks, so the semantic gate lets every "
                "Gaussian vote (add semantic_masks/, or use --pipeline.model.vote-gate confidence)"
            )


class Decoding:
    """The interface of a decoding, with the paper's behaviour: Embedding-to-Label of the rendered embedding, and
    of each Gaussian's own."""

    name: ClassVar[str]

    def features(self, model: DecodedModel, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per-Gaussian features [N', c] of the drawn Gaussians ``params`` to composite outside training."""
        return {}

    def pixel_labels(self, model: DecodedModel, maps: Dict[str, Tensor]) -> Tensor:
        """Labels [...] int64 of feature maps [..., c] (rendered pixels, or one row per Gaussian)."""
        return embedding_to_label(maps["embedding"])

    def gaussian_labels(self, model: DecodedModel) -> Tensor:
        """[N] int64: each Gaussian's label, read from its own embedding like a pixel."""
        return self.pixel_labels(model, {"embedding": model.embeddings})

    def voting(self, model: DecodedModel) -> Optional[Tensor]:
        """[N] bool: the Gaussians whose labels pixels composite when they read per-Gaussian labels (with
        corrections); None: every Gaussian."""
        return None

    def corrected_pixel_labels(self, model: DecodedModel, votes: Tensor) -> Tensor:
        """Labels [...] of the composited +-1 bits ``votes`` [..., d + 1] of the Gaussians' corrected labels (the
        model's ``gaussian_labels`` with the user's corrections replayed)."""
        return embedding_to_label(votes)


class RenderedEmbedding(Decoding):
    """The paper's decoding (Sec. 3.3): Embedding-to-Label of the rendered V."""

    name: ClassVar[str] = "rendered-embedding"


class GaussianVotes(Decoding):
    """Embedding-to-Label of every Gaussian first; each pixel decodes the alpha-composited +-1 bits of the Gaussians
    that vote (0 where none does), so blends of unequal embeddings cannot decode to third codes. With
    ``split_collisions`` or the mask split's flags (``split_by_masks``, ``recover_by_masks``, ``merge_by_masks``) the
    Gaussians vote the bits of their split label (:mod:`unic_lift_ns.collisions`, :mod:`unic_lift_ns.mask_split`).
    Where :func:`vote_majority` applies, a pixel whose alpha comes mostly from Gaussians that do not vote takes label
    2^d (no code) instead."""

    name: ClassVar[str] = "gaussian-votes"

    def features(self, model: DecodedModel, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """``label_votes``: each drawn Gaussian's bits as +-1, times whether it votes."""
        if self.splits(model):
            labels, voting, drawn = self.split_labels(model), self.voting(model), model.drawn_gaussians()
            labels, voting = (labels, voting) if drawn is None else (labels[drawn], voting[drawn])
            votes = 2.0 * label_to_bits(labels, model.config.embedding_dim) - 1.0
            voters = voting.unsqueeze(-1).float()
        else:
            votes = torch.where(params["embeddings"] > 0, 1.0, -1.0)
            voters = model.vote_gate.voters(model, params)
        return {"label_votes": votes * voters, **vote_share(model, voters)}

    def pixel_labels(self, model: DecodedModel, maps: Dict[str, Tensor]) -> Tensor:
        votes = maps.get("label_votes", maps["embedding"])
        if not model.config.snap_votes:
            return by_vote_majority(model, embedding_to_label(votes), maps)
        book = model.gaussian_cache("vote_code_book", lambda: vote_code_book(
            self.gaussian_labels(model), self.voting(model), model.config.embedding_dim), 1,
            key=model.config.decoding_settings())  # fmt: skip
        return by_vote_majority(model, snap_to_labels(votes, *book), maps)

    def corrected_pixel_labels(self, model: DecodedModel, votes: Tensor) -> Tensor:
        """With snap_votes, snapped to the corrected labels of the Gaussians that vote, as :meth:`pixel_labels`
        snaps to their own."""
        if not model.config.snap_votes:
            return super().corrected_pixel_labels(model, votes)
        book = model.gaussian_cache("corrected_code_book", lambda: vote_code_book(
            model.gaussian_labels(), self.voting(model), model.config.embedding_dim + 1), 1,
            key=(model.config.decoding_settings(), model.corrections))  # fmt: skip
        return snap_to_labels(votes, *book)

    @torch.no_grad()
    def gaussian_labels(self, model: DecodedModel) -> Tensor:
        """Each Gaussian's label (its split label with split_collisions or split_by_masks), 0 for those that do not
        vote, as their pixels read."""
        labels = self.split_labels(model) if self.splits(model) else embedding_to_label(model.embeddings)
        return labels * self.voting(model).long()

    def voting(self, model: DecodedModel) -> Tensor:
        """The Gaussians the vote gate lets vote; with the mask split, those it leaves a code (not 2^d: the merge
        takes codes away, the recovery gives some)."""
        if self.uses_masks(model):
            return self.mask_split(model)[0] != max_labels(model.config.embedding_dim)
        return model.vote_gate.voting(model)

    @staticmethod
    def uses_masks(model: DecodedModel) -> bool:
        """Whether the config splits, recovers or merges labels by the train masks."""
        cfg = model.config
        return cfg.split_by_masks or cfg.merge_by_masks or cfg.recover_by_masks

    def splits(self, model: DecodedModel) -> bool:
        """Whether the config splits labels."""
        return model.config.split_collisions or self.uses_masks(model)

    def split_labels(self, model: DecodedModel) -> Tensor:
        """[N] int64 codes with the splits the config turns on: collisions, then the train masks'."""
        return self.mask_split(model)[0] if self.uses_masks(model) else self.collision_split(model)[0]

    @torch.no_grad()
    def mask_split(self, model: DecodedModel) -> Tuple[Tensor, MaskSplitReport]:
        """[N] int64 codes (after the collision split with split_collisions) with the voting Gaussians of each label
        that the train views' instance masks keep apart split (split_by_masks), the groups of the others that own
        their segments given codes (recover_by_masks) and the labels the masks put together merged (merge_by_masks),
        and the report. Gaussians that do not vote, and those merged with them, have label 2^d. Cached like the
        collision split. Needs the datamanager's train cameras and masks in the model's metadata."""
        cfg = model.config

        def build() -> Tuple[Tensor, MaskSplitReport]:
            labels = self.collision_split(model)[0] if cfg.split_collisions else embedding_to_label(model.embeddings)
            voting, no_code = model.vote_gate.voting(model), max_labels(cfg.embedding_dim)
            cameras, means = model.train_cameras, model.means.cpu().numpy()
            masks = [None if mask is None else mask.cpu().numpy() for mask in model.train_instance_masks()]
            split_codes, report = split_labels_by_masks(
                means, torch.where(voting, labels, no_code).cpu().numpy(),
                world_to_camera(cameras.camera_to_worlds).cpu().numpy(), cameras.get_intrinsics_matrices().numpy(),
                masks, cfg.embedding_dim, cfg.collision_radius * median_neighbour_distance(means[voting.cpu().numpy()]),
                cfg.collision_min_gaussians, cfg.mask_split_agreement, cfg.split_by_masks, cfg.merge_by_masks, no_code,
                cfg.recover_by_masks, cfg.mask_keep_owners,
            )  # fmt: skip
            return torch.from_numpy(split_codes).to(labels.device), report

        key = (cfg.split_collisions, cfg.collision_radius, cfg.collision_min_gaussians, cfg.mask_split_agreement,
               cfg.split_by_masks, cfg.merge_by_masks, cfg.recover_by_masks, cfg.mask_keep_owners,
               *VoteGate.settings(model))  # fmt: skip
        return model.gaussian_cache("mask_split", build, 1, key=key)

    @torch.no_grad()
    def collision_split(self, model: DecodedModel) -> Tuple[Tensor, CollisionReport]:
        """[N] int64 Embedding-to-Label codes with the voting Gaussians' code collisions split, and the split's
        report. Cached: rebuilt at a new step, when the Gaussians change and when the vote gate (e.g. from the
        viewer) or the split's settings do. Needs the datamanager's train cameras in the model's metadata."""
        cfg = model.config

        def build() -> Tuple[Tensor, CollisionReport]:
            labels = embedding_to_label(model.embeddings)
            voting = model.vote_gate.voting(model)
            cameras = model.train_cameras
            split_codes, report = split_label_collisions(
                model.means[voting].cpu().numpy(), labels[voting].cpu().numpy(),
                world_to_camera(cameras.camera_to_worlds).cpu().numpy(), cameras.get_intrinsics_matrices().numpy(),
                cameras.width.numpy(), cameras.height.numpy(), cfg.embedding_dim, cfg.collision_radius,
                cfg.collision_min_gaussians,
            )  # fmt: skip
            return labels.masked_scatter(voting, torch.from_numpy(split_codes).to(labels.device)), report

        key = (cfg.collision_radius, cfg.collision_min_gaussians, *VoteGate.settings(model))
        return model.gaussian_cache("collision_split", build, 1, key=key)


@torch.no_grad()
def vote_code_book(labels: Tensor, voting: Tensor, bits: int) -> Tuple[Tensor, Tensor]:
    """The distinct ``labels`` [C] int64 of the Gaussians that vote and their ``bits`` as +-1 [C, bits] (label 0
    alone when nothing votes)."""
    codes = torch.unique(labels[voting])
    codes = codes if len(codes) else codes.new_zeros(1)
    return codes, 2.0 * label_to_bits(codes, bits) - 1.0


def snap_to_labels(votes: Tensor, codes: Tensor, signs: Tensor) -> Tensor:
    """The label among ``codes`` [C] whose +-1 bits ``signs`` [C, b] are nearest the composited ``votes`` [..., b]
    (the largest dot product: each bit weighs its votes' alpha), where the bitwise sign of votes blended from three
    or more labels can spell a code no Gaussian holds; 0 where no Gaussian votes."""
    labels = codes[assign_nearest(votes, signs)]
    return torch.where(votes.abs().amax(dim=-1) > 0, labels, torch.zeros_like(labels))


def vote_majority(model: DecodedModel) -> bool:
    """Whether pixels need a majority of voting alpha to take their voters' label (the config's ``vote_majority``;
    'auto': when the semantic head saw no semantic masks, so no semantic class tells background pixels apart)."""
    setting = model.config.vote_majority
    return setting == "on" or (setting == "auto" and not model.semantic_head_trained())


def vote_share(model: DecodedModel, voters: Tensor) -> Dict[str, Tensor]:
    """``vote_share`` [N', 2] (whether each drawn Gaussian votes, and whether not) to composite where
    :func:`vote_majority` applies; else nothing."""
    return {"vote_share": torch.cat([voters, 1.0 - voters], dim=-1)} if vote_majority(model) else {}


def by_vote_majority(model: DecodedModel, labels: Tensor, maps: Dict[str, Tensor]) -> Tensor:
    """``labels`` where voting Gaussians give a pixel at least as much alpha as the others (so empty pixels keep
    label 0), label 2^d (no code) elsewhere; unchanged without a composited ``vote_share``."""
    if "vote_share" not in maps:
        return labels
    share = maps["vote_share"]
    return torch.where(share[..., 0] >= share[..., 1], labels, max_labels(model.config.embedding_dim))


class NearestCode(Decoding):
    """sigmoid(V) of each pixel (and of each Gaussian) takes the nearest corner among the Embedding-to-Label codes
    of the Gaussians that vote, or label 2^d (no code) where the cube's centre is nearer; the codes are read, not
    fitted. O(pixels x codes)."""

    name: ClassVar[str] = "nearest-code"

    def pixel_labels(self, model: DecodedModel, maps: Dict[str, Tensor]) -> Tensor:
        corners, labels = self.code_book(model)
        return labels[assign_nearest(torch.sigmoid(maps["embedding"]), corners)]

    @torch.no_grad()
    def code_book(self, model: DecodedModel) -> Tuple[Tensor, Tensor]:
        """The corners [C + 1, d] of the cube to snap to and their labels [C + 1] int64: the distinct codes of the
        Gaussians that vote, then, where some Gaussians do not vote, the cube's centre for them, with label 2^d,
        which no code can take (so an object whose code is 0 stays apart from it). Cached like the collision
        split."""
        dim = model.config.embedding_dim

        def build() -> Tuple[Tensor, Tensor]:
            voting = model.vote_gate.voting(model)
            codes = torch.unique(embedding_to_label(model.embeddings[voting]))
            corners = label_to_bits(codes, dim)
            if bool(voting.all()):
                return corners, codes
            centre = torch.full((1, dim), 0.5, device=codes.device)
            no_code = codes.new_full((1,), max_labels(dim))
            return torch.cat([corners, centre]), torch.cat([codes, no_code])

        return model.gaussian_cache("code_book", build, 1, key=VoteGate.settings(model))


DECODINGS: Dict[str, Decoding] = {d.name: d for d in (RenderedEmbedding(), GaussianVotes(), NearestCode())}
"""Every decoding by its ``instance_decoding`` name (they hold no state: the model holds the caches and the gate)."""
