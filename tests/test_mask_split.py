"""The mask split (unic_lift_ns.mask_split): a label's Gaussians that the train masks keep apart get their own codes."""

from __future__ import annotations

from typing import List, Optional, Tuple

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras

from unic_lift_ns.errors import InputError
from unic_lift_ns.mask_split import split_labels_by_masks, view_segments
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

from conftest import setup_model

SIZE, FOCAL = 64, 40.0


def _top_down_views(count: int, rng: np.random.Generator) -> Tuple[np.ndarray, np.ndarray]:
    """Cameras 4 units above the plane z = 0, looking straight down (OpenCV axes) at the square [0, 2] x [0, 1]."""
    viewmats, Ks = [], []
    for _ in range(count):
        centre = np.array([1.0 + rng.uniform(-0.3, 0.3), 0.5 + rng.uniform(-0.3, 0.3), 4.0])
        rotation = np.diag([1.0, -1.0, -1.0])  # camera x = world x, camera y = -world y, camera z = -world z
        viewmat = np.eye(4)
        viewmat[:3, :3], viewmat[:3, 3] = rotation, -rotation @ centre
        viewmats.append(viewmat)
        Ks.append(np.array([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1]]))
    return np.stack(viewmats), np.stack(Ks)


def _masks(viewmats: np.ndarray, Ks: np.ndarray, merge_views: int, split_views: int,
           rng: np.random.Generator) -> List[Optional[np.ndarray]]:
    """Each view's mask of two touching objects (x < 1 and x >= 1 on the plane) with arbitrary ids: the first
    ``merge_views`` give both one id, the next ``split_views`` cut the first object in two."""
    masks: List[Optional[np.ndarray]] = []
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    for view, (viewmat, K) in enumerate(zip(viewmats, Ks)):
        centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        x = centre[0] + (u - K[0, 2]) / K[0, 0] * centre[2]
        y = centre[1] - (v - K[1, 2]) / K[1, 1] * centre[2]
        ids = rng.choice(np.arange(1, 50), size=3, replace=False)
        mask = np.where(x < 1, ids[0], ids[1])
        if view < merge_views:
            mask[:] = ids[0]
        elif view < merge_views + split_views:
            mask = np.where((x < 1) & (y < 0.5), ids[2], mask)
        mask[(x < 0) | (x > 2) | (y < 0) | (y > 1)] = 0
        masks.append(mask)
    return masks


def _two_objects(rng: np.random.Generator, count: int = 400) -> Tuple[np.ndarray, np.ndarray]:
    means = np.column_stack([rng.uniform(0.02, 1.98, count), rng.uniform(0.02, 0.98, count), np.zeros(count)])
    return means, (means[:, 0] >= 1).astype(np.int64)


def test_touching_objects_on_one_code_are_split_despite_merges_and_splits() -> None:
    rng = np.random.default_rng(0)
    means, truth = _two_objects(rng)
    viewmats, Ks = _top_down_views(12, rng)
    masks = _masks(viewmats, Ks, merge_views=4, split_views=3, rng=rng) + [None]  # a view without a mask
    viewmats, Ks = np.concatenate([viewmats, viewmats[:1]]), np.concatenate([Ks, Ks[:1]])
    labels = np.full(len(means), 5)
    labels[:3] = 9  # another label, too small to split
    split, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, num_bits=4, depth_tolerance=0.1)
    assert report.views == 12 and report.labels_split == 1 and report.new_labels == 1 and report.unsplit_groups == 0
    assert set(split[:3]) == {9}
    five = labels == 5
    inner = five & (np.abs(means[:, 0] - 1) > 0.1)  # a pixel is 0.1 wide: a centre on the boundary may go either way
    for obj in (0, 1):  # each object is one label, and the two differ
        assert len(set(split[inner & (truth == obj)])) == 1
    assert split[inner & (truth == 0)][0] != split[inner & (truth == 1)][0]
    assert np.mean(split[five & (truth == 0)] == split[inner & (truth == 0)][0]) > 0.97
    assert set(split[five]) <= {5} | set(range(1, 16)) - {5, 9}  # the largest keeps 5; the new code is unused


def test_one_object_that_some_views_split_stays_one_label() -> None:
    rng = np.random.default_rng(1)
    means, _ = _two_objects(rng)
    viewmats, Ks = _top_down_views(10, rng)
    masks = [np.where(mask > 0, 7, 0) for mask in _masks(viewmats, Ks, merge_views=0, split_views=0, rng=rng)]
    for mask in masks[:4]:  # 4 of 10 views cut it in two
        mask[:, : SIZE // 2] = np.where(mask[:, : SIZE // 2] > 0, 3, 0)
    split, report = split_labels_by_masks(means, np.full(len(means), 2), viewmats, Ks, masks, 4, 0.1)
    assert report.new_labels == 0 and set(split) == {2}


def test_more_merging_views_than_agreement_keeps_one_label() -> None:
    """Objects that most views merge stay one label: the masks decide, not a threshold on the codes."""
    rng = np.random.default_rng(2)
    means, _ = _two_objects(rng)
    viewmats, Ks = _top_down_views(10, rng)
    masks = _masks(viewmats, Ks, merge_views=7, split_views=0, rng=rng)
    split, _ = split_labels_by_masks(means, np.full(len(means), 2), viewmats, Ks, masks, 4, 0.1)
    assert set(split) == {2}


def test_merge_joins_one_object_on_two_codes_and_gives_no_code_to_what_the_masks_put_with_it() -> None:
    """Split, then merge: the first object, on codes 5 and 6, becomes one label (the larger keeps its code); the
    12 Gaussians of the second object (label 2^d: they do not vote) that took code 5 split off, then join it."""
    rng = np.random.default_rng(4)
    means, truth = _two_objects(rng)
    viewmats, Ks = _top_down_views(10, rng)
    masks = _masks(viewmats, Ks, merge_views=0, split_views=2, rng=rng)
    no_code = 16
    labels = np.where(truth == 0, np.where(means[:, 1] < 0.6, 5, 6), no_code)
    strays = np.flatnonzero((truth == 1) & (means[:, 0] > 1.2))[:12]
    labels[strays] = 5
    split, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, merge=True, no_code=no_code)
    inner = np.abs(means[:, 0] - 1) > 0.1
    assert set(split[(truth == 0) & inner]) == {5} and set(split[(truth == 1) & inner]) == {no_code}
    assert report.new_labels == 1 and report.labels_merged == 2  # the strays' new label, and 6
    unmerged, _ = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, no_code=no_code)
    assert len(set(unmerged[strays])) == 1 and unmerged[strays[0]] not in (5, 6, no_code)  # split off, not merged


def test_recover_gives_a_code_to_an_object_without_one_but_not_to_a_labelled_object_s_unconfident_gaussians() -> None:
    """The second object has no code (its Gaussians do not vote) and owns its segments: it takes a free code. 20
    Gaussians of the first object do not vote either, but share its segments with its voters: they keep no code."""
    rng = np.random.default_rng(5)
    means, truth = _two_objects(rng)
    viewmats, Ks = _top_down_views(10, rng)
    masks = _masks(viewmats, Ks, merge_views=0, split_views=0, rng=rng)
    no_code = 16
    labels = np.where(truth == 0, 5, no_code)
    unconfident = np.flatnonzero((truth == 0) & (means[:, 0] < 0.8))[:20]
    labels[unconfident] = no_code
    recovered, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, no_code=no_code,
                                              recover=True)  # fmt: skip
    inner = np.abs(means[:, 0] - 1) > 0.1
    second = set(recovered[(truth == 1) & inner])
    assert len(second) == 1 and second.isdisjoint({0, 5, no_code}) and report.labels_recovered == 1
    assert set(recovered[unconfident]) == {no_code} and set(recovered[(truth == 0) & inner & (labels == 5)]) == {5}
    unrecovered, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, no_code=no_code)
    assert set(unrecovered[truth == 1]) == {no_code} and report.labels_recovered == 0


def test_a_small_object_that_owns_its_segments_keeps_a_code_where_a_small_fragment_does_not() -> None:
    """Training gave the first object, 4 Gaussians of a tiny object that the masks segment on its own, and 3 stray
    Gaussians of the second object (which does not vote) one code. Both small groups are under min_size (5): the
    tiny object owns its segments and keeps a code of its own; the strays share the second object's segments with
    its 200-odd Gaussians and join another group. With mask_keep_owners off, both join."""
    rng = np.random.default_rng(6)
    means, truth = _two_objects(rng)
    viewmats, Ks = _top_down_views(10, rng)
    masks = _masks(viewmats, Ks, merge_views=0, split_views=0, rng=rng)
    square = (np.abs(means[:, 0] - 1.5) < 0.1) & (np.abs(means[:, 1] - 0.5) < 0.1)
    means, truth = means[~square], truth[~square]
    tiny = np.array([[1.47, 0.47, 0.0], [1.53, 0.47, 0.0], [1.47, 0.53, 0.0], [1.53, 0.53, 0.0]])
    means, truth = np.concatenate([means, tiny]), np.concatenate([truth, np.full(4, 2)])
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    for viewmat, K, mask in zip(viewmats, Ks, masks):  # the tiny object's own segment, id 99, in every view
        centre = -viewmat[:3, :3].T @ viewmat[:3, 3]
        x, y = centre[0] + (u - K[0, 2]) / K[0, 0] * centre[2], centre[1] - (v - K[1, 2]) / K[1, 1] * centre[2]
        mask[(np.abs(x - 1.5) < 0.1) & (np.abs(y - 0.5) < 0.1)] = 99
    no_code = 16
    labels = np.where(truth == 1, no_code, 5)
    strays = np.flatnonzero((truth == 1) & (means[:, 0] > 1.7))[:3]
    labels[strays] = 5
    split, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, no_code=no_code,
                                          keep_owners=True)  # fmt: skip
    inner = (truth == 0) & (means[:, 0] < 0.9)
    assert set(split[inner]) == {5} and report.new_labels == 1
    assert len(set(split[truth == 2])) == 1 and split[truth == 2][0] not in (5, no_code)
    assert set(split[strays]) <= {5, split[truth == 2][0]}  # no code of their own
    joined, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, 4, 0.1, no_code=no_code)
    assert report.new_labels == 0 and set(joined[truth == 2]) == {5}


def test_hidden_centres_take_no_segment() -> None:
    """A centre behind a nearer one on its pixel (beyond the depth tolerance) is not shown; one in front is."""
    rng = np.random.default_rng(3)
    viewmats, Ks = _top_down_views(1, rng)
    means = np.array([[1.0, 0.5, 0.0], [1.0, 0.5, 1.0], [1.0, 0.5, 0.05], [5.0, 5.0, 0.0]])  # the last is outside
    segments, seen = view_segments(means, viewmats, Ks, [np.full((SIZE, SIZE), 4)], depth_tolerance=0.1)
    assert seen.toarray()[:, 0].tolist() == [0, 1, 0, 0]
    assert segments.shape == (4, 1)


@pytest.mark.parametrize("bits", [1])
def test_no_free_code_leaves_the_group_on_its_label(bits: int) -> None:
    rng = np.random.default_rng(0)
    means, _ = _two_objects(rng)
    viewmats, Ks = _top_down_views(8, rng)
    masks = _masks(viewmats, Ks, merge_views=0, split_views=0, rng=rng)
    labels = np.ones(len(means), dtype=np.int64)  # d = 1: the only other code is 0, never given
    split, report = split_labels_by_masks(means, labels, viewmats, Ks, masks, bits, 0.1)
    assert report.unsplit_groups == 1 and report.new_labels == 0 and set(split) == {1}


def test_model_votes_and_labels_of_the_mask_split() -> None:
    """Through the model: two touching halves of a plane on one confident code, which the one train view's mask
    gives two segments, decode to two labels with split_by_masks, and to one without."""
    c2w = torch.tensor([[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 6.0]]])
    train = Cameras(camera_to_worlds=c2w, fx=48.0, fy=48.0, cx=24.0, cy=24.0, width=48, height=48)
    mask = torch.where(torch.arange(48) < 24, 4, 9).expand(48, 48).clone()  # left half of the image, right half
    config = UniCLiftModelConfig(instance_decoding="gaussian-votes", split_by_masks=True)
    metadata = {"train_cameras": train, "train_instance_masks": lambda: [mask]}
    model = setup_model(config, num_points=400, metadata=metadata)
    with torch.no_grad():
        means = model.gauss_params["means"]
        means[:, 2] = 0.0  # a plane facing the camera: no centre hides another
        model.gauss_params["embeddings"].copy_(torch.where(torch.arange(12) < 2, 4.0, -4.0).expand(400, 12))
    model.eval()
    labels = model.gaussian_labels()
    left, clear = means[:, 0] < 0, means[:, 0].abs() > 0.15  # a pixel is 0.125 wide here
    assert len(set(labels[left & clear].tolist())) == len(set(labels[~left & clear].tolist())) == 1
    codes = {int(labels[left & clear][0]), int(labels[~left & clear][0])}
    assert 3 in codes and len(codes) == 2 and 0 not in codes
    assert model.decoding.mask_split(model)[1].new_labels == 1
    assert codes <= set(model.get_outputs_for_camera(train)["instance_label"].long().unique().tolist())
    model.set_decoding(split_by_masks=False)
    assert set(model.gaussian_labels().tolist()) == {3}


def test_split_by_masks_needs_the_train_masks() -> None:
    c2w = torch.eye(4)[None, :3]
    train = Cameras(camera_to_worlds=c2w, fx=48.0, fy=48.0, cx=24.0, cy=24.0, width=48, height=48)
    with pytest.raises(InputError, match="--pipeline.model.split-by-masks needs the train instance masks"):
        setup_model(UniCLiftModelConfig(split_by_masks=True), num_points=50, metadata={"train_cameras": train})


def test_a_trained_run_reads_its_train_masks_through_the_datamanager(trained_run) -> None:
    """On a real run: the datamanager hands the model every train view's mask; split + merge give labels of d bits
    or 2^d, and the pixels read only labels that Gaussians carry."""
    from unic_lift_ns.runs import load_run

    run = load_run(trained_run / "config.yml")
    model, train = run.model, run.pipeline.datamanager.train_dataset
    model.set_decoding(instance_decoding="gaussian-votes", split_by_masks=True, merge_by_masks=True)
    labels, report = model.decoding.mask_split(model)
    assert report.views == sum(path is not None for path in train.instance_mask_paths) == len(train)
    no_code = 2**model.config.embedding_dim
    assert int(labels.min()) >= 0 and int(labels.max()) <= no_code and len(labels) == len(model.means)
    assert bool((labels[~model.vote_gate.voting(model)] == no_code).all())  # the gate's non-voters have no code
    assert not bool((labels[model.decoding.voting(model)] == no_code).any())  # and those that vote have one
    carried = set(model.gaussian_labels().tolist()) | {0, no_code}
    camera = train.cameras[0:1]
    assert set(model.get_outputs_for_camera(camera)["instance_label"].long().unique().tolist()) <= carried
    model.set_decoding(merge_by_masks=False, recover_by_masks=True)  # the gate's voters, and recovered groups
    recovered, report = model.decoding.mask_split(model)
    voting, gate = model.decoding.voting(model), model.vote_gate.voting(model)
    assert bool(voting[gate].all())
    assert int((voting & ~gate).sum()) >= report.labels_recovered * model.config.collision_min_gaussians
    assert set(recovered[voting & ~gate].tolist()).isdisjoint(recovered[gate].tolist())  # codes of their own
