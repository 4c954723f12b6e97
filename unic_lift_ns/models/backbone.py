"""The segmentation backbone of every method: Splatfacto whose Gaussians also carry an embedding and semantic
logits, rendered like colour (UniC-Lift Eq. 3) along the colour pass's projection and depth order, with detached
geometry.

Segmentation channels never move means, scales, rotations or opacities and never reach the densification
statistics (UniC-Lift section 4). The model runs on any device: gsplat's kernels on CUDA, the pure-PyTorch
rasteriser elsewhere (no ``.cuda()`` anywhere). A method (UniC-Lift, the baselines) subclasses it and fills in its
hooks: :meth:`SegmentationSplatModel.segmentation_features`, :meth:`~SegmentationSplatModel.instance_losses`,
:meth:`~SegmentationSplatModel.gaussian_losses` and :meth:`~SegmentationSplatModel.decode_instances`.
"""

from __future__ import annotations

import inspect
import math
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Literal, Optional, Tuple, Type, TypeVar, Union
from typing import get_args, get_origin, get_type_hints

import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import (
    RGB2SH,
    SplatfactoModel,
    SplatfactoModelConfig,
    get_viewmat,
    num_sh_bases,
    random_quat_tensor,
)
from nerfstudio.utils.colors import get_color
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor
from torch.nn import Parameter

from unic_lift_ns.data.label_maps import resize_label_map
from unic_lift_ns.errors import InputError
from unic_lift_ns.flag_ranges import AT_LEAST_0, AT_LEAST_1, POSITIVE, UNIT, Range, check_flag_ranges, flag_name
from unic_lift_ns.instance_codes import instance_overlay, label_palette
from unic_lift_ns.losses import semantic_loss
from unic_lift_ns.lazy_lpips import LazyLPIPS
from unic_lift_ns.rasterization import rasterize, rasterize_with_features

SEMANTIC_IGNORE = 255
"""Value of unlabelled pixels in semantic masks."""
Cached = TypeVar("Cached")
# Splatfacto's get_viewmat is torch.compile'd; the viewer interrupts a render by raising from a trace hook, and when
# that lands inside the first compilation, dynamo re-raises it as an error that kills the viewer's render thread.
world_to_camera = inspect.unwrap(get_viewmat)


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
    }  # fmt: skip
    """Allowed values of the numeric fields (:mod:`unic_lift_ns.flag_ranges`), checked when the model is built."""
    decoding_fields: ClassVar[Tuple[str, ...]] = ()
    """The fields that only decide how a trained model labels pixels and Gaussians (no effect on training): what
    :meth:`SegmentationSplatModel.set_decoding` may change."""


class SegmentationSplatModel(SplatfactoModel):
    """Splatfacto with per-Gaussian embeddings and semantic logits, rendered detached, and label outputs."""

    config: SegmentationSplatModelConfig

    def populate_modules(self) -> None:
        """Splatfacto's Gaussians, plus embeddings and semantic logits.

        Mirrors nerfstudio 1.1.5 ``SplatfactoModel.populate_modules`` (nerfstudio/models/splatfacto.py, lines
        241-332), re-done rather than inherited because it calls ``.cuda()`` on the seed colours and builds LPIPS
        eagerly (which downloads AlexNet); everything else matches it, gsplat's ``DefaultStrategy`` arguments
        included.
        """
        cfg = self.config
        check_flag_ranges(cfg, "--pipeline.model.")
        if self.seed_points is not None and not cfg.random_init:
            means = self.seed_points[0].float()
        else:
            if not cfg.random_init:
                CONSOLE.print(
                    f"No point cloud came with the data: the Gaussians start from {cfg.num_random} random points, "
                    "which trains slowly and splits objects into many tiny instances. Run `ns-process-data images` "
                    "(COLMAP's sparse points become sparse_pc.ply) or use a dataparser that loads 3D points; "
                    "--pipeline.model.random-init True starts from random points on purpose.",
                    style="yellow", markup=False, soft_wrap=True,
                )  # fmt: skip
            means = (torch.rand((cfg.num_random, 3)) - 0.5) * cfg.random_scale
        if means.shape[0] == 0:
            raise ValueError("The initial point cloud is empty: no Gaussian to optimise")
        distances, _ = self.k_nearest_sklearn(means, 3)
        avg_dist = torch.from_numpy(distances).mean(dim=-1, keepdim=True).clamp(min=1e-7)
        num_points = means.shape[0]
        dim_sh = num_sh_bases(cfg.sh_degree)
        shs = torch.zeros((num_points, dim_sh, 3))
        if self.seed_points is not None and not cfg.random_init and self.seed_points[1].shape[0] > 0:
            rgb = self.seed_points[1].float() / 255
            shs[:, 0, :] = RGB2SH(rgb) if cfg.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
        else:
            shs[:, 0, :] = torch.rand(num_points, 3)
        params = {
            "means": means,
            "scales": torch.log(avg_dist.repeat(1, 3)),
            "quats": random_quat_tensor(num_points),
            "features_dc": shs[:, 0, :],
            "features_rest": shs[:, 1:, :],
            "opacities": torch.logit(0.1 * torch.ones(num_points, 1)),
            "embeddings": torch.randn(num_points, cfg.embedding_dim),
        }
        if cfg.num_semantic_classes > 0:
            params["semantic_logits"] = torch.zeros(num_points, cfg.num_semantic_classes)
        self.gauss_params = torch.nn.ParameterDict({k: Parameter(v) for k, v in params.items()})

        self.camera_optimizer = cfg.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = LazyLPIPS(enabled=cfg.compute_lpips)
        self.step = 0
        self.crop_box = None
        # Boolean [N] mask of the Gaussians drawn outside training (the viewer's isolate/hide); None = all.
        self.gaussian_filter: Optional[Tensor] = None
        self.overlay_opacity = 0.5  # how strongly the instance_overlay output tints RGB (the viewer's slider)
        self.highlighted_label: Optional[int] = None  # the one instance instance_overlay shows (the viewer's pick)
        if cfg.use_bilateral_grid:
            raise ValueError("--pipeline.model.use-bilateral-grid is not supported by unic-lift")
        self.background_color = (
            torch.tensor([0.1490, 0.1647, 0.2157]) if cfg.background_color == "random" else get_color(cfg.background_color)
        )
        self.strategy = DefaultStrategy(
            prune_opa=cfg.cull_alpha_thresh,
            grow_grad2d=cfg.densify_grad_thresh,
            grow_scale3d=cfg.densify_size_thresh,
            grow_scale2d=cfg.split_screen_size,
            prune_scale3d=cfg.cull_scale_thresh,
            prune_scale2d=cfg.cull_screen_size,
            refine_scale2d_stop_iter=cfg.stop_screen_size_at,
            refine_start_iter=cfg.warmup_length,
            refine_stop_iter=cfg.stop_split_at,
            reset_every=cfg.reset_alpha_every * cfg.refine_every,
            refine_every=cfg.refine_every,
            pause_refine_after_reset=self.num_train_data + cfg.refine_every,
            absgrad=cfg.use_absgrad,
            revised_opacity=False,
            verbose=True,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=1.0)
        # name -> (value, step it was built at, weak reference to the means tensor it was built from, key)
        self._gaussian_caches: Dict[str, Tuple[Any, int, Callable[[], Optional[Tensor]], Any]] = {}
        self._check_semantic_classes()

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
    def semantic_logits(self) -> Optional[Tensor]:
        return self.gauss_params["semantic_logits"] if "semantic_logits" in self.gauss_params else None

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize every per-Gaussian parameter (embeddings included) to the checkpoint's Gaussian count."""
        if "gauss_params.means" not in dict:
            raise ValueError(f"Not a checkpoint of {type(self).__name__}: 'gauss_params.means' is missing")
        missing = [name for name in self.gauss_params if f"gauss_params.{name}" not in dict]
        if missing:
            raise ValueError(f"Not a checkpoint of {type(self).__name__}: missing per-Gaussian parameters {missing}")
        return super().load_state_dict(dict, **kwargs)

    def get_extra_state(self) -> Dict[str, Any]:
        """Training state outside the parameters, saved in checkpoints so that a resumed run continues as the
        uninterrupted one: gsplat's densification statistics (subclasses add their samplers' generators)."""
        return {"strategy_state": self.strategy_state}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.strategy_state = {
            key: value.to(self.device) if isinstance(value, Tensor) else value
            for key, value in state["strategy_state"].items()
        }

    def semantic_head_trained(self) -> bool:
        """Whether the semantic head saw semantic masks: its logits start at 0 and only the semantic loss moves
        them, so a run without ``semantic_masks/`` keeps them all 0."""
        return self.semantic_logits is not None and bool((self.semantic_logits != 0).any())

    def get_gaussian_param_groups(self) -> Dict[str, List[Parameter]]:
        return {name: [param] for name, param in self.gauss_params.items()}

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = self.get_gaussian_param_groups()
        self.camera_optimizer.get_param_groups(param_groups=groups)
        return groups

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

    def render_rgb(
        self, camera: Cameras, params: Dict[str, Tensor], features: Optional[Tensor] = None
    ) -> Tuple[Dict[str, Union[Tensor, List]], Optional[Tensor]]:
        """Splatfacto's outputs (rgb, depth, accumulation, background) of the Gaussians ``params``, and ``features``
        [N, S] composited in the same rasterisation pass with detached geometry (Eq. 3) as a [H, W, S] map (None
        without ``features``).

        Mirrors nerfstudio 1.1.5 ``SplatfactoModel.get_outputs`` (nerfstudio/models/splatfacto.py, lines 543-649)
        minus its crop (:meth:`drawn_gaussians`) and bilateral grid (refused in :meth:`populate_modules`): the
        intrinsics go to the model's device instead of ``.cuda()``, :func:`~unic_lift_ns.rasterization.rasterize`
        picks gsplat's kernels or the PyTorch rasteriser, and ``get_viewmat`` runs uncompiled.
        """
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds
        scale = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale)
        viewmat = world_to_camera(camera_to_world)
        K = camera.get_intrinsics_matrices().to(self.device)
        W, H = int(camera.width.item()), int(camera.height.item())
        self.last_size = (H, W)
        camera.rescale_output_resolution(scale)

        render_mode = "RGB+ED" if self.config.output_depth_during_training or not self.training else "RGB"
        colors = torch.cat((params["features_dc"][:, None, :], params["features_rest"]), dim=1)
        if self.config.sh_degree > 0:
            sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        else:
            colors, sh_degree = torch.sigmoid(colors).squeeze(1), None
        geometry = dict(
            means=params["means"],
            quats=params["quats"],
            scales=torch.exp(params["scales"]),
            opacities=torch.sigmoid(params["opacities"]).squeeze(-1),
        )
        raster = dict(colors=colors, viewmats=viewmat, Ks=K, width=W, height=H, packed=False, near_plane=0.01,
                      far_plane=1e10, render_mode=render_mode, sh_degree=sh_degree, sparse_grad=False,
                      absgrad=self.strategy.absgrad, rasterize_mode=self.config.rasterize_mode)  # fmt: skip
        feature_map = None
        if features is not None:
            render, feature_maps, alpha, self.info = rasterize_with_features(**geometry, features=features, **raster)
            feature_map = feature_maps[0]
        else:
            render, alpha, self.info = rasterize(**geometry, **raster)
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)

        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        depth = None
        if render_mode == "RGB+ED":
            depth = torch.where(alpha > 0, render[..., 3:4], render[..., 3:4].detach().max()).squeeze(0)
        if background.shape[0] == 3 and not self.training:
            background = background.expand(H, W, 3)
        outputs: Dict[str, Union[Tensor, List]] = {
            "rgb": rgb.squeeze(0),
            "depth": depth,  # type: ignore[dict-item]
            "accumulation": alpha.squeeze(0),
            "background": background,
        }
        return outputs, feature_map

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
