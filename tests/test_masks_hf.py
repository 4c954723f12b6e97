"""The Hugging Face backends of unic-lift-masks on tiny random-init models saved to disk (no download, no network)."""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
torch = pytest.importorskip("torch")
from huggingface_hub import constants as hub_constants  # noqa: E402 - only once transformers is known to be there
from PIL import Image  # noqa: E402

from unic_lift_ns.errors import InputError  # noqa: E402
from unic_lift_ns.masks.hf_segmenters import (  # noqa: E402
    PanopticOptions,
    PanopticSegmenter,
    SamOptions,
    SamSegmenter,
    load_hf_segmenter,
)

DEMO_IMAGES = Path(__file__).resolve().parent.parent / "assets" / "demo" / "images"
KEEP_ALL = PanopticOptions(threshold=0.0, mask_threshold=0.0, overlap_mask_area_threshold=0.0)
"""Random-init class scores are about 1 / (labels + 1), so the default thresholds would leave no segment."""


@pytest.fixture(scope="module", autouse=True)
def offline():
    """No test of this file may reach the network (huggingface_hub reads HF_HUB_OFFLINE at import, so patch both)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        patch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
        yield


@pytest.fixture(scope="module")
def images():
    """Two demo views: one at its 160x160 size, one downscaled to 120x96 (masks must follow each image's size)."""
    paths = sorted(DEMO_IMAGES.glob("*.png"))[:2]
    first, second = (Image.open(path).convert("RGB") for path in paths)
    return [np.asarray(first), np.asarray(second.resize((120, 96), Image.Resampling.BILINEAR))]


@pytest.fixture(scope="module")
def sam_folder(tmp_path_factory) -> Path:
    """A random-init SAM (hidden sizes 16, one layer each, 256 px input) and its processor, saved."""
    from transformers import SamConfig, SamImageProcessor, SamModel, SamProcessor

    size = 256
    config = SamConfig(
        vision_config=dict(
            hidden_size=16, output_channels=16, num_hidden_layers=1, num_attention_heads=1, mlp_dim=32,
            image_size=size, patch_size=16, window_size=4, global_attn_indexes=[0], num_pos_feats=8,
        ),
        prompt_encoder_config=dict(hidden_size=16, image_size=size, patch_size=16, mask_input_channels=4),
        mask_decoder_config=dict(
            hidden_size=16, mlp_dim=32, num_hidden_layers=1, num_attention_heads=1, iou_head_hidden_dim=16
        ),
    )  # fmt: skip
    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("sam")
    SamModel(config).save_pretrained(folder)
    processor = SamImageProcessor(size={"longest_edge": size}, pad_size={"height": size, "width": size})
    SamProcessor(image_processor=processor).save_pretrained(folder)
    return folder


def tiny_swin():
    """A 4-stage Swin backbone config with 16 channels and one layer per stage, for the panoptic models."""
    from transformers import SwinConfig

    return SwinConfig(
        image_size=64, patch_size=4, embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 1, 1], window_size=4,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )  # fmt: skip


def save_mask2former(folder: Path, id2label: dict) -> Path:
    """A random-init Mask2Former (tiny Swin backbone, 8 queries, hidden size 32) and its processor, saved."""
    from transformers import Mask2FormerConfig, Mask2FormerForUniversalSegmentation, Mask2FormerImageProcessor

    backbone = tiny_swin()
    config = Mask2FormerConfig(
        backbone_config=backbone, feature_size=32, mask_feature_size=32, hidden_dim=32, encoder_feedforward_dim=32,
        encoder_layers=1, decoder_layers=2, num_attention_heads=1, dim_feedforward=32, num_queries=8,
        id2label=id2label, label2id={name: i for i, name in id2label.items()},
    )  # fmt: skip
    torch.manual_seed(0)
    Mask2FormerForUniversalSegmentation(config).save_pretrained(folder)
    Mask2FormerImageProcessor(size={"shortest_edge": 64, "longest_edge": 96}).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def coco_folder(tmp_path_factory) -> Path:
    """A tiny Mask2Former with COCO panoptic's 133 labels (0..79 things)."""
    return save_mask2former(tmp_path_factory.mktemp("mask2former"), {i: f"class{i}" for i in range(133)})


def test_sam_segments_each_image_at_its_size(sam_folder, images):
    options = SamOptions(points_per_batch=8, points_per_crop=4, pred_iou_thresh=0, stability_score_thresh=0)
    segmenter = load_hf_segmenter(str(sam_folder), "cpu", options, PanopticOptions())
    assert isinstance(segmenter, SamSegmenter)
    assert segmenter.model == str(sam_folder) and segmenter.revision is None and segmenter.thing_classes is None
    results = segmenter.segment(images)
    assert len(results) == len(images)
    for image, segments in zip(images, results):
        assert segments.masks is not None and segments.labels is None and segments.thing_class is None
        assert segments.masks.dtype == bool and segments.masks.shape[1:] == image.shape[:2]
        assert len(segments.masks) >= 1 and segments.scores.shape == (len(segments.masks),)
        assert segments.scores.dtype == np.float32


def test_sam_without_masks_returns_an_empty_stack(sam_folder, images):
    options = SamOptions(points_per_crop=2, pred_iou_thresh=1.0)  # no predicted IoU exceeds 1
    segmenter = load_hf_segmenter(str(sam_folder), "cpu", options, PanopticOptions())
    for image, segments in zip(images, segmenter.segment(images)):
        assert segments.masks.shape == (0, *image.shape[:2]) and segments.scores.shape == (0,)


def test_mask2former_coco_layout(coco_folder, images):
    segmenter = load_hf_segmenter(str(coco_folder), "cpu", SamOptions(), KEEP_ALL)
    assert isinstance(segmenter, PanopticSegmenter)
    assert segmenter.thing_classes == [f"class{i}" for i in range(80)]
    assert segmenter.stuff_ids == set(range(80, 133))
    results = segmenter.segment(images)
    for image, segments in zip(images, results):
        assert segments.masks is None and segments.labels.shape == image.shape[:2]
        count = len(segments.scores)
        assert count >= 1 and segments.thing_class.shape == (count,)
        assert segments.labels.min() >= 0 and segments.labels.max() == count
        assert set(np.unique(segments.labels)) - {0} == set(range(1, count + 1))
        assert ((segments.thing_class >= -1) & (segments.thing_class < 80)).all()


def test_mask2former_without_segments(coco_folder, images):
    """No query above the threshold: the post-processor's all -1 map becomes all 0."""
    segmenter = load_hf_segmenter(str(coco_folder), "cpu", SamOptions(), PanopticOptions(threshold=1.0))
    for image, segments in zip(images, segmenter.segment(images)):
        assert segments.labels.shape == image.shape[:2] and not segments.labels.any()
        assert len(segments.scores) == 0 and len(segments.thing_class) == 0


def test_mask2former_named_thing_classes(coco_folder, images):
    options = replace(KEEP_ALL, thing_classes=("class90", "class3"))
    segmenter = load_hf_segmenter(str(coco_folder), "cpu", SamOptions(), options)
    assert segmenter.thing_classes == ["class3", "class90"]  # by label id
    assert segmenter.stuff_ids == set(range(133)) - {3, 90}
    for segments in segmenter.segment(images):
        assert set(segments.thing_class.tolist()) <= {-1, 0, 1}


def test_mask2former_unknown_thing_class(coco_folder):
    options = PanopticOptions(thing_classes=("class3", "unicorn"))
    with pytest.raises(InputError, match="--panoptic.thing-classes") as error:
        load_hf_segmenter(str(coco_folder), "cpu", SamOptions(), options)
    assert "unicorn" in str(error.value) and "class0" in str(error.value)


def test_mask2former_unknown_layout_makes_every_class_a_thing(tmp_path, images, capsys):
    folder = save_mask2former(tmp_path / "five", {i: f"label{i}" for i in range(5)})
    segmenter = load_hf_segmenter(str(folder), "cpu", SamOptions(), KEEP_ALL)
    assert "--panoptic.thing-classes" in capsys.readouterr().out
    assert segmenter.thing_classes == [f"label{i}" for i in range(5)] and not segmenter.stuff_ids
    for segments in segmenter.segment(images):
        assert (segments.thing_class >= 0).all()


def test_oneformer_thing_ids_from_its_processor(tmp_path, images):
    """OneFormer: the processor tokenizes the task and its class info file says which classes are things."""
    from transformers import (
        CLIPTokenizer, OneFormerConfig, OneFormerForUniversalSegmentation, OneFormerImageProcessor, OneFormerProcessor,
    )  # fmt: skip

    names = ["cat", "sky", "dog", "road"]
    info = {str(i): {"name": name, "isthing": int(name in ("cat", "dog"))} for i, name in enumerate(names)}
    (tmp_path / "classes.json").write_text(json.dumps(info))
    backbone = tiny_swin()
    config = OneFormerConfig(
        backbone_config=backbone, conv_dim=32, mask_dim=32, hidden_dim=32, encoder_feedforward_dim=32,
        encoder_layers=1, decoder_layers=2, query_dec_layers=1, num_attention_heads=1, dim_feedforward=32,
        num_queries=8, task_seq_len=8, text_encoder_width=32, text_encoder_num_layers=1, text_encoder_vocab_size=8,
        text_encoder_context_length=8, text_encoder_n_ctx=2, id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )  # fmt: skip
    torch.manual_seed(0)
    OneFormerForUniversalSegmentation(config).save_pretrained(tmp_path)
    image_processor = OneFormerImageProcessor(
        size={"shortest_edge": 64, "longest_edge": 96}, repo_path=str(tmp_path), class_info_file="classes.json"
    )
    tokenizer = CLIPTokenizer()  # no vocabulary: every word is unknown, enough for the task tokens
    OneFormerProcessor(image_processor, tokenizer, max_seq_length=8, task_seq_length=8).save_pretrained(tmp_path)
    segmenter = load_hf_segmenter(str(tmp_path), "cpu", SamOptions(), KEEP_ALL)
    assert segmenter.thing_classes == ["cat", "dog"] and segmenter.stuff_ids == {1, 3}
    for image, segments in zip(images, segmenter.segment(images)):
        assert segments.labels.shape == image.shape[:2] and segments.labels.max() == len(segments.scores) >= 1
        assert set(segments.thing_class.tolist()) <= {-1, 0, 1}


def assert_names_model(error: pytest.ExceptionInfo, model: str) -> str:
    message = str(error.value)
    assert f"--model {model}" in message and "\n" not in message
    return message


def test_missing_folder(tmp_path):
    model = str(tmp_path / "no-such-folder")
    with pytest.raises(InputError) as error:
        load_hf_segmenter(model, "cpu", SamOptions(), PanopticOptions())
    message = assert_names_model(error, model)
    assert "neither a local model folder nor in the Hugging Face cache" in message and "--model classical" in message


def test_folder_of_another_model(tmp_path):
    transformers.BertConfig(hidden_size=8, num_hidden_layers=1, num_attention_heads=1).save_pretrained(tmp_path)
    with pytest.raises(InputError) as error:
        load_hf_segmenter(str(tmp_path), "cpu", SamOptions(), PanopticOptions())
    assert "is a 'bert' model, not a segmenter" in assert_names_model(error, str(tmp_path))


def test_folder_without_config(tmp_path):
    with pytest.raises(InputError) as error:
        load_hf_segmenter(str(tmp_path), "cpu", SamOptions(), PanopticOptions())
    assert "not a segmenter" in assert_names_model(error, str(tmp_path))


def test_hub_id_not_cached_offline(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HOME", str(tmp_path))
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(InputError) as error:
        load_hf_segmenter("nobody/no-such-model", "cpu", SamOptions(), PanopticOptions())
    message = assert_names_model(error, "nobody/no-such-model")
    assert "hf download nobody/no-such-model" in message


def test_corrupt_weights(sam_folder, tmp_path):
    for path in sam_folder.iterdir():
        (tmp_path / path.name).write_bytes(path.read_bytes())
    (tmp_path / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(InputError) as error:
        load_hf_segmenter(str(tmp_path), "cpu", SamOptions(), PanopticOptions())
    assert "cannot load" in assert_names_model(error, str(tmp_path))


def test_without_transformers(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers raises ImportError
    with pytest.raises(InputError, match=r"pip install 'unic-lift-ns\[masks\]'") as error:
        load_hf_segmenter("facebook/sam-vit-base", "cpu", SamOptions(), PanopticOptions())
    assert_names_model(error, "facebook/sam-vit-base")
