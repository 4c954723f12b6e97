"""Tests for the UniC-Lift segmentation losses (Eqs. 4-6) and triplet mining."""

import math

import pytest
import torch
from gsplat.strategy.ops import remove

from conftest import setup_model
from unic_lift_ns.losses import (
    boundary_triplets,
    cluster_contrastive_loss,
    code_push_loss,
    neighbour_pairs,
    neighbourhood_loss,
    random_triplets,
    semantic_loss,
    stuff_pixels,
    triplet_loss,
    Triplets,
)
from unic_lift_ns.models.unic_lift import UniCLiftModel, UniCLiftModelConfig


def _segment_map() -> torch.Tensor:
    """12x12 map: three segments (1, 2, 7) and a void (0) stripe and corner."""
    seg = torch.ones(12, 12, dtype=torch.long)
    seg[:, 6:] = 2
    seg[8:, :] = 7
    seg[:, 5] = 0  # void stripe between 1 and 2 above row 8
    seg[0, 0] = 0
    return seg


# --------------------------------------------------------------------------- cluster loss (Eq. 4)


def test_cluster_two_segments_by_hand():
    emb = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0], [100.0, -50.0]])
    seg = torch.tensor([1, 1, 2, 2, 0])
    # m1 = (0, 1), m2 = (4, 1); every valid pixel is at squared distance 1 -> intra = 4 / 4 = 1.
    # ordered pairs (1, 2), (2, 1): ||m1 - m2||^2 = 16 each -> inter = 32 / 2 = 16.
    # loss = 1 - 16 = -15; the void pixel (id 0) is ignored.
    assert cluster_contrastive_loss(emb, seg).item() == pytest.approx(-15.0)
    # Ids are arbitrary: relabelling to (7, 1000) changes nothing.
    assert cluster_contrastive_loss(emb, torch.tensor([7, 7, 1000, 1000, 0])).item() == pytest.approx(-15.0)


def test_cluster_three_segments_pair_mean():
    emb = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    seg = torch.tensor([1, 2, 3])
    # one pixel per segment -> intra = 0; pair distances^2: 9, 16, 25.
    # 6 ordered pairs -> inter = 2 * (9 + 16 + 25) / 6 = 50 / 3; loss = -50 / 3.
    assert cluster_contrastive_loss(emb, seg).item() == pytest.approx(-50.0 / 3.0)


def test_cluster_single_segment_and_void():
    emb = torch.tensor([[0.0], [2.0], [4.0], [9.0]], requires_grad=True)
    # single segment {0, 2, 4}: centroid 2, squared distances 4, 0, 4 -> intra = 8 / 3; inter = 0.
    loss = cluster_contrastive_loss(emb, torch.tensor([5, 5, 5, 0]))
    assert loss.item() == pytest.approx(8.0 / 3.0)
    # all void -> zero that is still in the graph.
    zero = cluster_contrastive_loss(emb, torch.zeros(4, dtype=torch.long))
    assert zero.item() == 0.0 and zero.requires_grad
    zero.backward()
    assert torch.all(emb.grad == 0)


def test_cluster_sum_balance_is_the_papers_ratio_of_sums():
    emb = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0], [100.0, -50.0]])
    seg = torch.tensor([1, 1, 2, 2, 0])
    # Eq. 4's sums: intra 4, inter 16 + 16 = 32; both / 4 valid pixels -> 1 - 8 = -7 (mean balance: -15).
    assert cluster_contrastive_loss(emb, seg, "sum").item() == pytest.approx(-7.0)
    emb3, seg3 = torch.tensor([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]), torch.tensor([1, 2, 3])
    assert cluster_contrastive_loss(emb3, seg3, "sum").item() == pytest.approx(-100.0 / 3.0)  # 2 * 50 / 3 pixels


def test_cluster_pinned_stuff_centroid_sits_at_code_zero():
    emb = torch.tensor([[0.0, 0.0], [0.0, 2.0], [4.0, 0.0], [4.0, 2.0]], requires_grad=True)
    seg = torch.tensor([1, 1, 2, 2])
    stuff = stuff_pixels(seg, torch.tensor([0, 0, 1, 255]))
    assert stuff.tolist() == [True, True, False, False]
    # segment 1's centroid is the origin: squared distances 0, 4; segment 2's (4, 1): 1, 1 -> intra 6 / 4;
    # inter over the two ordered pairs: ||(0, 0) - (4, 1)||^2 = 17 -> 1.5 - 17.
    loss = cluster_contrastive_loss(emb, seg, "mean", stuff)
    assert loss.item() == pytest.approx(-15.5)
    loss.backward()
    # the stuff pixels are pulled to the origin: d/dV of ||V||^2 / 4 (the inter term moves only segment 2)
    assert emb.grad[:2].flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])
    # two segments of one view that are both mostly background share the pinned centroid
    both = stuff_pixels(torch.tensor([3, 3, 4, 4, 5]), torch.tensor([0, 1, 0, 0, 1]))
    assert both.tolist() == [False, False, True, True, False]  # segment 3 is half background: not stuff
    assert not stuff_pixels(torch.zeros(3, dtype=torch.long), torch.zeros(3, dtype=torch.long)).any()


def test_cluster_resolution_invariant():
    gen = torch.Generator().manual_seed(0)
    seg = _segment_map()
    emb = torch.rand(12, 12, 3, generator=gen)
    loss = cluster_contrastive_loss(emb.reshape(-1, 3), seg.reshape(-1))
    # Nearest-neighbour upsampling x2: same segments, same centroids, same per-pixel distances.
    seg2 = seg.repeat_interleave(2, 0).repeat_interleave(2, 1)
    emb2 = emb.repeat_interleave(2, 0).repeat_interleave(2, 1)
    loss2 = cluster_contrastive_loss(emb2.reshape(-1, 3), seg2.reshape(-1))
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-5, abs=1e-6)


# --------------------------------------------------------------------------- triplet loss (Eq. 5)


def test_triplet_loss_by_hand():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [3.0, 0.0]])
    anchor, pos, neg = torch.tensor([0, 0, 0, 1]), torch.tensor([1, 2, 1, 0]), torch.tensor([2, 1, 3, 0])
    triplets = Triplets(anchor, pos, neg, torch.tensor([True, True, True, False]))  # the 4th is no triplet
    # (0,1,2): 1 - 4 + 1 = -2 -> 0;  (0,2,1): 4 - 1 + 1 = 4;  (0,1,3): 1 - 9 + 1 -> 0.  mean = 4 / 3.
    assert triplet_loss(z, triplets).item() == pytest.approx(4.0 / 3.0)
    # margin 2: (0,1,2): 1 - 4 + 2 = -1 -> 0;  (0,2,1): 4 - 1 + 2 = 5;  (0,1,3): 1 - 9 + 2 -> 0.  mean = 5 / 3.
    assert triplet_loss(z, triplets, margin=2.0).item() == pytest.approx(5.0 / 3.0)


def test_triplet_loss_empty_is_connected_zero():
    z = torch.rand(5, 3, requires_grad=True)
    empty = torch.zeros(0, dtype=torch.long)
    loss = triplet_loss(z, Triplets(empty, empty, empty, empty.bool()))
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.all(z.grad == 0)


# --------------------------------------------------------------------------- 3D neighbourhood (Eq. 6)


def test_neighbourhood_loss_by_hand():
    v = torch.tensor([[0.0, 0.0], [1.0, 1.0], [3.0, 0.0]])
    pairs = torch.tensor([[0, 1], [1, 0], [0, 2]])
    # ||v0 - v1||^2 = 2 (twice), ||v0 - v2||^2 = 9 -> mean = 13 / 3.
    assert neighbourhood_loss(v, pairs).item() == pytest.approx(13.0 / 3.0)
    v.requires_grad_(True)
    zero = neighbourhood_loss(v, torch.zeros(0, 2, dtype=torch.long))
    assert zero.item() == 0.0 and zero.requires_grad


def test_neighbour_pairs_matches_brute_force():
    gen = torch.Generator().manual_seed(1)
    means = torch.rand(300, 3, generator=gen)
    tau = 0.02
    pairs = neighbour_pairs(means, tau, max_neighbours=300)
    d2 = torch.cdist(means.double(), means.double()).square()
    expected = ((d2 <= tau) & ~torch.eye(300, dtype=torch.bool)).nonzero()
    assert pairs.dtype == torch.int32 and pairs.shape[1] == 2
    assert set(map(tuple, pairs.tolist())) == set(map(tuple, expected.tolist()))
    assert len(pairs) == len(expected)  # no duplicates


def test_neighbour_pairs_cap_keeps_nearest():
    gen = torch.Generator().manual_seed(2)
    means = torch.rand(200, 3, generator=gen)
    pairs = neighbour_pairs(means, tau=0.05, max_neighbours=4)
    counts = torch.bincount(pairs[:, 0], minlength=200)
    assert counts.max() <= 4
    d2 = torch.cdist(means, means).square().fill_diagonal_(float("inf"))
    kept = d2[pairs[:, 0], pairs[:, 1]]
    # every kept neighbour is at most as far as the 4th nearest neighbour of its source
    fourth = d2.topk(4, dim=1, largest=False).values[:, -1]
    assert torch.all(kept <= fourth[pairs[:, 0]] + 1e-6)


def test_neighbour_pairs_tau_is_squared_distance():
    # points on the x axis at 0, 0.5, 1.25: distances 0.5, 0.75, 1.25; squared 0.25, 0.5625, 1.5625.
    means = torch.tensor([[0.0, 0.0, 0.0], [0.5, 0.0, 0.0], [1.25, 0.0, 0.0]])
    # tau = 0.3 as a squared distance keeps only (0, 1); read as a distance it would keep nothing.
    assert sorted(map(tuple, neighbour_pairs(means, 0.3, 8).tolist())) == [(0, 1), (1, 0)]
    # the bound is inclusive: tau = 0.25 exactly still keeps (0, 1).
    assert sorted(map(tuple, neighbour_pairs(means, 0.25, 8).tolist())) == [(0, 1), (1, 0)]
    # tau = 0.6 adds (1, 2) (0.5625) but not (0, 2) (1.5625).
    assert sorted(map(tuple, neighbour_pairs(means, 0.6, 8).tolist())) == [(0, 1), (1, 0), (1, 2), (2, 1)]


def test_neighbour_pairs_duplicate_points():
    means = torch.zeros(5, 3)
    pairs = neighbour_pairs(means, 1e-4, max_neighbours=2)
    assert torch.all(pairs[:, 0] != pairs[:, 1])
    assert torch.bincount(pairs[:, 0], minlength=5).tolist() == [2] * 5


def test_neighbourhood_loss_accepts_int32_and_int64_pairs():
    v = torch.randn(30, 5, generator=torch.Generator().manual_seed(3))
    pairs = torch.randint(0, 30, (80, 2), generator=torch.Generator().manual_seed(4), dtype=torch.int32)
    assert torch.equal(neighbourhood_loss(v, pairs), neighbourhood_loss(v, pairs.long()))


def test_neighbourhood_loss_sample_covering_every_pair_is_the_full_loss():
    v = torch.randn(30, 5, generator=torch.Generator().manual_seed(3))
    pairs = neighbour_pairs(torch.rand(30, 3, generator=torch.Generator().manual_seed(4)), 0.2, 8)
    full = neighbourhood_loss(v, pairs)
    gen = torch.Generator().manual_seed(0)
    for num_samples in (None, 0, len(pairs), len(pairs) + 1):
        assert torch.equal(neighbourhood_loss(v, pairs, num_samples, gen), full)
    assert torch.equal(gen.get_state(), torch.Generator().manual_seed(0).get_state())  # nothing drawn


def test_neighbourhood_loss_sample_is_unbiased_for_the_loss_and_its_gradient():
    """The mean over a uniform sample of pairs estimates Eq. 6's mean over all pairs without bias: the average of
    many draws matches the full loss and gradient within 4 standard errors."""
    gen = torch.Generator().manual_seed(5)
    v = torch.randn(20, 3, generator=gen, requires_grad=True)
    pairs = torch.randint(0, 20, (40, 2), generator=gen, dtype=torch.int32)
    full = neighbourhood_loss(v, pairs)
    (full_grad,) = torch.autograd.grad(full, v)
    num_samples, draws = 8, 4000
    losses, grads = [], []
    for _ in range(draws):
        loss = neighbourhood_loss(v, pairs, num_samples, gen)
        losses.append(loss.detach())
        grads.append(torch.autograd.grad(loss, v)[0])
    losses, grads = torch.stack(losses), torch.stack(grads)
    assert len(set(losses.tolist())) > 100  # the draws do differ
    assert (losses.mean() - full).abs() <= 4 * losses.std() / draws**0.5
    assert torch.all((grads.mean(0) - full_grad).abs() <= 4 * grads.std(0) / draws**0.5 + 1e-6)


def test_neighbourhood_loss_sample_follows_its_generator():
    v = torch.randn(30, 5, generator=torch.Generator().manual_seed(3))
    pairs = torch.randint(0, 30, (500, 2), generator=torch.Generator().manual_seed(4), dtype=torch.int32)
    first = neighbourhood_loss(v, pairs, 16, torch.Generator().manual_seed(7))
    assert torch.equal(first, neighbourhood_loss(v, pairs, 16, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, neighbourhood_loss(v, pairs, 16, torch.Generator().manual_seed(8)))


def _sampled_model(**overrides) -> UniCLiftModel:
    """A UniC-Lift model on 300 seed points with the 3D loss on from step 0, over 50 of its 1376 pairs per step."""
    config = UniCLiftModelConfig(**{"neighbour_loss_start": 0, "neighbour_pairs_per_step": 50, **overrides})
    return setup_model(config, num_points=300)


def test_model_builds_neighbours_once_until_refinement_replaces_the_gaussians(monkeypatch):
    """By default (neighbour_refresh_every=None) the KD-tree runs when the 3D loss first needs pairs and again only
    when gsplat's refinement replaces the means tensor, however many steps pass; an interval adds rebuilds."""
    builds = []

    def counted(means, tau, max_neighbours):
        builds.append(len(means))
        return neighbour_pairs(means, tau, max_neighbours)

    monkeypatch.setattr("unic_lift_ns.models.unic_lift.neighbour_pairs", counted)
    model = _sampled_model()
    for step in (0, 1, 999, 1000, 10**6):
        model.step = step
        assert model.gaussian_losses()["neighbour_loss"] > 0
    assert builds == [300]
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in model.gauss_params.items()}
    pruned = torch.arange(model.num_points) < 10
    remove(params=model.gauss_params, optimizers=optimizers, state={}, mask=pruned)  # as refinement prunes
    model.gaussian_losses()
    model.gaussian_losses()
    assert builds == [300, 290]

    model.config.neighbour_refresh_every = 1000
    for step in (10**6 + 999, 10**6 + 1000):
        model.step = step
        model.gaussian_losses()
    assert builds == [300, 290, 290]


def test_model_neighbour_sample_resumes_with_the_checkpointed_generator():
    """The per-step sample of pairs draws from a generator saved in the model's extra state: a model restored
    from it draws what the saved one draws next. With neighbour_pairs_per_step 0, the loss is over every pair."""
    saved, restored = _sampled_model(), _sampled_model()
    first = saved.gaussian_losses()["neighbour_loss"]
    restored.load_state_dict(saved.state_dict())
    second = saved.gaussian_losses()["neighbour_loss"]
    assert not torch.equal(first, second)
    assert torch.equal(restored.gaussian_losses()["neighbour_loss"], second)
    state = saved.get_extra_state()
    del state["neighbour_generator"]  # a checkpoint saved before the sample existed still loads
    restored.set_extra_state(state)

    every = _sampled_model(neighbour_pairs_per_step=0)
    pairs = neighbour_pairs(every.means, every.config.neighbour_tau, every.config.max_neighbours)
    expected = every.config.neighbour_loss_weight * neighbourhood_loss(every.embeddings, pairs)
    torch.testing.assert_close(every.gaussian_losses()["neighbour_loss"], expected, rtol=0, atol=0)


# --------------------------------------------------------------------------- semantic head


def test_semantic_loss_by_hand():
    logits = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0], [5.0, -5.0]])
    target = torch.tensor([0, 0, 255])
    # row 0: -log(1/2) = log 2; row 1: -log(3/4) = log(4/3); row 2 ignored -> mean = log(8/3) / 2.
    assert semantic_loss(logits, target).item() == pytest.approx(math.log(8.0 / 3.0) / 2.0)
    zero = semantic_loss(logits.requires_grad_(True), torch.full((3,), 255))
    assert zero.item() == 0.0 and zero.requires_grad


# --------------------------------------------------------------------------- triplet mining


def _four_neighbour_boundary(seg: torch.Tensor) -> torch.Tensor:
    """Reference (loop) boundary mask: valid pixel with a 4-neighbour of another valid label."""
    height, width = seg.shape
    out = torch.zeros_like(seg, dtype=torch.bool)
    for y in range(height):
        for x in range(width):
            for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                yy, xx = y + dy, x + dx
                if 0 <= yy < height and 0 <= xx < width:
                    other = seg[yy, xx].item()
                    if seg[y, x] > 0 and other > 0 and other != seg[y, x]:
                        out[y, x] = True
    return out


def test_boundary_triplets_properties():
    seg = _segment_map()
    flat = seg.flatten()
    anchor, pos, neg, _ = boundary_triplets(seg, 3000, torch.Generator().manual_seed(0), radius=1).compact()
    boundary = _four_neighbour_boundary(seg).flatten()
    # Anchors: any labelled pixel, without replacement; interior pixels included.
    assert anchor.numel() == int((flat > 0).sum()) and anchor.unique().numel() == anchor.numel()
    assert not torch.all(boundary[anchor])
    assert torch.all(flat[anchor] > 0) and torch.all(flat[pos] > 0) and torch.all(flat[neg] > 0)
    # Positives: boundary pixels of the anchor's own segment; negatives: boundary pixels of another segment
    # that touch the anchor's segment (a 4-neighbour of the segment at radius 1).
    assert torch.all(flat[pos] == flat[anchor]) and torch.all(boundary[pos])
    assert torch.all(flat[neg] != flat[anchor]) and torch.all(boundary[neg])
    padded = torch.nn.functional.pad(seg, (1, 1, 1, 1))
    ys, xs = neg // seg.shape[1] + 1, neg % seg.shape[1] + 1
    around = torch.stack([padded[ys - 1, xs], padded[ys + 1, xs], padded[ys, xs - 1], padded[ys, xs + 1]])
    assert torch.all((around == flat[anchor]).any(0))


def test_boundary_triplets_cap_and_determinism():
    seg = _segment_map()
    first = boundary_triplets(seg, 5, torch.Generator().manual_seed(3)).compact()
    second = boundary_triplets(seg, 5, torch.Generator().manual_seed(3)).compact()
    other = boundary_triplets(seg, 5, torch.Generator().manual_seed(4)).compact()
    assert first[0].numel() == 5
    assert all(torch.equal(a, b) for a, b in zip(first, second))
    assert not all(torch.equal(a, b) for a, b in zip(first, other))


def test_boundary_triplets_none_without_boundary():
    seg = torch.zeros(6, 6, dtype=torch.long)
    seg[:, :2] = 1
    seg[:, 4:] = 2  # separated by two void columns: no valid boundary within radius 1
    anchor, pos, neg, _ = boundary_triplets(seg, 100, torch.Generator().manual_seed(0), radius=1).compact()
    assert anchor.numel() == pos.numel() == neg.numel() == 0


def test_random_triplets_properties():
    seg = _segment_map()
    flat = seg.flatten()
    anchor, pos, neg, valid = random_triplets(seg, 50, torch.Generator().manual_seed(0))
    assert valid.all()
    assert anchor.numel() == 50 and anchor.unique().numel() == 50
    assert torch.all(flat[anchor] > 0) and torch.all(flat[neg] > 0)
    assert torch.all(flat[pos] == flat[anchor]) and torch.all(pos != anchor)
    assert torch.all(flat[neg] != flat[anchor])
    again = random_triplets(seg, 50, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((anchor, pos, neg), again))
    # a single segment has no negatives; singleton segments give no anchors
    assert random_triplets(torch.ones(4, 4, dtype=torch.long), 10)[0].numel() == 0
    single = torch.tensor([[1, 2, 2]])
    anchors = random_triplets(single, 10, torch.Generator().manual_seed(0))[0]
    assert sorted(anchors.tolist()) == [1, 2]


# --------------------------------------------------------------------------- gradient routing


def test_gradients_reach_only_embeddings_and_linear_layer():
    gen = torch.Generator().manual_seed(0)
    num_gaussians, dim, height, width = 40, 4, 12, 12
    embeddings = torch.nn.Parameter(torch.randn(num_gaussians, dim, generator=gen))
    means = torch.nn.Parameter(torch.rand(num_gaussians, 3, generator=gen) * 0.3)
    scales = torch.nn.Parameter(torch.rand(num_gaussians, 3, generator=gen))
    opacities = torch.nn.Parameter(torch.rand(num_gaussians, generator=gen))
    linear = torch.nn.Linear(dim, dim, bias=False)

    # Frozen stand-in for alpha compositing (Eq. 3): weights built from detached geometry.
    pixels = torch.rand(height * width, 3, generator=gen) * 0.3
    logits = -torch.cdist(pixels, means.detach()) / scales.detach().mean(-1)
    weights = torch.softmax(logits, dim=-1) * torch.sigmoid(opacities.detach())  # [P, N]
    sig = torch.sigmoid(weights @ embeddings)  # sigmoid(V), [P, d]

    seg = _segment_map()
    triplets = boundary_triplets(seg, 3000, torch.Generator().manual_seed(0))
    pairs = neighbour_pairs(means, tau=0.01, max_neighbours=8)
    assert pairs.numel() > 0 and triplets[0].numel() > 0
    loss = (
        cluster_contrastive_loss(sig, seg.flatten())
        + triplet_loss(linear(sig), triplets, margin=1.0)
        + neighbourhood_loss(embeddings, pairs)
    )
    loss.backward()

    assert embeddings.grad is not None and embeddings.grad.abs().sum() > 0
    assert linear.weight.grad is not None and linear.weight.grad.abs().sum() > 0
    assert means.grad is None and scales.grad is None and opacities.grad is None


def test_code_push_loss_is_zero_at_the_corners_and_pushes_away_from_the_centre():
    codes = torch.tensor([[0.0, 1.0], [0.5, 0.5], [0.6, 0.1], [0.5, 0.5]], requires_grad=True)
    segments = torch.tensor([1, 2, 3, 0])  # the last pixel is unmasked
    loss = code_push_loss(codes, segments)
    assert loss.item() == pytest.approx((0.0 + 0.0 + 0.5 + 0.5 + 0.4 + 0.1) / 6)
    loss.backward()
    # descent moves every code away from 0.5 (0.6 up, 0.1 down, corners outwards); the unmasked pixel feels nothing
    assert codes.grad[2, 0] < 0 < codes.grad[2, 1] and codes.grad[0, 1] < 0 < codes.grad[0, 0]
    assert not codes.grad[3].any()
    assert code_push_loss(codes, torch.zeros(4, dtype=torch.long)).item() == 0.0


# --------------------------------------------------------------------------- no shape from the masks


def test_numbered_segments_give_the_same_losses_in_fixed_slots():
    """The datamanager numbers each mask's segments 1..K: with ``num_segments`` the losses use fixed slots (no
    device sync) and equal those on the raw ids, pinned stuff included; slots no pixel uses change nothing."""
    from unic_lift_ns.data.label_maps import number_segments

    gen = torch.Generator().manual_seed(0)
    raw = torch.tensor([0, 9, 9, 40, 40, 40, 1000, 9, 0, 1000, 40, 7])
    numbered, count = number_segments(raw)
    assert count == 4 and numbered.tolist() == [0, 2, 2, 3, 3, 3, 4, 2, 0, 4, 3, 1]
    emb = torch.rand(12, 5, generator=gen)
    semantics = torch.tensor([0, 0, 0, 1, 1, 0, 1, 0, 1, 1, 1, 0])
    for balance in ("mean", "sum"):
        for stuff in (False, True):
            pinned = stuff_pixels(raw, semantics) if stuff else None
            reference = cluster_contrastive_loss(emb, raw, balance, pinned)
            for slots in (count, count + 3):
                pinned_slots = stuff_pixels(numbered, semantics, num_segments=slots) if stuff else None
                if stuff:
                    assert torch.equal(pinned_slots, pinned)
                loss = cluster_contrastive_loss(emb, numbered, balance, pinned_slots, num_segments=slots)
                assert loss.item() == pytest.approx(reference.item(), rel=1e-5)
    seg = _segment_map()
    for slots in (None, 7, 9):
        triplets = boundary_triplets(seg, 200, torch.Generator().manual_seed(1), radius=2, num_segments=slots)
        assert triplets.anchor.numel() == min(200, seg.numel())  # fixed, whatever the map holds
    same = boundary_triplets(seg, 200, torch.Generator().manual_seed(1), radius=2, num_segments=9)
    assert all(torch.equal(a, b) for a, b in zip(triplets, same))
