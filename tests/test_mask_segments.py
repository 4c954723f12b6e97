"""The overlap-to-label-map rule of unic-lift-masks on hand-made segments with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from unic_lift_ns.masks.segments import SEMANTIC_UNLABELLED, Segments, paint_label_maps


def box(shape, rows, cols) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[rows[0] : rows[1], cols[0] : cols[1]] = True
    return mask


SHAPE = (20, 20)
TABLE = box(SHAPE, (0, 20), (0, 20))  # 400 px, contains the cup
CUP = box(SHAPE, (5, 10), (5, 10))  # 25 px
SPECK = box(SHAPE, (15, 17), (15, 17))  # 4 px


def test_area_order_keeps_small_objects_on_top_of_what_contains_them():
    segments = Segments(masks=np.stack([TABLE, CUP]), scores=np.array([0.9, 0.5]))
    maps = paint_label_maps(segments, min_area=1, max_segments=10)
    table, cup = maps.instance[0, 0], maps.instance[7, 7]
    assert (table, cup) == (1, 2)  # IDs by decreasing visible area: table 375 px, cup 25 px
    assert np.count_nonzero(maps.instance == cup) == 25 and np.count_nonzero(maps.instance == table) == 375
    assert maps.instance.dtype == np.uint16 and maps.semantic is None and maps.num_dropped == 0


def test_score_order_lets_the_most_confident_mask_win():
    maps = paint_label_maps(
        Segments(masks=np.stack([TABLE, CUP]), scores=np.array([0.9, 0.5])), min_area=1, max_segments=10, order="score"
    )
    assert np.all(maps.instance == 1)  # the table (0.9) covers the cup (0.5) entirely, the cup is gone


def test_small_candidates_and_small_remainders_become_unlabelled():
    masks = np.stack([box(SHAPE, (0, 10), (0, 20)), SPECK, box(SHAPE, (0, 11), (0, 20))])
    # the third mask (220 px) is painted first (largest), then the first (200 px) covers all but one row of it
    maps = paint_label_maps(Segments(masks=masks, scores=np.ones(3)), min_area=21, max_segments=10)
    assert set(np.unique(maps.instance).tolist()) == {0, 1}
    assert np.count_nonzero(maps.instance) == 200  # speck (4 px < 21) dropped, 20-px remainder of mask 3 dropped


def test_enclosed_small_holes_join_their_segment_and_nothing_else_is_filled():
    ring = box(SHAPE, (2, 12), (2, 12)) & ~box(SHAPE, (5, 8), (5, 8))  # 100 - 9 px with a 9-px hole
    open_region = box(SHAPE, (14, 20), (0, 20))  # leaves the background unlabelled
    segments = Segments(masks=np.stack([ring, open_region]), scores=np.ones(2))
    filled = paint_label_maps(segments, min_area=1, max_segments=10, fill_holes_below=9)
    assert np.all(filled.instance[5:8, 5:8] == filled.instance[2, 2])  # the hole took the ring's ID
    assert filled.instance[0, 0] == 0  # the unlabelled region touching the border stays unlabelled
    kept = paint_label_maps(segments, min_area=1, max_segments=10, fill_holes_below=8)
    assert np.all(kept.instance[5:8, 5:8] == 0)  # 9 px > 8: not filled


def test_a_hole_between_two_segments_is_not_filled():
    left, right = box(SHAPE, (0, 20), (0, 9)), box(SHAPE, (0, 20), (11, 20))
    gap = paint_label_maps(Segments(masks=np.stack([left, right]), scores=np.ones(2)), 1, 10, fill_holes_below=100)
    assert np.all(gap.instance[:, 9:11] == 0)  # the gap touches two segments (and the border)


def test_segments_beyond_the_cap_are_dropped_smallest_first():
    labels = np.zeros(SHAPE, dtype=np.int64)
    for i in range(5):  # segments of 20, 16, 12, 8, 4 pixels
        labels[i * 4 : i * 4 + 4, : 5 - i] = i + 1
    maps = paint_label_maps(Segments(labels=labels, scores=np.ones(5)), min_area=1, max_segments=3)
    assert maps.num_dropped == 2 and maps.num_candidates == 5
    assert [np.count_nonzero(maps.instance == i) for i in (1, 2, 3)] == [20, 16, 12]
    assert maps.instance.max() == 3 and np.all(maps.instance[12:] == 0)


def test_semantic_map_from_thing_and_stuff_segments():
    labels = np.zeros(SHAPE, dtype=np.int64)
    labels[:10], labels[10:15], labels[15:18] = 1, 2, 3  # stuff, thing class 4, thing class 0; rows 18-19 none
    segments = Segments(labels=labels, scores=np.ones(3), thing_class=np.array([-1, 4, 0]))
    binary = paint_label_maps(segments, min_area=1, max_segments=10)
    assert (binary.semantic[0, 0], binary.semantic[12, 0], binary.semantic[16, 0]) == (0, 1, 1)
    assert np.all(binary.semantic[18:] == SEMANTIC_UNLABELLED) and np.all(binary.instance[18:] == 0)
    per_class = paint_label_maps(segments, min_area=1, max_segments=10, per_class=True)
    assert (per_class.semantic[0, 0], per_class.semantic[12, 0], per_class.semantic[16, 0]) == (0, 5, 1)


def test_malformed_segments_are_refused():
    with pytest.raises(ValueError, match="exactly one"):
        Segments(scores=np.ones(1))
    with pytest.raises(ValueError, match="2 segments but 1 scores"):
        Segments(masks=np.stack([CUP, TABLE]), scores=np.ones(1))
