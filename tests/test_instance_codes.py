"""Tests for Embedding-to-Label decoding (Sec. 3.3) and the label palette."""

import pytest
import torch

from unic_lift_ns.instance_codes import embedding_to_label, label_palette, label_to_bits, max_labels


def test_hand_example():
    # sigmoid([+5, -5, +5]) = [0.993, 0.007, 0.993] -> bits [1, 0, 1] -> 1 * 2^0 + 0 * 2^1 + 1 * 2^2 = 5.
    v = torch.tensor([5.0, -5.0, 5.0])
    assert embedding_to_label(v).item() == 5
    assert label_to_bits(torch.tensor(5), 3).tolist() == [1.0, 0.0, 1.0]
    # bit k = 1 is the least significant: only the first channel on -> 1; only the last -> 4.
    assert embedding_to_label(torch.tensor([[5.0, -5.0, -5.0], [-5.0, -5.0, 5.0]])).tolist() == [1, 4]


def test_paper_toy_example():
    # Sec. 3: sigmoid output [0.9, 0.8] thresholds to [1, 1] and decodes to 3.
    assert embedding_to_label(torch.logit(torch.tensor([0.9, 0.8]))).item() == 3


def test_threshold():
    v = torch.logit(torch.tensor([0.6, 0.4]))
    assert embedding_to_label(v).item() == 1
    assert embedding_to_label(v, threshold=0.3).item() == 3
    assert embedding_to_label(v, threshold=0.7).item() == 0


@pytest.mark.parametrize("dim", [1, 3, 12, 20])
def test_round_trip(dim):
    gen = torch.Generator().manual_seed(dim)
    labels = torch.randint(0, max_labels(dim), (4, 50), generator=gen)
    labels[0, :2] = torch.tensor([0, max_labels(dim) - 1])
    bits = label_to_bits(labels, dim)
    assert bits.shape == (4, 50, dim) and bits.dtype == torch.float32
    assert set(bits.unique().tolist()) <= {0.0, 1.0}
    # bits -> embeddings (+-4 logits) -> labels -> bits
    decoded = embedding_to_label(8.0 * bits - 4.0)
    assert decoded.dtype == torch.long and torch.equal(decoded, labels)
    assert torch.equal(label_to_bits(decoded, dim), bits)


def test_max_labels_and_dimension_limit():
    assert max_labels(12) == 4096
    assert embedding_to_label(torch.full((62,), 5.0)).item() == 2**62 - 1
    with pytest.raises(AssertionError):
        embedding_to_label(torch.zeros(63))


def test_palette_deterministic_and_in_range():
    labels = torch.tensor([[0, 1, 2], [4095, 17, 1]])
    colours = label_palette(labels)
    assert colours.shape == (2, 3, 3) and colours.dtype == torch.float32
    assert torch.equal(colours, label_palette(labels.clone()))
    assert torch.equal(colours[0, 1], colours[1, 2])  # same label, same colour
    assert torch.all((colours >= 0) & (colours <= 1))


@pytest.mark.parametrize("start", [0, 1000, 4096 - 64, 2**20 - 64])
def test_palette_consecutive_labels_distinct(start):
    colours = label_palette(torch.arange(start, start + 64))
    dist = torch.cdist(colours, colours).fill_diagonal_(float("inf"))
    assert dist.min() > 0.08
    # neighbouring integers get very different colours
    assert torch.linalg.norm(colours[1:] - colours[:-1], dim=-1).min() > 0.3
