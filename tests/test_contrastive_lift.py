"""The `contrastive-lift` baseline (CL+3DGS): its losses, slow-field EMA, clustering, densification alignment,
and a real `ns-train contrastive-lift` run on CPU scored by `unic-lift-eval`."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from gsplat.strategy.ops import duplicate, remove, split
from nerfstudio.cameras.cameras import Cameras

from conftest import make_scene, setup_model, train_cpu
from unic_lift_ns.baselines.contrastive_lift import ContrastiveLiftModel, ContrastiveLiftModelConfig
from unic_lift_ns.baselines.contrastive_lift_losses import (
    concentration_loss,
    partition_pixels,
    slow_fast_contrastive_loss,
)
from unic_lift_ns.clustering import assign_nearest, fit_centroids
from unic_lift_ns.synth.cameras import look_at



def make_model(num_points: int = 300, **overrides) -> ContrastiveLiftModel:
    return setup_model(ContrastiveLiftModelConfig(**overrides), num_points)


def make_cameras(count: int, size: int = 32) -> Cameras:
    c2w = [torch.from_numpy(look_at(np.array([1.5 * math.cos(a), 1.5 * math.sin(a), 1.0]), np.zeros(3))[:3]).float()
           for a in np.linspace(0, 2 * math.pi, count, endpoint=False)]  # fmt: skip
    return Cameras(camera_to_worlds=torch.stack(c2w), fx=float(size), fy=float(size), cx=size / 2, cy=size / 2,
                   width=size, height=size)  # fmt: skip


def test_slow_fast_contrastive_loss_matches_eq_4_by_hand():
    fast = torch.tensor([[0.0], [1.0], [5.0]], requires_grad=True)
    slow = torch.tensor([[0.0], [1.0], [3.0]], requires_grad=True)
    fast_ids, slow_ids = torch.tensor([1, 2, 9]), torch.tensor([1, 2, 2])  # segment 9 has no slow pixel: skipped
    loss = slow_fast_contrastive_loss(fast, fast_ids, slow, slow_ids, gamma=1.0)
    e = math.exp
    # fast 0 (segment 1): squared distances 0, 1, 9; fast 1 (segment 2): 1, 0, 4.
    first = -math.log(e(1.0) / (e(1.0) + e(e(-1.0)) + e(e(-9.0))))
    second = -math.log((e(1.0) + e(e(-4.0))) / (e(e(-1.0)) + e(1.0) + e(e(-4.0))))
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)
    loss.backward()
    assert fast.grad[:2].abs().sum() > 0 and not fast.grad[2].any()
    assert slow.grad is None  # the slow field is a target, never trained by the loss
    # Halving gamma widens the kernel: same formula with squared distances halved.
    half = slow_fast_contrastive_loss(fast, fast_ids, slow, slow_ids, gamma=0.5).item()
    first = -math.log(e(1.0) / (e(1.0) + e(e(-0.5)) + e(e(-4.5))))
    second = -math.log((e(1.0) + e(e(-2.0))) / (e(e(-0.5)) + e(1.0) + e(e(-2.0))))
    assert half == pytest.approx((first + second) / 2, rel=1e-6)


def test_concentration_loss_matches_eq_5_by_hand():
    fast = torch.tensor([[0.0, 0.0], [2.0, 0.0], [7.0, 7.0]], requires_grad=True)
    slow = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    # Slow centroids: segment 1 -> (2, 0), segment 2 -> (0, 2); the fast pixel of segment 9 has none.
    loss = concentration_loss(fast, torch.tensor([1, 2, 9]), slow, torch.tensor([1, 1, 2]))
    assert loss.item() == pytest.approx((4.0 + 8.0) / 2)
    empty = concentration_loss(fast, torch.tensor([5, 6, 7]), slow, torch.tensor([1, 1, 2]))
    assert empty.item() == 0.0 and empty.requires_grad


def test_pixel_partition_is_disjoint_bounded_and_skips_void():
    segments = torch.tensor([0, 1, 1, 2, 0, 3, 3, 3, 2, 1])
    fast, slow = partition_pixels(segments, max_pixels=5, generator=torch.Generator().manual_seed(0))
    chosen = torch.cat([fast, slow])
    assert (fast.numel(), slow.numel()) == (3, 2) and chosen.unique().numel() == 5
    assert bool((segments[chosen] > 0).all())


def test_void_pixels_fill_a_short_partition_and_the_losses_ignore_them():
    """With fewer valid pixels than ``max_pixels`` the sets are topped up with void pixels (no shape depends on the
    mask); both losses equal those on the valid pixels alone."""
    segments = torch.tensor([0, 1, 0, 2, 1, 0, 2, 0, 1, 3])
    fast, slow = partition_pixels(segments, max_pixels=10, generator=torch.Generator().manual_seed(0))
    assert (fast.numel(), slow.numel()) == (5, 5) and torch.cat([fast, slow]).unique().numel() == 10
    valid_fast, valid_slow = fast[segments[fast] > 0], slow[segments[slow] > 0]
    assert (valid_fast.numel(), valid_slow.numel()) == (3, 3)  # the valid pixels are split evenly
    emb = torch.rand(10, 3, generator=torch.Generator().manual_seed(1)).requires_grad_()
    for loss in (slow_fast_contrastive_loss, concentration_loss):
        padded = loss(emb[fast], segments[fast], emb[slow], segments[slow])
        valid = loss(emb[valid_fast], segments[valid_fast], emb[valid_slow], segments[valid_slow])
        assert padded.item() == pytest.approx(valid.item(), rel=1e-6) and padded.item() > 0
    nothing = slow_fast_contrastive_loss(emb[:2], segments[:2], emb[:0], segments[:0])
    assert nothing.item() == 0.0 and nothing.requires_grad


def test_slow_embeddings_are_an_ema_with_momentum_0_9():
    model = make_model()
    fast, slow = model.gauss_params["embeddings"], model.gauss_params["slow_embeddings"]
    assert torch.equal(slow, fast) and not slow.requires_grad  # starts as a copy of the fast field
    with torch.no_grad():
        fast.fill_(1.0)
        slow.zero_()
    model.update_slow_embeddings()
    assert torch.allclose(slow, torch.full_like(slow, 0.1), atol=1e-7, rtol=0)
    model.update_slow_embeddings()
    assert torch.allclose(slow, torch.full_like(slow, 0.19), atol=1e-7, rtol=0)  # 0.9 * 0.1 + 0.1 * 1
    assert torch.equal(fast, torch.ones_like(fast))


def test_training_losses_reach_only_the_fast_embeddings():
    model = make_model()
    model.train()
    model.optimizers, model.step = {}, 10
    outputs = model.get_outputs(make_cameras(1))
    assert outputs["embedding"].shape == outputs["slow_embedding"].shape and outputs["embedding"].shape[-1] == 3
    mask = torch.ones(32, 32, dtype=torch.long)
    mask[:, 16:] = 5
    batch = {"image": torch.rand(32, 32, 3), "instance_mask": mask, "semantic_mask": (mask == 5).long()}
    losses = model.get_loss_dict(outputs, batch)
    assert {"slow_fast_loss", "concentration_loss", "semantic_loss"} <= set(losses)
    assert not {"cluster_loss", "triplet_loss", "neighbour_loss"} & set(losses)
    (losses["slow_fast_loss"] + losses["concentration_loss"]).backward()
    assert model.gauss_params["embeddings"].grad.abs().sum() > 0
    assert model.gauss_params["slow_embeddings"].grad is None
    assert model.gauss_params["means"].grad is None or not model.gauss_params["means"].grad.any()


def test_densification_keeps_slow_embeddings_aligned():
    model = make_model(num_points=50)
    params = model.gauss_params
    with torch.no_grad():
        params["embeddings"][:, 0] = torch.arange(50, dtype=torch.float32)
        params["slow_embeddings"][:, 0] = -torch.arange(50, dtype=torch.float32)  # tag: -(index)
    optimizers = {name: torch.optim.Adam(group, lr=0.0) for name, group in model.get_gaussian_param_groups().items()}
    state: dict = {}
    grow = torch.zeros(50, dtype=torch.bool)
    grow[[3, 10]] = True
    duplicate(params=params, optimizers=optimizers, state=state, mask=grow)
    cut = torch.zeros(52, dtype=torch.bool)
    cut[[5, 51]] = True
    split(params=params, optimizers=optimizers, state=state, mask=cut)
    remove(params=params, optimizers=optimizers, state=state, mask=params["embeddings"][:, 0] == 20.0)
    fast, slow = params["embeddings"][:, 0], params["slow_embeddings"][:, 0]
    assert fast.shape[0] == slow.shape[0] == params["means"].shape[0] == 53
    assert torch.equal(slow, -fast)  # every Gaussian still has its own slow embedding
    assert sorted(fast[-4:].tolist()) == [5.0, 5.0, 10.0, 10.0]


def test_clustering_recovers_separated_blobs():
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(5, 8)) * 10
    truth = np.repeat(np.arange(5), 300)
    samples = centres[truth] + rng.normal(size=(truth.size, 8)) * 0.3
    outliers = rng.uniform(-40, 40, size=(10, 8))  # noise: HDBSCAN leaves them out of every cluster
    centroids = fit_centroids(np.concatenate([samples, outliers]), min_cluster_size=50)
    assert centroids.shape == (5, 8)
    points = torch.from_numpy(samples).float().reshape(3, 500, 8)  # any leading shape
    labels = assign_nearest(points, centroids, chunk_size=7).reshape(-1).numpy()
    pairs = set(zip(truth.tolist(), labels.tolist()))
    assert len(pairs) == 5 and len({label for _, label in pairs}) == 5  # a bijection: truth up to permutation
    assert fit_centroids(rng.normal(size=(10, 8)), min_cluster_size=50).shape == (0, 8)
    assert fit_centroids(np.zeros((0, 8)), min_cluster_size=50).shape == (0, 8)  # no thing pixel sampled
    with pytest.raises(ValueError, match="non-empty"):
        assign_nearest(points, torch.zeros(0, 8))


def test_semantic_guided_labels_give_stuff_its_own_label():
    config = ContrastiveLiftModelConfig(cluster_num_samples=2000, cluster_min_size=20)
    model = setup_model(config, num_points=400, metadata={"train_cameras": make_cameras(4)})
    with torch.no_grad():  # the half of the Gaussians with x > 0 are "object" (thing), the rest background
        thing = model.means[:, 0] > 0
        model.gauss_params["semantic_logits"][:, 1] = torch.where(thing, 5.0, -5.0)
    model.eval()
    outputs = model.get_outputs_for_camera(make_cameras(1))  # fits the clusters lazily
    assert model.clustering_seconds is not None and model.clustering_seconds > 0
    labels = outputs["instance_label"].squeeze(-1).long()
    stuff = outputs["semantic_label"].squeeze(-1) == 0
    assert bool(stuff.any()) and bool((~stuff).any())
    assert bool((labels[stuff] == 0).all()) and bool((labels[~stuff] >= 1).all())
    gaussians = model.gaussian_labels()
    assert bool((gaussians[~thing] == 0).all()) and bool((gaussians[thing] >= 1).all())
    fitted = model.clustering_seconds
    model.get_outputs_for_camera(make_cameras(1))
    assert model.clustering_seconds == fitted  # cached: no refit


@pytest.mark.slow
def test_ns_train_contrastive_lift_cpu_then_unic_lift_eval(unic_lift_eval, tmp_path):
    scene = make_scene(tmp_path / "scene", num_objects=6, num_views=16, resolution=48, num_points=2000)
    run_dir = train_cpu(
        "contrastive-lift", scene, tmp_path / "outputs", 150,
        "--pipeline.model.resolution-schedule", "30", "--pipeline.model.warmup-length", "30",
        "--pipeline.model.stop-split-at", "80", "--optimizers.embeddings.optimizer.lr", "0.02",
        "--pipeline.model.cluster-num-samples", "5000", "--pipeline.model.cluster-min-size", "25",
    )  # fmt: skip
    checkpoint = next((run_dir / "nerfstudio_models").glob("*.ckpt"))
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["pipeline"]
    fast, slow = state["_model.gauss_params.embeddings"], state["_model.gauss_params.slow_embeddings"]
    assert fast.shape == slow.shape and 0 < (fast - slow).abs().mean() < 0.5  # the slow field trails the fast one

    out = tmp_path / "eval.json"
    proc, _ = unic_lift_eval("--load-config", run_dir / "config.yml", "--output-json", out)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads(out.read_text())["results"]
    ours = next(v for k, v in results.items() if k.startswith("contrastive-lift"))
    assert 0.0 <= ours["pq_scene"] <= 1.0 and ours["num_pred_instances"] >= 1
