"""Code collisions: same-label 3D components that no view sees together get unused codes (unic_lift_ns.collisions),
on hand-made point sets with known answers and through the model's 'gaussian-votes' decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras

from unic_lift_ns.collisions import median_neighbour_distance, split_label_collisions
from unic_lift_ns.errors import InputError
from unic_lift_ns.models.unic_lift import UniCLiftModelConfig

from conftest import setup_model

SIZE, FOCAL = 100, 100.0  # a 100 x 100 image sees +-5 units at depth 10


def blob(centre: float, n: int = 200, seed: int = 0) -> np.ndarray:
    """``n`` points in the unit cube around (centre, 0, 0): one 3D component, without outliers."""
    return np.random.default_rng(seed).uniform(-0.5, 0.5, (n, 3)) + [centre, 0.0, 0.0]


def looking_down(*xs_and_heights: tuple) -> tuple:
    """(viewmats, Ks, widths, heights) of cameras at (x, 0, h) looking down -z (OpenCV axes: y down, z forward)."""
    viewmats = []
    for x, h in xs_and_heights:
        R = np.diag([1.0, -1.0, -1.0])
        viewmat = np.eye(4)
        viewmat[:3, :3], viewmat[:3, 3] = R, -R @ np.array([x, 0.0, h])
        viewmats.append(viewmat)
    K = np.array([[FOCAL, 0.0, SIZE / 2], [0.0, FOCAL, SIZE / 2], [0.0, 0.0, 1.0]])
    count = len(viewmats)
    return np.stack(viewmats), np.repeat(K[None], count, 0), np.full(count, SIZE), np.full(count, SIZE)


TWO_SEPARATE_VIEWS = looking_down((-5.0, 10.0), (5.0, 10.0))  # each sees one of the blobs at x = -5 and x = 5
BOTH_IN_ONE_VIEW = looking_down((-5.0, 10.0), (5.0, 10.0), (0.0, 20.0))  # the third one sees both


def test_separate_blobs_never_seen_together_are_split() -> None:
    means = np.concatenate([blob(-5.0, 250), blob(5.0, 200, seed=1), blob(-5.0, 100, seed=2) + [0, 0, 2]])
    labels = np.concatenate([np.full(450, 7), np.full(100, 1)])  # a second object with label 1 above blob A
    split, report = split_label_collisions(means, labels, *TWO_SEPARATE_VIEWS, num_bits=3)
    assert (split[:250] == 7).all() and (split[450:] == 1).all()  # the larger blob keeps the code
    new = set(split[250:450].tolist())
    assert len(new) == 1 and new.pop() == 2  # the smallest code no Gaussian had: never 0, below 2^d
    assert (report.labels_split, report.new_labels, report.unsplit_groups) == (1, 1, 0)
    assert report.radius == pytest.approx(5.0 * median_neighbour_distance(means))


def test_blobs_seen_together_stay_one_label() -> None:
    means = np.concatenate([blob(-5.0), blob(5.0, seed=1)])
    labels = np.full(400, 7)
    split, report = split_label_collisions(means, labels, *BOTH_IN_ONE_VIEW, num_bits=12)
    assert (split == 7).all() and report.new_labels == 0


def test_one_blob_and_tiny_components_keep_their_label() -> None:
    stray = blob(5.0, 3, seed=1)  # 3 Gaussians: under min_size (5), it stays with its label
    means = np.concatenate([blob(-5.0), stray])
    labels = np.full(203, 3)
    split, report = split_label_collisions(means, labels, *TWO_SEPARATE_VIEWS, num_bits=12)
    assert (split == 3).all() and report.labels_split == 0


def test_new_codes_are_unused_and_fit_in_d_bits() -> None:
    """Four blobs of label 0 and one of label 1, each seen alone: label 0 splits into codes no Gaussian had, below
    2^d; when the free codes run out, the remaining groups stay on their label and the report says so."""
    xs = (-20.0, -10.0, 0.0, 10.0, 20.0)
    means = np.concatenate([blob(x, seed=i) for i, x in enumerate(xs)])
    views = looking_down(*[(x, 10.0) for x in xs])
    labels = np.repeat([0, 0, 0, 0, 1], 200)
    split, report = split_label_collisions(means, labels, *views, num_bits=3)
    per_blob = [set(split[i * 200 : (i + 1) * 200].tolist()) for i in range(5)]
    assert all(len(codes) == 1 for codes in per_blob) and per_blob[4] == {1}
    assert sorted(set.union(*per_blob[:4])) == [0, 2, 3, 4]
    split, report = split_label_collisions(means, labels, *views, num_bits=2)  # only codes 2 and 3 are free
    assert sorted(set(split.tolist())) == [0, 1, 2, 3] and (split[800:] == 1).all()
    assert (report.labels_split, report.new_labels, report.unsplit_groups) == (1, 2, 1)


def test_model_votes_and_labels_of_split_collisions() -> None:
    """Through the model: two blobs on one confident code, each seen by its own train camera, decode to two labels
    with split_collisions (votes, gaussian_labels, and isolating the split-off one), to one without."""
    c2w = torch.tensor([[[1.0, 0.0, 0.0, x], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 2.0]] for x in (-1.0, 1.0)])
    train = Cameras(camera_to_worlds=c2w, fx=48.0, fy=48.0, cx=24.0, cy=24.0, width=48, height=48)
    config = UniCLiftModelConfig(instance_decoding="gaussian-votes", split_collisions=True)
    model = setup_model(config, num_points=400, metadata={"train_cameras": train})
    with torch.no_grad():
        means = model.gauss_params["means"]
        means[:, 0] += torch.where(means[:, 0] < 0, -1.0, 1.0)  # blobs around x = -1 and x = 1
        model.gauss_params["embeddings"].copy_(torch.where(torch.arange(12) < 2, 4.0, -4.0).expand(400, 12))
    model.eval()
    both = Cameras(camera_to_worlds=torch.tensor([[1.0, 0, 0, 0], [0, 1.0, 0, 0], [0, 0, 1.0, 6.0]])[None],
                   fx=48.0, fy=48.0, cx=24.0, cy=24.0, width=48, height=48)  # fmt: skip
    labels = model.gaussian_labels()
    left = means[:, 0] < 0
    assert len(set(labels[left].tolist())) == len(set(labels[~left].tolist())) == 1
    codes = {int(labels[left][0]), int(labels[~left][0])}
    assert 3 in codes and len(codes) == 2 and 0 not in codes  # one blob keeps code 3, the other gets a free code
    new = (codes - {3}).pop()
    assert model.decoding.collision_split(model)[1].new_labels == 1
    assert codes <= set(model.get_outputs_for_camera(both)["instance_label"].long().unique().tolist())
    model.gaussian_filter = labels == new  # the viewer's isolate: only the split-off blob is drawn
    assert set(model.get_outputs_for_camera(both)["instance_label"].long().unique().tolist()) == {0, new}
    model.gaussian_filter = None
    model.set_decoding(split_collisions=False)
    assert set(model.gaussian_labels().tolist()) == {3}


def test_split_collisions_needs_train_cameras() -> None:
    with pytest.raises(InputError, match="train cameras"):
        setup_model(UniCLiftModelConfig(split_collisions=True), num_points=50)
