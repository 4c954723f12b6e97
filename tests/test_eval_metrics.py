"""PQ^scene, per-frame PQ, mIoU and the tracking baseline on small in-memory label maps."""

from __future__ import annotations

import math

import numpy as np
import pytest

from unic_lift_ns.eval.panoptic import panoptic_maps, semantic_miou
from unic_lift_ns.eval.tracking import track_segments


def moving_objects(num_views: int = 6, num_objects: int = 5, size: int = 64, step: int = 1) -> list[np.ndarray]:
    """GT instance maps: 8x8 squares on a row, moving ``step`` pixels right per view; 0 = background."""
    maps = []
    for view in range(num_views):
        labels = np.zeros((size, size), np.int64)
        for obj in range(num_objects):
            x = 2 + 9 * obj + step * view
            labels[10 + 4 * obj : 18 + 4 * obj, x : x + 8] = obj + 1
        maps.append(labels)
    return maps


def relabel_per_view(maps: list[np.ndarray], seed: int = 0) -> list[np.ndarray]:
    """Like a 2D segmenter: every segment, background included, gets a random positive ID per view."""
    rng = np.random.default_rng(seed)
    out = []
    for labels in maps:
        ids, inverse = np.unique(labels, return_inverse=True)
        new_ids = rng.permutation(len(ids)) + 1
        out.append(new_ids[inverse].reshape(labels.shape))
    return out


def semantics_of(gt: list[np.ndarray]) -> list[np.ndarray]:
    return [(labels > 0).astype(np.int64) for labels in gt]


def test_gt_against_itself_is_perfect() -> None:
    gt = moving_objects()
    sem = semantics_of(gt)
    # Class-agnostic: the prediction must label the background too (predicted 0 is void).
    as_pred = [np.where(labels == 0, 100, labels) for labels in gt]
    for scores in (
        panoptic_maps(as_pred, gt).scene_quality(),
        panoptic_maps(as_pred, gt).frame_quality(),
        panoptic_maps(gt, gt, sem, sem).scene_quality(),
        panoptic_maps(gt, gt, sem, sem).frame_quality(),
    ):
        assert (scores.pq, scores.sq, scores.rq) == pytest.approx((1.0, 1.0, 1.0))
    assert panoptic_maps(as_pred, gt).count_instances() == (6, 6)  # 5 objects + the background segment
    assert panoptic_maps(gt, gt, sem, sem).count_instances() == (5, 5)


def test_ids_permuted_per_view_break_scene_pq_only() -> None:
    gt = moving_objects(num_views=6, num_objects=5)
    pred = relabel_per_view(gt)
    assert panoptic_maps(pred, gt).frame_quality().pq == pytest.approx(1.0)
    assert panoptic_maps(pred, gt).scene_quality().pq < 0.5
    sem = semantics_of(gt)
    # With semantics the background is one stuff segment (instance IDs ignored), so only things suffer.
    assert panoptic_maps(pred, gt, sem, sem).frame_quality().pq == pytest.approx(1.0)
    assert panoptic_maps(pred, gt, sem, sem).scene_quality().pq < 0.75


def test_scene_pq_hand_computed() -> None:
    # Two 4x4 views, class-agnostic. GT objects 1 and 2; GT background becomes segment 3 (max ID + 1).
    gt = [
        np.array([[1, 1, 2, 2], [1, 1, 2, 2], [0, 0, 0, 0], [0, 0, 0, 0]]),
        np.array([[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]),
    ]
    pred = [
        np.array([[5, 5, 9, 9], [5, 5, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]]),
        np.array([[5, 5, 9, 9], [7, 7, 9, 9], [9, 9, 9, 9], [9, 9, 9, 9]]),
    ]
    # Merged over both views: GT 1 = 4 + 4 = 8 px, GT 2 = 4 px, GT 3 = 8 + 12 = 20 px;
    # pred 5 = 4 + 2 = 6 px (all on GT 1), pred 7 = 2 px (on GT 1), pred 9 = 12 + 12 = 24 px (GT 3 + GT 2).
    #   pred 5 vs GT 1: IoU = 6 / (6 + 8 - 6) = 0.75      > 0.5, TP
    #   pred 9 vs GT 3: IoU = 20 / (24 + 20 - 20) = 5/6  > 0.5, TP
    #   pred 7 vs GT 1: IoU = 2 / 8 = 0.25 -> FP;  GT 2 vs pred 9: IoU = 4 / 24 -> FN
    # SQ = (0.75 + 5/6) / 2 = 19/24, RQ = 2 / (2 + 0.5 + 0.5) = 2/3, PQ = SQ * RQ = 19/36.
    scores = panoptic_maps(pred, gt).scene_quality()
    assert (scores.pq, scores.sq, scores.rq) == pytest.approx((19 / 36, 19 / 24, 2 / 3))
    # Per frame, view 0: pred 5 = GT 1 (IoU 1), pred 9 vs GT 3 IoU 8/12 -> 2 TP, GT 2 FN.
    # View 1: pred 5 and pred 7 each have IoU 2/4 = 0.5 with GT 1, which is not > 0.5 -> 2 FP, 1 FN;
    # pred 9 = GT 3 (IoU 1) -> 1 TP. Pooled: PQ = (1 + 2/3 + 1) / (3 + 0.5 * 2 + 0.5 * 2) = 8/15.
    assert panoptic_maps(pred, gt).frame_quality().pq == pytest.approx(8 / 15)
    assert panoptic_maps(pred, gt).count_instances() == (3, 3)


def test_semantic_mode_conventions() -> None:
    gt = [np.array([[0, 0, 1, 1], [0, 0, 1, 1]])]
    sem = [np.array([[0, 0, 1, 1], [0, 0, 1, 1]])]
    # Stuff pixels may carry any instance ID (even 0): they form one background segment.
    pred = [np.array([[0, 4, 3, 3], [8, 0, 3, 3]])]
    assert panoptic_maps(pred, gt, sem, sem).scene_quality().pq == pytest.approx(1.0)
    # Thing pixels with instance 0 are void: they neither match nor count as false positives.
    pred_void = [np.array([[0, 0, 0, 0], [0, 0, 0, 0]])]
    scores = panoptic_maps(pred_void, gt, sem, sem).scene_quality()
    assert scores.pq == pytest.approx(1.0)  # only the stuff class is left to score
    with pytest.raises(ValueError, match="gt_semantics"):
        panoptic_maps(pred, gt, sem, None).scene_quality()


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="View 1"):
        panoptic_maps([np.ones((4, 4))] * 2, [np.ones((4, 4)), np.ones((4, 5))]).scene_quality()


def test_semantic_miou() -> None:
    gt = [np.array([[0, 0, 1, 1, 255]])]
    pred = [np.array([[0, 1, 1, 255, 1]])]
    # class 0: I = 1, U = 2 + 1 - 1 = 2; class 1: I = 1, U = 2 + 2 - 1 = 3 (unlabelled 255 counts as wrong,
    # the GT-ignored last pixel is skipped) -> mIoU = (1/2 + 1/3) / 2.
    assert semantic_miou(pred, gt) == pytest.approx(5 / 12)


def test_tracking_recovers_consistent_ids() -> None:
    gt = moving_objects(num_views=8, num_objects=5, step=1)
    segmenter = relabel_per_view(gt, seed=1)
    segmenter[3][0, :4] = 0  # a few unlabelled pixels stay unlabelled
    tracked = track_segments(segmenter)
    assert (tracked[3][0, :4] == 0).all()
    assert panoptic_maps(segmenter, gt, unlabelled=0).scene_quality().pq < 0.5
    assert panoptic_maps(tracked, gt, unlabelled=0).scene_quality().pq > 0.99
    # One global bijection between track IDs and GT IDs.
    pairs = {(int(t), int(g)) for tm, gm in zip(tracked, gt) for t, g in zip(tm.ravel(), gm.ravel()) if t}
    assert len(pairs) == len({t for t, _ in pairs}) == len({g for _, g in pairs}) == 6


def test_tracking_starts_new_tracks_below_min_iou() -> None:
    first = np.zeros((8, 8), np.int64)
    first[:4, :4] = 3
    second = np.zeros((8, 8), np.int64)
    second[:4, 3:7] = 5  # IoU with the previous square: 4 / 28 = 1/7
    assert [int(m.max()) for m in track_segments([first, second], min_iou=0.1)] == [1, 1]
    assert [int(m.max()) for m in track_segments([first, second], min_iou=0.2)] == [1, 2]


def test_predicted_zero_is_a_segment_unless_declared_unlabelled():
    gt = [np.array([[1, 1, 2, 2]] * 4)]
    pred = [np.array([[0, 0, 0, 0]] * 4)]  # label 0 everywhere: one segment covering both objects
    assert panoptic_maps(pred, gt).scene_quality().pq == 0.0
    # Declared unlabelled, it is void: nothing is predicted and nothing is penalised by torchmetrics.
    assert math.isnan(panoptic_maps(pred, gt, unlabelled=0).scene_quality().pq)


def test_views_rendered_at_half_size_are_upsampled_nearest_before_scoring(tiny_scene):
    """Training on images_2 / --downscale-factor renders eval views smaller than gt/: score at GT size, IDs intact."""
    import torch

    from unic_lift_ns.data.label_maps import resize_label_map
    from unic_lift_ns.eval.evaluate import load_scene_gt
    from unic_lift_ns.eval.rendered_views import RenderedViews
    from unic_lift_ns.eval.evaluate import score_rendered

    gt = load_scene_gt(tiny_scene)
    half = [resize_label_map(torch.from_numpy(m), m.shape[0] // 2, m.shape[1] // 2).numpy() for m in gt.instances]
    half_sem = [resize_label_map(torch.from_numpy(m), m.shape[0] // 2, m.shape[1] // 2).numpy() for m in gt.semantics]
    rendered = RenderedViews(list(gt.eval_stems), half, half_sem, [{"psnr": 30.0}] * len(half))
    result = score_rendered(rendered, tiny_scene)
    assert result.num_pred_instances == result.num_gt_instances
    assert 0.7 < result.pq_scene < 1.0 and result.psnr == 30.0  # 48 px scene: halving loses thin parts


def test_saved_labels_wider_than_16_bits_read_back_exactly(tmp_path):
    """d up to 24 gives labels < 2^24: such a folder is written as .npy; semantics stay 8-bit PNGs."""
    from unic_lift_ns.data.label_maps import find_label_map, read_label_map
    from unic_lift_ns.eval.rendered_views import RenderedViews

    rng = np.random.default_rng(0)
    narrow, wide = rng.integers(0, 2**16, (6, 5)), rng.integers(2**16, 2**24, (6, 5))
    wide[0, 0] = 2**24 - 1
    semantics = [rng.integers(0, 2, (6, 5)) for _ in range(2)]
    RenderedViews(["a", "b"], [narrow, wide], semantics, [{"psnr": 20.0}] * 2).save(tmp_path / "wide")
    for stem, labels, classes in zip("ab", (narrow, wide), semantics):
        instances = find_label_map(tmp_path / "wide" / "instances", stem)
        assert instances.suffix == ".npy" and np.load(instances).dtype == np.int32
        np.testing.assert_array_equal(read_label_map(instances), labels)
        semantic = find_label_map(tmp_path / "wide" / "semantics", stem)
        assert semantic.suffix == ".png"
        np.testing.assert_array_equal(read_label_map(semantic), classes)
    RenderedViews(["a"], [narrow], None, [{"psnr": 20.0}]).save(tmp_path / "narrow")
    assert [p.name for p in (tmp_path / "narrow").iterdir()] == ["instances"]
    np.testing.assert_array_equal(read_label_map(tmp_path / "narrow" / "instances" / "a.png"), narrow)


def test_a_run_with_semantics_is_also_scored_class_agnostic():
    """pq_scene_agnostic scores predicted stuff as one more instance, like a run without semantic masks is scored."""
    from unic_lift_ns.eval.evaluate import SceneGT, score

    gt = moving_objects(num_views=2, num_objects=3, size=32)
    sem = semantics_of(gt)
    scene = SceneGT(["a", "b"], ["a", "b"], gt, sem)
    perfect = score(gt, scene, sem)
    assert (perfect.pq_scene, perfect.pq_scene_agnostic) == pytest.approx((1.0, 1.0))
    # The semantic head calls object 1 background: its pixels join the floor's one segment.
    lost = [np.where(g == 1, 0, s) for g, s in zip(gt, sem)]
    result = score(gt, scene, lost)
    floor, object_1 = sum(int((g == 0).sum()) for g in gt), sum(int((g == 1).sum()) for g in gt)
    floor_iou = floor / (floor + object_1)
    # Class-agnostic: 2 objects and the floor match (floor IoU < 1), object 1 is missed: RQ = 3 / (3 + 1 / 2).
    assert result.pq_scene_agnostic == pytest.approx((2 + floor_iou) / 3 * 3 / 3.5)
    # With semantics PQ is the mean of thing PQ (2 of 3 objects: RQ 0.8) and stuff PQ (the floor IoU).
    assert result.pq_scene == pytest.approx((0.8 + floor_iou) / 2)
    # Without predicted semantics both are the one class-agnostic score; void semantics (255) are not penalised.
    floor_id = [np.where(g == 0, 9, g) for g in gt]
    assert score(floor_id, scene).pq_scene_agnostic == score(floor_id, scene).pq_scene == pytest.approx(1.0)
    void = [np.where(g == 2, 255, s) for g, s in zip(gt, sem)]
    assert score(gt, scene, void).pq_scene_agnostic == pytest.approx(1.0)
