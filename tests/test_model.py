"""UniCLiftModel on CPU: outputs, gradient isolation, densification alignment, checkpoints, bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from gsplat.strategy.ops import duplicate, remove, split
from nerfstudio.cameras.cameras import Cameras

from unic_lift_ns.instance_codes import label_palette
from unic_lift_ns.models.unic_lift import UniCLiftModel, UniCLiftModelConfig
from unic_lift_ns.synth.cameras import look_at

from conftest import setup_model

SEG_LOSSES = ("cluster_loss", "triplet_loss", "neighbour_loss", "semantic_loss")
GEOMETRY = ("means", "scales", "quats", "opacities", "features_dc", "features_rest")


def make_model(num_points: int = 300, seed: int = 0, metadata=None, **overrides) -> UniCLiftModel:
    return setup_model(UniCLiftModelConfig(**overrides), num_points, seed, metadata)


def make_camera(size: int = 32) -> Cameras:
    c2w = torch.from_numpy(look_at(np.array([0.0, -1.5, 1.0]), np.zeros(3))[:3]).float()
    return Cameras(camera_to_worlds=c2w[None], fx=float(size), fy=float(size), cx=size / 2, cy=size / 2,
                   width=size, height=size)  # fmt: skip


def training_losses(model: UniCLiftModel, size: int = 32):
    """One training-mode forward with a two-segment mask; returns (outputs, loss_dict)."""
    model.train()
    model.optimizers = {}
    model.step = 10
    camera = make_camera(size)
    outputs = model.get_outputs(camera)
    mask = torch.ones(size, size, dtype=torch.long)
    mask[:, size // 2 :] = 7
    mask[:2] = 0  # ignored
    semantic = (mask == 7).long()
    batch = {"image": torch.rand(size, size, 3), "instance_mask": mask, "semantic_mask": semantic}
    return outputs, model.get_loss_dict(outputs, batch)


def test_outputs_and_label_colours():
    model = make_model()
    model.eval()
    outputs = model.get_outputs_for_camera(make_camera())
    assert outputs["rgb"].shape == (32, 32, 3) and outputs["embedding"].shape == (32, 32, 12)
    labels = outputs["instance_label"].squeeze(-1).long()
    assert torch.all(labels >= 0) and torch.all(labels < 2**12)
    assert torch.allclose(outputs["instance"], label_palette(labels))
    assert outputs["semantics"].shape == (32, 32, 3) and outputs["semantic_label"].shape == (32, 32, 1)
    # Every output the viewer can pick is a float image it knows how to colour (1, 3 or > 3 channels).
    from nerfstudio.utils.colormaps import apply_colormap

    for key, value in outputs.items():
        if isinstance(value, torch.Tensor) and value.dim() == 3:
            assert value.is_floating_point() and value.shape[-1] != 2, key
            assert apply_colormap(value).shape == (32, 32, 3), key


def test_image_metrics_are_splatfactos_plus_instance_images():
    model = make_model(color_corrected_metrics=True, compute_lpips=False)
    model.eval()
    outputs = model.get_outputs_for_camera(make_camera())
    metrics, images = model.get_image_metrics_and_images(outputs, {"image": torch.rand(32, 32, 3)})
    assert set(metrics) == {"psnr", "ssim", "cc_psnr", "cc_ssim"}  # LPIPS off: dropped, not NaN
    assert metrics["cc_psnr"] >= metrics["psnr"] - 1e-3  # colour correction can only fit the image better
    assert images["img"].shape == (32, 64, 3) and torch.equal(images["instance"], outputs["instance"])
    assert torch.equal(images["semantics"], outputs["semantics"])


@pytest.mark.parametrize("gate", ["semantic", "confidence", "semantic-and-confidence", "none"])
def test_gaussian_votes_decode_no_third_codes_and_gate_the_background(gate: str):
    """Two object codes with unequal magnitudes: the rendered-embedding decode invents a third code where they blend;
    'gaussian-votes' gives only the two codes (or 0 where nothing votes). Background Gaussians: a confident code of
    semantic class 0 (the semantic gates leave it out) and an untrained code near the cube's centre, semantically an
    object (the confidence gates leave it out). 'nearest-code' snaps to the voting Gaussians' codes or to 2^d."""
    model = make_model(num_points=600, vote_gate=gate)
    x = model.means.detach()[:, 0]
    code_a = torch.full((12,), -3.0)
    code_a[0] = 4.0  # label 1
    code_b = torch.full((12,), -3.0)
    code_b[1] = 4.0  # label 2
    code_a[1] = code_b[0] = -1.0  # weak "off" bits (|sigmoid - 0.5| = 0.23): a blend switches both on -> label 3
    embeddings = torch.where((x < 0)[:, None], code_a, code_b)
    stuff, untrained = x < -0.25, x > 0.25
    embeddings[stuff] = 5.0  # label 4095, semantically stuff
    embeddings[untrained] = torch.where(torch.arange(12) % 2 == 0, 0.2, -0.2)  # label 1365, near the centre
    logits = torch.zeros(600, 2)
    logits[~stuff, 1] = 5.0
    logits[stuff, 0] = 5.0
    with torch.no_grad():
        model.gauss_params["embeddings"].copy_(embeddings)
        model.gauss_params["semantic_logits"].copy_(logits)
    model.eval()
    seen = {}
    for mode in ("rendered-embedding", "gaussian-votes"):
        model.set_decoding(instance_decoding=mode)
        seen[mode] = set(model.get_outputs_for_camera(make_camera(48))["instance_label"].long().unique().tolist())
    assert {3, 4095, 1365} <= seen["rendered-embedding"], seen
    votes = seen["gaussian-votes"]
    assert {1, 2} <= votes and 3 not in votes, seen
    assert (4095 in votes) == (gate in ("confidence", "none")), seen
    assert (1365 in votes) == (gate in ("semantic", "none")), seen
    labels = model.gaussian_labels()  # the Gaussians' labels agree with what their pixels read
    assert set(labels[stuff].tolist()) == ({4095} if gate in ("confidence", "none") else {0})
    assert set(labels[untrained].tolist()) == ({1365} if gate in ("semantic", "none") else {0})

    # 'nearest-code': the codes of the voting Gaussians and, where some do not vote, 2^12 (no code) where the cube's
    # centre is nearer (the untrained code's pixels); never the third code
    model.set_decoding(instance_decoding="nearest-code")
    corners, book = model.decoding.code_book(model)
    centre = set() if gate == "none" else {4096}
    assert set(book.tolist()) == (votes - {0}) | centre and len(corners) == len(book)
    assert (corners[-1].tolist() == [0.5] * 12) == (gate != "none")
    snapped = set(model.get_outputs_for_camera(make_camera(48))["instance_label"].long().unique().tolist())
    untrained_label = {1365} if gate == "none" else {4096}
    assert snapped == {1, 2} | untrained_label | ({4095} if gate in ("confidence", "none") else set()), snapped
    labels = model.gaussian_labels()
    assert set(labels[stuff].tolist()) == ({4095} if gate in ("confidence", "none") else {4096})
    assert set(labels[untrained].tolist()) == untrained_label and set(labels[~stuff & ~untrained].tolist()) == {1, 2}


def test_segmentation_gradients_reach_only_embeddings_and_linear_layer():
    model = make_model(stop_split_at=0, neighbour_loss_start=0, neighbour_tau=0.05)
    outputs, losses = training_losses(model)
    assert set(SEG_LOSSES) <= set(losses), losses.keys()
    assert all(torch.isfinite(losses[k]) for k in SEG_LOSSES)
    sum(losses[k] for k in SEG_LOSSES).backward()
    for name in GEOMETRY:
        grad = model.gauss_params[name].grad
        assert grad is None or not grad.abs().any(), name
    means2d_grad = model.info["means2d"].grad  # the densification statistic
    assert means2d_grad is None or not means2d_grad.any()
    assert model.gauss_params["embeddings"].grad.abs().sum() > 0
    assert model.gauss_params["semantic_logits"].grad.abs().sum() > 0
    assert model.triplet_projection.weight.grad.abs().sum() > 0
    # The rendering loss, in contrast, moves the geometry and feeds densification.
    model.zero_grad()
    outputs, losses = training_losses(model)
    losses["main_loss"].backward()
    assert model.gauss_params["means"].grad.abs().sum() > 0
    assert model.info["means2d"].grad is not None
    assert model.gauss_params["embeddings"].grad is None or not model.gauss_params["embeddings"].grad.any()


@pytest.mark.parametrize("switch", ["segmentation-off", "zero-weights"])
def test_segmentation_off_renders_and_trains_plain_splatfacto(switch: str):
    """With --pipeline.model.segmentation False, or every loss on the rendered features at weight 0, a training
    step renders no segmentation channel and has only Splatfacto's losses; the colours are those of a full step."""
    if switch == "segmentation-off":
        overrides = dict(segmentation=False)
    else:
        overrides = dict(cluster_loss_weight=0.0, triplet_loss_weight=0.0, semantic_loss_weight=0.0,
                         neighbour_loss_weight=0.0)  # fmt: skip
    full_outputs, _ = training_losses(make_model(stop_split_at=0, neighbour_loss_start=0))
    model = make_model(stop_split_at=0, neighbour_loss_start=0, **overrides)
    outputs, losses = training_losses(model)
    assert set(losses) == {"main_loss", "scale_reg"}, losses.keys()
    assert not {"embedding", "semantic_logits"} & set(outputs)
    torch.testing.assert_close(outputs["rgb"], full_outputs["rgb"])
    model.eval()
    with torch.no_grad():
        decoded = model.get_outputs(make_camera())
    # off: Splatfacto's outputs only; zero weights: the (untrained) instance maps are still rendered outside training
    assert ("instance" in decoded) == (switch == "zero-weights")


def test_loss_schedule_follows_config():
    model = make_model()  # paper defaults: triplet after stop_split_at=15000, 3D loss from 15000
    _, losses = training_losses(model)
    assert "cluster_loss" in losses and "triplet_loss" not in losses and "neighbour_loss" not in losses


def test_densification_keeps_embeddings_aligned():
    model = make_model(num_points=50)
    params = model.gauss_params
    with torch.no_grad():
        params["embeddings"][:, 0] = torch.arange(50, dtype=torch.float32)  # identity tag per Gaussian
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in params.items()}
    state: dict = {}
    dup = torch.zeros(50, dtype=torch.bool)
    dup[[3, 10]] = True
    duplicate(params=params, optimizers=optimizers, state=state, mask=dup)
    assert params["embeddings"].shape[0] == params["means"].shape[0] == 52
    assert params["embeddings"][50:, 0].tolist() == [3.0, 10.0]
    assert torch.equal(params["means"][50:], params["means"][[3, 10]])
    cut = torch.zeros(52, dtype=torch.bool)
    cut[[5, 51]] = True
    split(params=params, optimizers=optimizers, state=state, mask=cut)  # each split Gaussian becomes two
    assert params["embeddings"].shape[0] == params["means"].shape[0] == 54
    assert sorted(params["embeddings"][-4:, 0].tolist()) == [5.0, 5.0, 10.0, 10.0]
    gone = params["embeddings"][:, 0] == 20.0
    remove(params=params, optimizers=optimizers, state=state, mask=gone)
    tags = params["embeddings"][:, 0].tolist()
    assert 20.0 not in tags and len(tags) == params["means"].shape[0] == 53
    assert all(o.param_groups[0]["params"][0] is params[n] for n, o in optimizers.items())


def test_checkpoint_round_trip_resizes_embeddings(tmp_path):
    trained = make_model(num_points=300, seed=1)
    with torch.no_grad():
        trained.gauss_params["embeddings"].mul_(3.0)
        trained.triplet_projection.weight.add_(0.5)
    path = tmp_path / "model.ckpt"
    torch.save(trained.state_dict(), path)
    fresh = make_model(num_points=40, seed=2)
    fresh.load_state_dict(torch.load(path))
    assert fresh.num_points == 300
    for name, param in trained.gauss_params.items():
        assert torch.equal(fresh.gauss_params[name], param), name
    assert torch.equal(fresh.triplet_projection.weight, trained.triplet_projection.weight)
    assert torch.equal(fresh.gaussian_labels(), trained.gaussian_labels())


def test_checkpoint_of_another_method_is_refused():
    model = make_model()
    state = {k: v for k, v in model.state_dict().items() if "embeddings" not in k}
    with pytest.raises(ValueError, match="checkpoint of UniCLiftModel.*embeddings"):
        model.load_state_dict(state)


def test_too_many_segments_for_the_embedding_is_refused():
    mask = Path("scene/instance_masks/frame_00003.png")
    with pytest.raises(ValueError, match=r"frame_00003.png has 9 segments.*2\^3 = 8"):
        make_model(embedding_dim=3, metadata={"segment_counts": {mask: 9}})
    make_model(embedding_dim=3, metadata={"segment_counts": {mask: 8}})  # exactly 2^d is fine


def test_gaussian_cache_is_rebuilt_when_the_strategy_replaces_the_gaussians() -> None:
    """One cache rule for every method's neighbour structure: refinement replaces ``means`` (even at an equal
    Gaussian count), so indices cached for the old tensor are stale; otherwise rebuild every ``refresh_every``."""
    model = make_model()
    builds = []

    def build() -> int:
        builds.append(model.step)
        return len(builds)

    model.step = 0
    assert model.gaussian_cache("pairs", build, refresh_every=100) == 1
    model.step = 50
    assert model.gaussian_cache("pairs", build, refresh_every=100) == 1  # same Gaussians, within the interval
    optimizers = {name: torch.optim.Adam([p], lr=1e-3) for name, p in model.gauss_params.items()}
    keep_all = torch.zeros(model.num_points, dtype=torch.bool)
    remove(params=model.gauss_params, optimizers=optimizers, state={}, mask=keep_all)  # new tensors, same count
    assert model.gaussian_cache("pairs", build, refresh_every=100) == 2
    model.step = 150
    assert model.gaussian_cache("pairs", build, refresh_every=100) == 3
    assert builds == [0, 50, 150]


def test_each_method_config_has_only_its_own_flags() -> None:
    """`ns-train contrastive-lift --help` lists no UniC-Lift flag (triplet, cluster loss, Eq. 6, decoding)."""
    import dataclasses

    from nerfstudio.configs.method_configs import all_methods

    unic_lift_only = ("triplet", "cluster_loss", "neighbour", "instance_decoding", "linear_layer")
    for method in ("contrastive-lift", "gaussian-clustering"):
        names = [f.name for f in dataclasses.fields(all_methods[method].pipeline.model)]
        assert not [n for n in names if any(word in n for word in unic_lift_only)], method
        assert "triplet_projection" not in all_methods[method].optimizers, method
    names = [f.name for f in dataclasses.fields(all_methods["unic-lift"].pipeline.model)]
    assert {"triplet_loss_weight", "neighbour_loss_weight", "instance_decoding"} <= set(names)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (gsplat's kernels)")
def test_backbone_renders_rgb_and_depth_like_splatfacto() -> None:
    """The backbone's device-safe copy of Splatfacto's rendering against Splatfacto's own ``get_outputs`` on the
    same Gaussians (called on the same model object, so both read identical parameters)."""
    from nerfstudio.models.splatfacto import SplatfactoModel

    model = make_model().to("cuda")
    model.eval()
    camera = make_camera(64).to("cuda")
    with torch.no_grad():
        ours = model.get_outputs(camera)
        theirs = SplatfactoModel.get_outputs(model, camera)
    torch.testing.assert_close(ours["rgb"], theirs["rgb"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["depth"], theirs["depth"], rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ours["accumulation"], theirs["accumulation"], rtol=1e-4, atol=1e-4)
