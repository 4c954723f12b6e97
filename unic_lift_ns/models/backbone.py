"""The segmentation backbone of every method: Splatfacto whose Gaussians also carry an embedding and semantic
logits, rendered like colour (UniC-Lift Eq. 3) along the colour pass's projection and depth order, with detached
geometry.

Segmentation channels never move means, scales, rotations or opacities and never reach the densification
statistics (UniC-Lift section 4). The colour model is
:class:`~unic_lift_ns.models.portable_splatfacto.PortableSplatfacto`, which runs on any device. A method (UniC-Lift, the baselines) subclasses it and fills in its
hooks: :meth:`SegmentationSplatModel.segmentation_features`, :meth:`~SegmentationSplatModel.instance_losses`,
:meth:`~SegmentationSplatModel.gaussian_losses` and :meth:`~SegmentationSplatModel.decode_instances`.
"""

from __future__ import annotations

import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Tuple, Type, TypeVar, Union
from typing import get_args, get_origin, get_type_hints

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import SplatfactoModelConfig
from torch import Tensor

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.errors import InputError
from unic_lift_ns.flag_ranges import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Range, check_flag_ranges, flag_name
from unic_lift_ns.instance_codes import instance_overlay, label_palette
from unic_lift_ns.losses import semantic_loss
from unic_lift_ns.models.capped_strategy import CappedStrategy
from unic_lift_ns.models.portable_splatfacto import PortableSplatfacto

SEMANTIC_IGNORE = 255
"""Value of unlabelled pixels in semantic masks."""
Cached = TypeVar("Cached")


@dataclass
class SegmentationSplatModelConfig(SplatfactoModelConfig):
    """Splatfacto plus a per-Gaussian embedding and semantic head; a method's config subclasses it."""

    _target: Type = field(default_factory=lambda: SegmentationSplatModel)
    embedding_dim: int = 12
    """Dimension of the per-Gaussian embedding rendered like colour."""
    segmentation: bool = True
    """Render and train the segmentation channels; False = plain Splatfacto (no embedding, instance or semantic
    output, no segmentation loss), the baseline of the overhead benchmarks. Training also skips the segmentation
    render while every loss on it has weight 0."""
    num_semantic_classes: int = 2
    """Classes of the optional semantic head (Messy Rooms: background, object); 0 disables it."""
    semantic_loss_weight: float = 0.1
    """Weight of the semantic cross-entropy loss."""
    max_gaussians: Optional[int] = None
    """Densification grows at most to this many Gaussians: a refinement that would pass it grows only those with the
    largest view-space gradients (models/capped_strategy.py; not in Splatfacto). None = no ceiling. For long CPU
    runs, whose low-resolution phase doubles the count at every refinement."""
    compute_lpips: bool = True
    """Report LPIPS in evaluation when its weights can be loaded (they are never downloaded during training)."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        # Splatfacto's numeric fields
        "eval_num_rays_per_chunk": AT_LEAST_1, "warmup_length": AT_LEAST_0, "refine_every": AT_LEAST_1,
        "resolution_schedule": AT_LEAST_1, "num_downscales": AT_LEAST_0, "cull_alpha_thresh": UNIT,
        "cull_scale_thresh": POSITIVE, "reset_alpha_every": AT_LEAST_1, "densify_grad_thresh": POSITIVE,
        "densify_size_thresh": AT_LEAST_0, "n_split_samples": AT_LEAST_1, "sh_degree_interval": AT_LEAST_1,
        "cull_screen_size": AT_LEAST_0, "split_screen_size": AT_LEAST_0, "stop_screen_size_at": AT_LEAST_0,
        "num_random": AT_LEAST_1, "random_scale": POSITIVE, "ssim_lambda": UNIT, "stop_split_at": AT_LEAST_0,
        "sh_degree": Range(0, 4, why="gsplat's spherical harmonics go to degree 4"), "max_gauss_ratio": Range(1),
        "grid_shape": AT_LEAST_1, "camera_optimizer.trans_l2_penalty": AT_LEAST_0,
        "camera_optimizer.rot_l2_penalty": AT_LEAST_0,
        # the segmentation channels
        "embedding_dim": AT_LEAST_1, "num_semantic_classes": AT_LEAST_0, "semantic_loss_weight": AT_LEAST_0,
        "max_gaussians": AT_LEAST_1,
    }  # fmt: skip
    """Allowed values of the numeric fields (:mod:`unic_lift_ns.flag_ranges`), checked when the model is built."""
    decoding_fields: ClassVar[Tuple[str, ...]] = ()
    """The fields that only decide how a trained model labels pixels and Gaussians (no effect on training): what
    :meth:`SegmentationSplatModel.set_decoding` may change."""

    def decoding_settings(self) -> Tuple[Any, ...]:
        """The values of :attr:`decoding_fields`: the key of what is cached from the decoding's labels."""
        return tuple(getattr(self, name) for name in self.decoding_fields)


class SegmentationSplatModel(PortableSplatfacto):
    """Splatfacto with per-Gaussian embeddings and semantic logits, rendered detached, and label outputs."""

    config: SegmentationSplatModelConfig

    def populate_modules(self) -> None:
        """Splatfacto's Gaussians, metrics and strategy (:class:`PortableSplatfacto`) with embeddings and semantic
        logits, once the config's numbers are in range."""
        check_flag_ranges(self.config, "--pipeline.model.")
        super().populate_modules()
        if self.config.max_gaussians is not None:
            self.strategy = CappedStrategy.of(self.strategy, self.config.max_gaussians)
        # Boolean [N] mask of the Gaussians drawn outside training (the viewer's isolate/hide); None = all.
        self.gaussian_filter: Optional[Tensor] = None
        self.overlay_opacity = 0.5  # how strongly the instance_overlay output tints RGB (the viewer's slider)
        self.highlighted_label: Optional[int] = None  # the one instance instance_overlay shows (the viewer's pick)
        # name -> (value, step it was built at, weak reference to the means tensor it was built from, key)
        self._gaussian_caches: Dict[str, Tuple[Any, int, Callable[[], Optional[Tensor]], Any]] = {}
        self._check_semantic_classes()

    def extra_gaussian_params(self, num_points: int) -> Dict[str, Tensor]:
        """A random embedding per Gaussian and zero semantic logits (the head has seen no mask yet)."""
        cfg = self.config
        params = {"embeddings": torch.randn(num_points, cfg.embedding_dim)}
        if cfg.num_semantic_classes > 0:
            params["semantic_logits"] = torch.zeros(num_points, cfg.num_semantic_classes)
        return params

    def _check_semantic_classes(self) -> None:
        """Refuse semantic masks with class ids the semantic head does not have (found when data loads)."""
        largest: Dict = self.kwargs.get("metadata", {}).get("semantic_max_ids", {}) or {}
        classes = self.config.num_semantic_classes
        outside = {path: n for path, n in largest.items() if n >= classes}
        if outside and classes > 0:
            path, n = max(outside.items(), key=lambda item: item[1])
            raise InputError(
                f"{path} has semantic class {n}, but the semantic head has {classes} classes (0..{classes - 1}; "
                f"{SEMANTIC_IGNORE} = ignore; {len(outside)} mask file(s) affected): raise "
                "--pipeline.model.num-semantic-classes or fix the mask"
            )

    @property
    def embeddings(self) -> Tensor:
        return self.gauss_params["embeddings"]

    @property
    def num_segments(self) -> Optional[int]:
        """The largest segment id of the datamanager's masks (it numbers each mask's segments 1..K), which sizes
        the losses' segment slots; None without that metadata (the losses then number the ids themselves)."""
        counts: Dict = self.kwargs.get("metadata", {}).get("segment_counts", {}) or {}
        return max(counts.values()) if counts else None

    @property
    def train_cameras(self) -> Optional[Cameras]:
        """The train views (the datamanager passes them in the model's metadata), which the collision split and
        Contrastive Lift's clustering project into or render; None without them."""
        return self.kwargs.get("metadata", {}).get("train_cameras")

    @property
    def train_instance_masks(self) -> Optional[Callable[[], List[Optional[Tensor]]]]:
        """What gives the train views' instance masks ([H, W] int64, 0 = unlabelled; None for a view without one),
        which the mask split reads: the datamanager passes it in the model's metadata; None without it."""
        return self.kwargs.get("metadata", {}).get("train_instance_masks")

    @property
    def semantic_logits(self) -> Optional[Tensor]:
        return self.gauss_params["semantic_logits"] if "semantic_logits" in self.gauss_params else None

    def semantic_head_trained(self) -> bool:
        """Whether the semantic head saw semantic masks: its logits start at 0 and only the semantic loss moves
        them, so a run without ``semantic_masks/`` keeps them all 0."""
        return self.semantic_logits is not None and bool((self.semantic_logits != 0).any())

    # ----------------------------------------------------------------------------------------- rendering

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """RGB with gradients to the geometry; embeddings and semantic logits with detached geometry."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"{type(self).__name__}.get_outputs expects a Cameras object")
        keep = self.drawn_gaussians()
        if keep is not None and not bool(keep.any()):
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        params = {name: (p[keep] if keep is not None else p) for name, p in self.gauss_params.items()}
        outputs, rendered = self.render_segmentation(camera, params)
        if not rendered:
            return outputs
        outputs["embedding"] = rendered["embedding"]
        if self.training:  # the other feature maps are for the losses only: the viewer cannot colour them
            outputs.update({name: value for name, value in rendered.items() if name != "embedding"})
        else:  # decoded outputs are for the viewer and evaluation, not the training step
            outputs.update(self.label_outputs(outputs["rgb"], rendered))  # type: ignore[arg-type]
        return outputs

    def render_segmentation(
        self, camera: Cameras, params: Dict[str, Tensor]
    ) -> Tuple[Dict[str, Union[Tensor, List]], Dict[str, Tensor]]:
        """:meth:`render_rgb`'s outputs and the maps [H, W, c] of the method's :meth:`segmentation_features`, by name,
        composited with the colours' weights and detached geometry in the colour pass (Eq. 3); no maps while
        :meth:`renders_segmentation` is False."""
        features = self.segmentation_features(params) if self.renders_segmentation() else {}
        stacked = torch.cat(list(features.values()), dim=-1) if features else None
        outputs, maps = self.render_rgb(camera, params, stacked)
        if maps is None:
            return outputs, {}
        return outputs, dict(zip(features, maps.split([f.shape[-1] for f in features.values()], dim=-1)))

    def label_outputs(self, rgb: Tensor, maps: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """The decoded outputs of the rendered maps: instance labels (:meth:`decode_instances`) as colours, values
        and an overlay on ``rgb``, and with semantic logits the semantic classes as colours and values."""
        labels = self.decode_instances(maps)
        outputs = {
            "instance": label_palette(labels),
            "instance_label": labels.float().unsqueeze(-1),
            "instance_overlay": instance_overlay(rgb, labels, self.overlay_opacity, self.highlighted_label),
        }
        if "semantic_logits" in maps:
            classes = maps["semantic_logits"].argmax(dim=-1)
            outputs["semantics"] = label_palette(classes)
            outputs["semantic_label"] = classes.float().unsqueeze(-1)
        return outputs

    def drawn_gaussians(self) -> Optional[Tensor]:
        """[N] bool mask of the Gaussians :meth:`get_outputs` draws outside training (inside the crop box and the
        viewer's isolate/hide filter); None = all of them."""
        if self.training:
            return None
        keep = None if self.crop_box is None else self.crop_box.within(self.means).reshape(-1)
        if self.gaussian_filter is not None:
            if self.gaussian_filter.shape[0] != self.num_points:  # stale after densification: draw everything
                self.gaussian_filter = None
            else:
                keep = self.gaussian_filter if keep is None else keep & self.gaussian_filter
        return keep

    def renders_segmentation(self) -> bool:
        """Whether :meth:`get_outputs` renders the segmentation features: unless ``segmentation`` is off, always
        outside training, and in training while some loss on them has a positive weight."""
        if not self.config.segmentation:
            return False
        return not self.training or any(weight > 0 for weight in self.rendered_loss_weights())

    def rendered_loss_weights(self) -> List[float]:
        """Weights of the losses on the rendered segmentation features (the semantic loss here; methods add
        theirs)."""
        return [self.config.semantic_loss_weight] if self.semantic_logits is not None else []

    def segmentation_features(self, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per-Gaussian features rendered with detached geometry, by output name: the embedding v (Eq. 3) and the
        semantic logits. Methods add their own channels here."""
        features = {"embedding": params["embeddings"]}
        if "semantic_logits" in params:
            features["semantic_logits"] = params["semantic_logits"]
        return features

    def decode_instances(self, maps: Dict[str, Tensor]) -> Tensor:
        """Instance labels [...] int64 from feature maps [..., c] named as in :meth:`segmentation_features`
        (rendered pixels, or one row per Gaussian): the method's decoding."""
        raise NotImplementedError(f"{type(self).__name__} does not say how features become instance labels")

    def set_decoding(self, **settings: Any) -> None:
        """Label pixels and Gaussians with other ``decoding_fields`` of the config (e.g. UniC-Lift's
        ``instance_decoding="nearest-code"``), as the viewer, ``unic-lift-eval`` and the bench do. A setting that is
        not one, or a value its flag would refuse, raises :class:`InputError` and changes nothing."""
        cfg = self.config
        unknown = sorted(set(settings) - set(cfg.decoding_fields))
        if unknown:
            raise InputError(
                f"{type(self).__name__} has no decoding setting {unknown[0]!r} (it has: "
                f"{', '.join(cfg.decoding_fields) or 'none'})"
            )
        hints = get_type_hints(type(cfg))
        for name, value in settings.items():
            if get_origin(hints[name]) is Literal and value not in get_args(hints[name]):
                choices = ", ".join(map(str, get_args(hints[name])))
                raise InputError(f"--pipeline.model.{flag_name(name)}: {value!r} is not one of {choices}")
        before = {name: getattr(cfg, name) for name in settings}
        for name, value in settings.items():
            setattr(cfg, name, value)
        try:
            check_flag_ranges(cfg, "--pipeline.model.")
            self.decoding_changed()
        except InputError:
            for name, value in before.items():
                setattr(cfg, name, value)
            raise

    def decoding_changed(self) -> None:
        """Check the new decoding settings (raise :class:`InputError`) and drop what was fitted to the old ones."""

    @torch.no_grad()
    def gaussian_labels(self) -> Tensor:
        """The instance label of every Gaussian: [N] int64."""
        maps = {"embedding": self.embeddings}
        if self.semantic_logits is not None:
            maps["semantic_logits"] = self.semantic_logits
        return self.decode_instances(maps)

    # -------------------------------------------------------------------------------------------- losses

    def _mask_at_render_size(self, mask: Tensor, outputs: Dict) -> Tensor:
        height, width = outputs["rgb"].shape[:2]
        return resize_label_map(mask.to(self.device), height, width).reshape(-1)

    def gaussian_cache(
        self, name: str, build: Callable[[], Cached], refresh_every: Optional[int], key: Any = None
    ) -> Cached:
        """``build()`` (e.g. KD-tree neighbours of the Gaussians), cached under ``name`` and built again whenever
        the Gaussians change (gsplat's refinement and loading a checkpoint replace the ``means`` tensor, whose
        indices a cached value refers to), every ``refresh_every`` steps (None: only then) and whenever ``key``
        (anything else the value depends on, compared with ``==``) does."""
        cached = self._gaussian_caches.get(name)
        means = self.gauss_params["means"]
        stale = refresh_every is not None and cached is not None and self.step - cached[1] >= refresh_every
        if cached is None or cached[2]() is not means or cached[3] != key or stale:
            cached = (build(), self.step, weakref.ref(means), key)
            self._gaussian_caches[name] = cached
        return cached[0]

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Splatfacto's rendering loss + the method's instance losses (where the view has a mask) + the semantic
        loss + the method's losses on the Gaussians themselves."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if not self.training or not self.config.segmentation:
            return loss_dict
        loss_dict.update(self.gaussian_losses())
        if "embedding" not in outputs:  # every loss on the rendered features has weight 0
            return loss_dict
        cfg = self.config
        semantics = self._mask_at_render_size(batch["semantic_mask"], outputs) if "semantic_mask" in batch else None
        if "instance_mask" in batch:
            segments = self._mask_at_render_size(batch["instance_mask"], outputs)
            loss_dict.update(self.instance_losses(outputs, segments, semantics))
        if self.semantic_logits is not None and semantics is not None:
            logits = outputs["semantic_logits"].reshape(-1, cfg.num_semantic_classes)
            loss_dict["semantic_loss"] = cfg.semantic_loss_weight * semantic_loss(logits, semantics, SEMANTIC_IGNORE)
        return loss_dict

    def instance_losses(
        self, outputs: Dict[str, Tensor], segments: Tensor, semantics: Optional[Tensor]
    ) -> Dict[str, Tensor]:
        """The method's losses on a view with an instance mask.

        Args:
            outputs: training outputs of :meth:`get_outputs`.
            segments: [H*W] int64 mask segment ids at render size.
            semantics: [H*W] int64 semantic-mask classes at render size, or None for a view without one.
        """
        return {}

    def gaussian_losses(self) -> Dict[str, Tensor]:
        """The method's losses on the Gaussians themselves (3D regularisation), every training step."""
        return {}

    # ------------------------------------------------------------------------------------------- metrics

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        """Splatfacto's metrics (colour-corrected ones included) without the LPIPS that could not be loaded, and
        its images plus the decoded instance and semantic maps."""
        metrics, images = super().get_image_metrics_and_images(outputs, batch)
        metrics = {name: value for name, value in metrics.items() if not math.isnan(value)}
        images.update({name: outputs[name] for name in ("instance", "semantics") if name in outputs})
        return metrics, images
