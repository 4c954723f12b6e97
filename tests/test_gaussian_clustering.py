"""The `gaussian-clustering` baseline (Contrastive Gaussian Clustering): hand-computed losses, the loss schedule,
the feature clustering, and a real `ns-train gaussian-clustering` + `unic-lift-eval` run on CPU."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import make_scene, setup_model, train_cpu
from test_model import make_camera
from unic_lift_ns.baselines.gaussian_clustering import GaussianClusteringModel, GaussianClusteringModelConfig
from unic_lift_ns.baselines.gaussian_clustering_losses import (
    applies_at,
    contrastive_clustering_loss,
    sample_spatial_pairs,
    spatial_neighbours,
    spatial_similarity_loss,
)
from unic_lift_ns.errors import InputError



def make_model(num_points: int = 300, **overrides) -> GaussianClusteringModel:
    return setup_model(GaussianClusteringModelConfig(**overrides), num_points)


def test_contrastive_clustering_loss_hand_computed():
    # Two segments of two unit features at +-60 degrees around (1, 0) and (-1, 0): the normalised means are
    # (+-1, 0), every feature is 1 away from its mean, so phi = 2 / (2 log(2 + alpha)) = 1 with alpha = e - 2.
    # Each pixel has dot products +-1/2 with the two prototypes: loss = -log(e^0.5 / (e^0.5 + e^-0.5)).
    c, s = 0.5, math.sqrt(3) / 2
    features = torch.tensor([[c, s], [c, -s], [-c, s], [-c, -s], [5.0, 1.0]]) * 3.0  # any norm; last is void
    segments = torch.tensor([4, 4, 9, 9, 0])
    loss = contrastive_clustering_loss(features, segments, alpha=math.e - 2, min_temperature=0.01)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-1)), rel=1e-5)

    # Collapsed segments have spread 0: phi is floored at 0.5, so the logits are +-2.
    collapsed = torch.tensor([[1.0, 0.0], [2.0, 0.0], [-1.0, 0.0], [-3.0, 0.0]], requires_grad=True)
    loss = contrastive_clustering_loss(collapsed, torch.tensor([1, 1, 2, 2]), min_temperature=0.5)
    assert loss.item() == pytest.approx(math.log(1 + math.exp(-4)), rel=1e-5)

    # One segment, or only void pixels: 0, still connected to the graph.
    for ids in (torch.tensor([3, 3, 3, 3]), torch.zeros(4, dtype=torch.long)):
        loss = contrastive_clustering_loss(collapsed, ids)
        loss.backward()
        assert loss.item() == 0.0


def test_contrastive_clustering_loss_in_fixed_slots_equals_it_on_raw_ids():
    """The datamanager numbers each mask's segments 1..K: with ``num_segments`` L_CC sums them into fixed slots (no
    device sync), and slots no pixel uses change nothing."""
    from unic_lift_ns.data.label_maps import number_segments

    raw = torch.tensor([0, 9, 9, 40, 40, 40, 1000, 9, -1, 1000, 40, 7])
    numbered, count = number_segments(raw)
    features = torch.randn(12, 4, generator=torch.Generator().manual_seed(0), requires_grad=True)
    reference = contrastive_clustering_loss(features, raw, alpha=1.0, min_temperature=0.1)
    for slots in (count, count + 3):
        loss = contrastive_clustering_loss(features, numbered, alpha=1.0, min_temperature=0.1, num_segments=slots)
        assert loss.item() == pytest.approx(reference.item(), rel=1e-5) and loss.item() > 0
    (grad,) = torch.autograd.grad(loss, features)
    assert torch.isfinite(grad).all() and not grad[[0, 8]].any()  # void pixels get no gradient


def test_spatial_similarity_loss_hand_computed_pulls_near_and_pushes_far():
    features = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.6, 0.8], [0.0, -1.0]], requires_grad=True)
    anchors, near, far = torch.tensor([0]), torch.tensor([[1, 2]]), torch.tensor([[3, 4]])
    far_valid = torch.tensor([[True, False]])  # Gaussian 4 lies inside the near ball: not a far one
    # near: mean(1 - 1, 1 - 0) = 0.5; far: cos(f0, f3) = 0.6. 2 * 0.5 + 0.5 * 0.6 = 1.3.
    loss = spatial_similarity_loss(features, anchors, near, far, far_valid, near_weight=2.0, far_weight=0.5)
    assert loss.item() == pytest.approx(1.3, rel=1e-5)

    loss.backward()
    assert not features.grad[4].any()
    stepped = features.detach() - 0.1 * features.grad
    cosine = torch.nn.functional.cosine_similarity(stepped, features.detach()[0:1], dim=-1)  # to the old anchor
    assert cosine[2] > 0.0  # the near Gaussian is pulled towards the anchor
    assert cosine[3] < 0.6  # the far Gaussian is pushed away from it


def test_spatial_pairs_near_inside_far_outside():
    generator = torch.Generator().manual_seed(0)
    blobs = torch.randn(100, 3, generator=generator) * 0.05
    blobs[50:] += 10.0
    near, radius = spatial_neighbours(blobs, 5)
    assert near.shape == (100, 5) and not (near == torch.arange(100)[:, None]).any()
    assert torch.equal(near // 50, (torch.arange(100) // 50)[:, None].expand(100, 5))  # same blob
    anchors, near_a, far, valid = sample_spatial_pairs(blobs, near, radius, 20, 8, generator)
    assert anchors.unique().numel() == 20 and near_a.shape == (20, 5) and far.shape == valid.shape == (20, 8)
    distance = (blobs[far] - blobs[anchors][:, None]).norm(dim=-1)
    assert torch.equal(valid, distance > radius[anchors][:, None]) and valid.any()
    assert ((blobs[near_a] - blobs[anchors][:, None]).norm(dim=-1) <= radius[anchors][:, None] + 1e-6).all()


def test_losses_follow_their_schedule():
    assert [s for s in range(301) if applies_at(s, 50)] == [0, 50, 100, 150, 200, 250, 300]
    assert not any(applies_at(s, 0) for s in range(10))

    model = make_model(contrastive_every=50, spatial_every=100, num_semantic_classes=0)
    model.train()
    model.optimizers = {}
    mask = torch.ones(32, 32, dtype=torch.long)
    mask[:, 16:] = 2
    seen = {}
    for step in (49, 50, 100):
        model.step = step
        outputs = model.get_outputs(make_camera(32))
        losses = model.get_loss_dict(outputs, {"image": torch.rand(32, 32, 3), "instance_mask": mask})
        seen[step] = {k for k in losses if k in ("contrastive_loss", "spatial_loss")}
    assert seen == {49: set(), 50: {"contrastive_loss"}, 100: {"contrastive_loss", "spatial_loss"}}


def test_clustering_recovers_well_separated_feature_groups():
    model = make_model(num_points=600, num_semantic_classes=0)
    generator = torch.Generator().manual_seed(1)
    directions = torch.nn.functional.normalize(torch.randn(3, 16, generator=generator), dim=-1) * 4
    groups = torch.arange(600) % 3
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(directions[groups] + 0.05 * torch.randn(600, 16, generator=generator))
    model.eval()
    labels = model.gaussian_labels()
    assert model.clustering_seconds > 0.0
    assert torch.equal(torch.unique(labels), torch.arange(3))
    for g in range(3):  # one label per group, distinct across groups
        assert torch.unique(labels[groups == g]).numel() == 1
    fitted = model.centroids()
    outputs = model.get_outputs_for_camera(make_camera(24))
    assert model.centroids() is fitted  # cached, not refitted for the rendering
    assert set(outputs["instance_label"].long().unique().tolist()) <= {0, 1, 2}


def separated_features(count: int, groups: torch.Tensor, seed: int = 1) -> torch.Tensor:
    """[count, 16] features: one random direction per group id, plus small noise."""
    generator = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(int(groups.max()) + 1, 16, generator=generator), dim=-1)
    return 4 * directions[groups] + 0.05 * torch.randn(count, 16, generator=generator)


def test_semantic_guided_clustering_gives_stuff_its_label_and_clusters_things_apart():
    model = make_model(num_points=900, semantic_guided_clustering=True, cluster_min_size=20)
    groups = torch.arange(900) % 3  # group 0: background (stuff), groups 1 and 2: two objects
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(separated_features(900, groups))
        model.gauss_params["semantic_logits"][:, 1] = torch.where(groups > 0, 5.0, -5.0)
    model.eval()
    labels = model.gaussian_labels()
    assert bool((labels[groups == 0] == 0).all())
    things = [torch.unique(labels[groups == g]) for g in (1, 2)]
    assert [t.numel() for t in things] == [1, 1] and int(things[0]) != int(things[1]) and min(things) >= 1
    outputs = model.get_outputs_for_camera(make_camera(24))
    stuff = outputs["semantic_label"].squeeze(-1) == 0
    assert bool((outputs["instance_label"].squeeze(-1)[stuff] == 0).all())


def test_semantic_guidance_without_semantic_masks_clusters_every_gaussian():
    # A run without semantic_masks/ keeps the semantic logits at 0 (class 0, stuff, everywhere): guidance is then
    # off, instead of giving the whole scene the stuff label.
    model = make_model(num_points=600, semantic_guided_clustering=True, cluster_min_size=20)
    groups = torch.arange(600) % 3
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(separated_features(600, groups))
    model.eval()
    assert model.thing_classes is None
    assert torch.unique(model.gaussian_labels()).numel() == 3


def test_semantic_guidance_refuses_unknown_stuff_classes_before_training():
    with pytest.raises(InputError, match="--pipeline.model.stuff-classes \\[5\\]"):
        make_model(semantic_guided_clustering=True, stuff_classes=(5,))
    with pytest.raises(InputError, match="needs a thing class"):
        make_model(semantic_guided_clustering=True, stuff_classes=(0, 1))
    assert make_model(stuff_classes=(5,)).thing_classes is None  # without guidance the classes are not used


def test_clustering_can_leave_out_transparent_gaussians():
    # Two opaque groups and a tight group of nearly transparent Gaussians: clustered with them, the transparent
    # ones make a third instance; left out (cluster_min_opacity 0.5), they join one of the two.
    groups = torch.arange(900) % 3
    counts = {}
    for min_opacity in (0.0, 0.5):
        model = make_model(num_points=900, num_semantic_classes=0, cluster_min_size=20, cluster_min_opacity=min_opacity)
        with torch.no_grad():
            model.gauss_params["embeddings"].copy_(separated_features(900, groups))
            model.gauss_params["opacities"].copy_(torch.where(groups == 2, -6.0, 3.0)[:, None])
        model.eval()
        counts[min_opacity] = torch.unique(model.gaussian_labels()).numel()
    assert counts == {0.0: 3, 0.5: 2}


@pytest.mark.slow
def test_ns_train_gaussian_clustering_cpu_then_eval(unic_lift_eval, tmp_path):
    scene = make_scene(tmp_path / "scene", num_objects=3, num_views=8, resolution=48, num_points=800)
    run_dir = train_cpu(
        "gaussian-clustering", scene, tmp_path / "outputs", 100,
        "--pipeline.model.resolution-schedule", "30", "--pipeline.model.warmup-length", "30",
        "--pipeline.model.stop-split-at", "60", "--pipeline.model.contrastive-every", "1",
        "--pipeline.model.spatial-every", "5", "--pipeline.model.spatial-refresh-every", "50",
        "--pipeline.model.cluster-min-size", "10", "--optimizers.embeddings.optimizer.lr", "0.2",
        # at the default 0.0025 the semantic head predicts (almost) only background after 100 steps, so whether a
        # thing instance is counted below would be chance
        "--optimizers.semantic-logits.optimizer.lr", "0.05",
    )  # fmt: skip

    out = tmp_path / "eval.json"
    proc, _ = unic_lift_eval("--load-config", run_dir / "config.yml", "--output-json", out, "--save-labels",
                             tmp_path / "labels")  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PQ^scene" in proc.stdout
    results = json.loads(out.read_text())["results"]
    ours = next(v for k, v in results.items() if k.startswith("gaussian-clustering"))
    assert np.isfinite(ours["pq_scene"]) and ours["num_pred_instances"] >= 1
    labels = [np.array(Image.open(path)) for path in sorted((tmp_path / "labels" / "instances").glob("*.png"))]
    assert labels and np.unique(np.stack(labels)).size > 1  # the Gaussians fell into more than one cluster
