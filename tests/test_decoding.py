"""Decodings as objects (``unic_lift_ns.models.decoding``) and the one way to switch them, ``set_decoding``."""

from __future__ import annotations

import re
from typing import get_args

import pytest
import torch
from nerfstudio.cameras.cameras import Cameras

from conftest import setup_model
from unic_lift_ns.baselines.contrastive_lift import ContrastiveLiftModelConfig
from unic_lift_ns.corrections import Correction, Corrections
from unic_lift_ns.errors import InputError
from unic_lift_ns.instance_codes import label_to_bits
from unic_lift_ns.models.decoding import DECODINGS, InstanceDecoding, NearestCode, RenderedEmbedding
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig


def test_every_decoding_is_registered_under_its_literal_name() -> None:
    assert list(DECODINGS) == list(get_args(InstanceDecoding))
    assert all(decoding.name == name for name, decoding in DECODINGS.items())


def test_set_decoding_switches_and_refuses_bad_settings_changing_nothing() -> None:
    model = setup_model(UniCLiftModelConfig(), num_points=50)
    assert isinstance(model.decoding, RenderedEmbedding)
    model.set_decoding(instance_decoding="nearest-code", vote_confidence=0.3)
    assert isinstance(model.decoding, NearestCode) and model.config.vote_confidence == 0.3
    refused = [
        ({"instance_decoding": "clustering"}, "--pipeline.model.instance-decoding: 'clustering' is not one of"),
        ({"vote_gate": "semantic", "vote_confidence": 0.7}, "--pipeline.model.vote-confidence"),
        ({"embedding_dim": 3}, "has no decoding setting 'embedding_dim'"),
        ({"instance_decoding": "gaussian-votes", "split_collisions": True}, "needs the train cameras"),
    ]
    for settings, message in refused:
        with pytest.raises(InputError, match=re.escape(message)):
            model.set_decoding(**settings)
        cfg = model.config
        assert (cfg.instance_decoding, cfg.vote_gate, cfg.vote_confidence) == ("nearest-code", "confidence", 0.3)
        assert not cfg.split_collisions and cfg.embedding_dim == 12


def test_new_clustering_settings_drop_the_fitted_clusters() -> None:
    model = setup_model(ContrastiveLiftModelConfig(), num_points=50)
    model._centroids = object()  # fitted with the old settings
    model.set_decoding(cluster_min_size=10)
    assert model._centroids is None and model.config.cluster_min_size == 10


def test_vote_majority_gives_pixels_of_non_voters_no_code() -> None:
    """'gaussian-votes' without semantic masks ('auto'): pixels whose alpha comes mostly from Gaussians that do not
    vote take label 2^d, the voters' pixels keep their code; with vote_majority 'off' the votes claim both."""
    model = setup_model(UniCLiftModelConfig(instance_decoding="gaussian-votes"), num_points=400)
    with torch.no_grad():
        left = model.gauss_params["means"][:, 0] < 0
        model.gauss_params["embeddings"].copy_(torch.where(torch.arange(12) < 2, 4.0, -4.0).expand(400, 12))
        model.gauss_params["embeddings"][left] = 0.0  # no confident bit: these do not vote
    model.eval()
    camera = Cameras(camera_to_worlds=torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 2.0]])[None],
                     fx=48.0, fy=48.0, cx=24.0, cy=24.0, width=48, height=48)  # fmt: skip
    assert not model.semantic_head_trained()

    def labels_of(columns: slice) -> set:
        rendered = model.get_outputs_for_camera(camera)
        drawn = rendered["accumulation"][..., 0] > 0.5
        return set(rendered["instance_label"].long()[:, columns][drawn[:, columns]].unique().tolist())

    assert labels_of(slice(14, 20)) == {4096} and labels_of(slice(30, 36)) == {3}  # x in [-0.2, -0.08], [0.12, 0.25]
    model.set_decoding(vote_majority="off")
    assert 3 in labels_of(slice(14, 20)) and 4096 not in labels_of(slice(14, 20)) and labels_of(slice(30, 36)) == {3}


def test_snap_votes_reads_only_labels_the_voting_gaussians_hold() -> None:
    """Where three labels blend, each vote's sign can spell a fourth code (7 from 3, 5 and 6); snap_votes gives the
    pixel the voting label nearest its votes instead. A pixel of one label keeps it, an empty pixel stays 0."""
    model = setup_model(UniCLiftModelConfig(instance_decoding="gaussian-votes"), num_points=300)
    codes = torch.tensor([3, 5, 6])
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(8.0 * label_to_bits(codes.repeat(100), 12) - 4.0)
    signs = 2.0 * label_to_bits(codes, 12) - 1.0
    votes = torch.stack([torch.tensor([0.34, 0.33, 0.33]) @ signs, 0.6 * signs[1], torch.zeros(12)])
    maps = {"label_votes": votes, "embedding": votes}
    assert model.decoding.pixel_labels(model, maps).tolist() == [7, 5, 0]
    model.set_decoding(snap_votes=True)
    assert model.decoding.pixel_labels(model, maps).tolist() == [3, 5, 0]


def test_snap_votes_holds_with_corrections() -> None:
    """With corrections, pixels composite the corrected labels' d + 1 bits; snap_votes snaps them to the corrected
    labels the voting Gaussians hold (9 is merged into 3, so 3, 5 and 6)."""
    model = setup_model(UniCLiftModelConfig(instance_decoding="gaussian-votes", snap_votes=True), num_points=400)
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(8.0 * label_to_bits(torch.tensor([3, 5, 6, 9]).repeat(100), 12) - 4.0)
    model.set_corrections(Corrections().then(Correction("merge", 9, into=3)))
    signs = 2.0 * label_to_bits(torch.tensor([3, 5, 6]), 13) - 1.0
    votes = torch.stack([torch.tensor([0.34, 0.33, 0.33]) @ signs, torch.zeros(13)])
    assert model.decode_instances({"corrected_votes": votes}).tolist() == [3, 0]
    model.set_decoding(snap_votes=False)
    assert model.decode_instances({"corrected_votes": votes}).tolist() == [7, 0]
