"""The backbone mirrors parts of nerfstudio's Splatfacto and gsplat's DefaultStrategy: catch their drift on CPU.

An upgrade of nerfstudio or gsplat that changes a mirrored function fails :func:`test_mirrored_upstream_is_unchanged`
with what to re-check in ``unic_lift_ns/models/portable_splatfacto.py``. The Gaussians and the densification strategy of a real
``SplatfactoModel`` are compared with the backbone's, built from the same config values and seed points. Comparing
the renders of ``PortableSplatfacto.render_rgb`` and ``SplatfactoModel.get_outputs`` needs gsplat's CUDA
kernels: Splatfacto calls ``gsplat.rendering.rasterization`` directly, which has none on CPU and which
``unic_lift_ns.rasterization.use_kernels`` does not reach (it serves our code only). That comparison is
``test_backbone_renders_rgb_and_depth_like_splatfacto`` in test_model.py, a GPU test.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import importlib.metadata
import inspect
from functools import reduce
from typing import Any, List, NamedTuple, Tuple

import pytest
import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.models.splatfacto import SplatfactoModel, SplatfactoModelConfig

from conftest import setup_model
from unic_lift_ns.models.backbone import SegmentationSplatModel, SegmentationSplatModelConfig


class Mirrored(NamedTuple):
    """An upstream object the backbone copies or relies on, as recorded when the copy was last checked."""

    package: str
    module: str
    qualname: str
    version: str
    sha256: str
    recheck: str
    """What in portable_splatfacto.py (or backbone.py) follows it."""


MIRRORED: List[Mirrored] = [
    Mirrored("nerfstudio", "nerfstudio.models.splatfacto", "SplatfactoModel.populate_modules", "1.1.5",
             "be5dfb4957db9b7a5b3b0f82966ad9b26cf18f8761bd2cbe6245d3c4353f7277",
             "PortableSplatfacto.populate_modules (initial Gaussians, metrics, background, DefaultStrategy)"),
    Mirrored("nerfstudio", "nerfstudio.models.splatfacto", "SplatfactoModel.get_outputs", "1.1.5",
             "ebe38a3708f07ea52b6eead101870cffdad9851c0f9d9cbdc528f11cfbdf263e",
             "PortableSplatfacto.render_rgb (the colour render) and SegmentationSplatModel.drawn_gaussians (the crop)"),
    Mirrored("nerfstudio", "nerfstudio.models.splatfacto", "SplatfactoModel.get_gaussian_param_groups", "1.1.5",
             "e625d1afd257206a54f00975a61b0fb83bd75c9c6beaded99fae2a85c420ce0b",
             "PortableSplatfacto.get_gaussian_param_groups (one group per gauss_params entry)"),
    Mirrored("nerfstudio", "nerfstudio.models.splatfacto", "SplatfactoModel.get_param_groups", "1.1.5",
             "676983fa66d4615cbc37422dd3a182828e910b7686187162fe10cfa9162136d6",
             "PortableSplatfacto.get_param_groups (without the bilateral grid)"),
    Mirrored("nerfstudio", "nerfstudio.models.splatfacto", "SplatfactoModel.load_state_dict", "1.1.5",
             "b1b33046947612af56e8cbb8c20fec4645a43d133f65b7ea4d58ac9186c5aed0",
             "PortableSplatfacto.load_state_dict (relies on it resizing every gauss_params entry)"),
    Mirrored("gsplat", "gsplat.strategy", "DefaultStrategy", "1.4.0",
             "337a45c2b016b73a62d0649f7f608955f1aaf816f80f337e05ac2e0489924b7d",
             "the DefaultStrategy arguments in PortableSplatfacto.populate_modules"),
]  # fmt: skip
"""Functions are hashed by their source; DefaultStrategy by its fields' names and defaults (the arguments passed)."""


def upstream_text(entry: Mirrored) -> str:
    """The hashed text of ``entry``: a dataclass's fields, else the source."""
    target = reduce(getattr, entry.qualname.split("."), importlib.import_module(entry.module))
    if dataclasses.is_dataclass(target):
        return "\n".join(f"{f.name} = {f.default!r}" for f in dataclasses.fields(target))
    return inspect.getsource(target)


def drift(entry: Mirrored) -> str:
    """One line saying how the installed ``entry`` differs from the recorded one; empty if it does not."""
    version = importlib.metadata.version(entry.package)
    sha256 = hashlib.sha256(upstream_text(entry).encode()).hexdigest()
    name = f"{entry.module}.{entry.qualname}"
    if sha256 != entry.sha256:
        return (
            f"{name} changed in {entry.package} {version} (recorded at {entry.version}): re-check {entry.recheck} "
            "in unic_lift_ns/models/portable_splatfacto.py, then record its version and sha256 in MIRRORED"
        )
    if version != entry.version:
        return f"{name} is unchanged in {entry.package} {version}: record that version in MIRRORED"
    return ""


def test_mirrored_upstream_is_unchanged() -> None:
    lines = [line for line in map(drift, MIRRORED) if line]
    assert not lines, "\n".join(lines)


class NoLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS, whose construction downloads AlexNet."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__()


# Distinct non-default values, so that an argument passed to the wrong DefaultStrategy field shows.
STRATEGY_CONFIG = dict(
    cull_alpha_thresh=0.11, densify_grad_thresh=0.00031, densify_size_thresh=0.012, split_screen_size=0.061,
    cull_scale_thresh=0.52, cull_screen_size=0.17, stop_screen_size_at=3999, warmup_length=501, stop_split_at=14999,
    reset_alpha_every=29, refine_every=101, use_absgrad=False,
)  # fmt: skip


def build_both(monkeypatch: pytest.MonkeyPatch, **overrides: Any) -> Tuple[SplatfactoModel, SegmentationSplatModel]:
    """(Splatfacto, backbone) built from the same config values and seed points; Splatfacto's ``.cuda()`` on the
    seed colours returns the tensor itself and its LPIPS is :class:`NoLPIPS`."""
    ours_config = SegmentationSplatModelConfig(**STRATEGY_CONFIG, **overrides)
    shared = {f.name: getattr(ours_config, f.name) for f in dataclasses.fields(SplatfactoModelConfig) if f.init}
    theirs_config = SplatfactoModelConfig(**{**shared, "_target": SplatfactoModel})
    with monkeypatch.context() as patch:
        patch.setattr(torch.Tensor, "cuda", lambda tensor, *args, **kwargs: tensor)
        patch.setattr("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", NoLPIPS)
        theirs = setup_model(theirs_config)
    ours = setup_model(ours_config)
    assert type(theirs) is SplatfactoModel and type(ours) is SegmentationSplatModel
    return theirs, ours


@pytest.mark.parametrize("sh_degree", [3, 0])
def test_strategy_and_initial_gaussians_match_splatfacto(monkeypatch: pytest.MonkeyPatch, sh_degree: int) -> None:
    theirs, ours = build_both(monkeypatch, sh_degree=sh_degree)
    assert isinstance(ours.strategy, DefaultStrategy) and type(ours.strategy) is type(theirs.strategy)
    assert dataclasses.asdict(ours.strategy) == dataclasses.asdict(theirs.strategy)
    assert ours.strategy_state.keys() == theirs.strategy_state.keys()
    assert ours.strategy_state == theirs.strategy_state  # nothing accumulated yet: None statistics, scene scale

    extra = {"embeddings", "semantic_logits"}
    assert list(theirs.gauss_params) == [name for name in ours.gauss_params if name not in extra]
    for name, param in theirs.gauss_params.items():
        mine = ours.gauss_params[name]
        assert (mine.shape, mine.dtype, mine.device) == (param.shape, param.dtype, param.device), name
    num_points, cfg = theirs.num_points, ours.config
    assert ours.embeddings.shape == (num_points, cfg.embedding_dim) and ours.embeddings.dtype == torch.float32
    assert ours.semantic_logits is not None and ours.semantic_logits.shape == (num_points, cfg.num_semantic_classes)
    assert not ours.semantic_logits.any()  # only the semantic loss moves them (semantic_head_trained)

    for name in ("means", "scales", "features_dc", "features_rest", "opacities"):  # quats are random
        torch.testing.assert_close(ours.gauss_params[name], theirs.gauss_params[name], rtol=0, atol=0, msg=name)
    torch.testing.assert_close(ours.background_color, theirs.background_color, rtol=0, atol=0)
    assert (ours.step, ours.crop_box) == (theirs.step, theirs.crop_box)
