"""UniC-Lift on Splatfacto: a learnable embedding per Gaussian, rendered like colour (Eq. 3), trained with the
cluster-contrastive (Eq. 4), triplet (Eq. 5) and 3D neighbourhood (Eq. 6) losses of Eq. 7, and decoded to
instance labels by Embedding-to-Label (sigmoid, threshold 0.5, bits read as an integer).

Segmentation channels are rendered with detached geometry, so segmentation losses never move means, scales,
rotations or opacities and never reach the densification statistics (paper section 4). The model runs on any
device: gsplat's kernels on CUDA, the pure-PyTorch rasteriser elsewhere (no ``.cuda()`` anywhere).
"""

from __future__ import annotations

import inspect
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Literal, Optional, Tuple, Type, Union

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
from unic_lift_ns.labels import embedding_to_label, instance_overlay, label_palette, max_labels
from unic_lift_ns.losses import (
    boundary_triplets,
    cluster_contrastive_loss,
    neighbour_pairs,
    neighbourhood_loss,
    random_triplets,
    semantic_loss,
    triplet_loss,
)
from unic_lift_ns.metrics import LazyLPIPS
from unic_lift_ns.rasterization import rasterize

SEMANTIC_IGNORE = 255
MAX_EMBEDDING_DIM = 24
"""Largest d: a d-bit label is exact in float32 (the viewer's ``instance_label``), int32 PLY properties and
32-bit label maps."""
# Splatfacto's get_viewmat is torch.compile'd; the viewer interrupts a render by raising from a trace hook, and when
# that lands inside the first compilation, dynamo re-raises it as an error that kills the viewer's render thread.
world_to_camera = inspect.unwrap(get_viewmat)


@dataclass
class UniCLiftModelConfig(SplatfactoModelConfig):
    """UniC-Lift model: Splatfacto plus per-Gaussian instance embeddings (paper section 3.3)."""

    _target: Type = field(default_factory=lambda: UniCLiftModel)
    embedding_dim: int = 12
    """Dimension d of the per-Gaussian embedding v (Eq. 3), 1 to 24; at most 2^d instances can be told apart."""
    cluster_loss_weight: float = 0.1
    """lambda_cluster of Eq. 7 (cluster-contrastive loss, Eq. 4)."""
    triplet_loss_weight: float = 0.1
    """lambda_triplet of Eq. 7 (triplet loss, Eq. 5)."""
    neighbour_loss_weight: float = 0.1
    """lambda_3D of Eq. 7 (3D neighbourhood loss, Eq. 6)."""
    triplet_margin: float = 1.0
    """Margin delta of the triplet loss (Eq. 5)."""
    max_triplets: int = 3000
    """Maximum number of triplets per step."""
    triplet_mining: Literal["boundary", "random"] = "boundary"
    """Where triplets come from: 'boundary' (hard mining at mask boundaries, paper) or 'random' (appendix A.3)."""
    triplet_start: Optional[int] = None
    """Step from which the triplet loss is on; None = once densification has stopped (stop_split_at)."""
    use_linear_layer: bool = True
    """Apply the learnable d x d linear layer W before the triplet loss (z = W sigmoid(V)); off = ablation."""
    neighbour_tau: float = 0.01
    """tau of Eq. 6: Gaussians whose centres are within this SQUARED distance are neighbours."""
    neighbour_loss_start: int = 15000
    """Step from which the 3D neighbourhood loss is on (paper: 15000, appendix B.2)."""
    neighbour_refresh_every: int = 1000
    """Recompute the neighbour pairs with a KD-tree every this many steps (and when Gaussians change)."""
    max_neighbours: int = 16
    """At most this many neighbours per Gaussian in Eq. 6."""
    num_semantic_classes: int = 2
    """Classes of the optional semantic head (Messy Rooms: background, object); 0 disables it."""
    semantic_loss_weight: float = 0.1
    """Weight of the semantic cross-entropy loss."""
    instance_decoding: Literal["rendered-embedding", "gaussian-votes"] = "rendered-embedding"
    """How pixels get labels outside training. 'rendered-embedding' (paper, Sec. 3.3): Embedding-to-Label of the
    rendered V. 'gaussian-votes': Embedding-to-Label of every Gaussian first, then each pixel decodes the
    alpha-composited +-1 bits of the Gaussians whose semantic class is not 0 (stuff does not vote; the semantic
    guidance of Contrastive Lift, appendix B.3); when the semantic head saw no semantic masks, every Gaussian votes. Still O(n) and clustering-free; it removes the third codes that
    blends of unequal embeddings (and of untrained background embeddings) decode to at object boundaries."""
    compute_lpips: bool = True
    """Report LPIPS in evaluation when its weights can be loaded (they are never downloaded during training)."""


class UniCLiftModel(SplatfactoModel):
    """Splatfacto with instance embeddings, UniC-Lift losses and label-decoding outputs."""

    config: UniCLiftModelConfig

    def populate_modules(self) -> None:
        """Splatfacto's Gaussians, plus embeddings, semantic logits and the linear layer W.

        Re-done rather than inherited because Splatfacto's version calls ``.cuda()`` on the seed colours and
        builds LPIPS eagerly (which downloads AlexNet); everything else matches it.
        """
        cfg = self.config
        if not 1 <= cfg.embedding_dim <= MAX_EMBEDDING_DIM:
            raise InputError(
                f"--pipeline.model.embedding-dim must be in [1, {MAX_EMBEDDING_DIM}], got {cfg.embedding_dim}: labels "
                f"have d bits and must stay exact in the viewer's float32 instance_label output"
            )
        if self.seed_points is not None and not cfg.random_init:
            means = self.seed_points[0].float()
        else:
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
        self.triplet_projection = torch.nn.Linear(cfg.embedding_dim, cfg.embedding_dim, bias=False)
        torch.nn.init.eye_(self.triplet_projection.weight)

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
        self._neighbour_pairs: Optional[Tensor] = None
        self._neighbour_pairs_step = -1
        self._neighbour_pairs_means: Callable[[], Optional[Tensor]] = lambda: None  # weak ref to their means
        self._triplet_generator = torch.Generator()
        self._triplet_generator.manual_seed(0)
        self._votes_gated: Optional[bool] = None  # whether the last gaussian-votes decoding gated by semantics
        self._check_segment_counts()
        self._check_semantic_classes()

    def _check_segment_counts(self) -> None:
        """Refuse masks with more segments than the 2^d labels the embedding can encode."""
        counts: Dict = self.kwargs.get("metadata", {}).get("segment_counts", {}) or {}
        limit = max_labels(self.config.embedding_dim)
        too_many = {path: n for path, n in counts.items() if n > limit}
        if too_many:
            path, n = next(iter(too_many.items()))
            raise InputError(
                f"{path} has {n} segments, more than the 2^{self.config.embedding_dim} = {limit} labels of a "
                f"{self.config.embedding_dim}-d embedding ({len(too_many)} mask file(s) affected); "
                "raise --pipeline.model.embedding-dim"
            )

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
    def semantic_logits(self) -> Optional[Tensor]:
        return self.gauss_params["semantic_logits"] if "semantic_logits" in self.gauss_params else None

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize every per-Gaussian parameter (embeddings included) to the checkpoint's Gaussian count."""
        if "gauss_params.means" not in dict:
            raise ValueError("Not a unic-lift checkpoint: 'gauss_params.means' is missing")
        missing = [name for name in self.gauss_params if f"gauss_params.{name}" not in dict]
        if missing:
            raise ValueError(f"Not a unic-lift checkpoint: missing per-Gaussian parameters {missing}")
        return super().load_state_dict(dict, **kwargs)

    def get_extra_state(self) -> Dict[str, Any]:
        """Training state outside the parameters, saved in checkpoints so that a resumed run continues as the
        uninterrupted one: gsplat's densification statistics and the triplet sampler's generator."""
        return {"strategy_state": self.strategy_state, "triplet_generator": self._triplet_generator.get_state()}

    def set_extra_state(self, state: Dict[str, Any]) -> None:
        self.strategy_state = {
            key: value.to(self.device) if isinstance(value, Tensor) else value
            for key, value in state["strategy_state"].items()
        }
        self._triplet_generator.set_state(state["triplet_generator"])

    def semantic_head_trained(self) -> bool:
        """Whether the semantic head saw semantic masks: its logits start at 0 and only the semantic loss moves
        them, so a run without ``semantic_masks/`` keeps them all 0."""
        return self.semantic_logits is not None and bool((self.semantic_logits != 0).any())

    def get_gaussian_param_groups(self) -> Dict[str, List[Parameter]]:
        return {name: [param] for name, param in self.gauss_params.items()}

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = self.get_gaussian_param_groups()
        groups["triplet_projection"] = list(self.triplet_projection.parameters())
        self.camera_optimizer.get_param_groups(param_groups=groups)
        return groups

    # ----------------------------------------------------------------------------------------- rendering

    def get_outputs(self, camera: Cameras) -> Dict[str, Union[Tensor, List]]:
        """RGB with gradients to the geometry; embeddings and semantic logits with detached geometry."""
        if not isinstance(camera, Cameras):
            raise TypeError("UniCLiftModel.get_outputs expects a Cameras object")
        if self.training:
            assert camera.shape[0] == 1, "Only one camera at a time"
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds

        keep = None
        if self.crop_box is not None and not self.training:
            keep = self.crop_box.within(self.means).squeeze()
            if keep.sum() == 0:
                return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        if self.gaussian_filter is not None and not self.training:
            if self.gaussian_filter.shape[0] != self.num_points:  # stale after densification: draw everything
                self.gaussian_filter = None
            else:
                keep = self.gaussian_filter if keep is None else keep & self.gaussian_filter
                if not bool(keep.any()):
                    return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        params = {name: (p[keep] if keep is not None else p) for name, p in self.gauss_params.items()}

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
        common = dict(viewmats=viewmat, Ks=K, width=W, height=H, packed=False, near_plane=0.01, far_plane=1e10,
                      rasterize_mode=self.config.rasterize_mode)  # fmt: skip
        render, alpha, self.info = rasterize(
            **geometry, colors=colors, render_mode=render_mode, sh_degree=sh_degree, sparse_grad=False,
            absgrad=self.strategy.absgrad, **common,
        )  # fmt: skip
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)

        # Eq. 3: the segmentation features are composited with the same weights, geometry detached.
        features = self.segmentation_features(params)
        seg, _, _ = rasterize(
            **{k: v.detach() for k, v in geometry.items()}, colors=torch.cat(list(features.values()), dim=-1),
            render_mode="RGB", **common,
        )  # fmt: skip
        rendered = dict(zip(features, seg[0].split([f.shape[-1] for f in features.values()], dim=-1)))
        embedding = rendered["embedding"]

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
            "embedding": embedding,
        }
        if self.training:  # the other feature maps are for the losses only: the viewer cannot colour them
            outputs.update({name: value for name, value in rendered.items() if name != "embedding"})
        else:  # decoded outputs are for the viewer and evaluation, not the training step
            labels = self.decode_instances(rendered)
            outputs["instance"] = label_palette(labels)
            outputs["instance_label"] = labels.float().unsqueeze(-1)
            outputs["instance_overlay"] = instance_overlay(
                outputs["rgb"], labels, self.overlay_opacity, self.highlighted_label  # type: ignore[arg-type]
            )
            if "semantic_logits" in rendered:
                classes = rendered["semantic_logits"].argmax(dim=-1)
                outputs["semantics"] = label_palette(classes)
                outputs["semantic_label"] = classes.float().unsqueeze(-1)
        return outputs

    def segmentation_features(self, params: Dict[str, Tensor]) -> Dict[str, Tensor]:
        """Per-Gaussian features rendered with detached geometry, by output name: the embedding v (Eq. 3) and the
        semantic logits. Subclasses (the baselines) add their own channels here."""
        features = {"embedding": params["embeddings"]}
        if "semantic_logits" in params:
            features["semantic_logits"] = params["semantic_logits"]
        if self.config.instance_decoding == "gaussian-votes" and not self.training:
            votes = torch.where(params["embeddings"] > 0, 1.0, -1.0)  # each Gaussian's own bits as +-1
            gated = "semantic_logits" in params and self.semantic_head_trained()
            if gated:
                votes = votes * (params["semantic_logits"].argmax(dim=-1, keepdim=True) != 0)
            self._log_votes_gating(gated)
            features["label_votes"] = votes
        return features

    def _log_votes_gating(self, gated: bool) -> None:
        """Say once (and again when it changes) whether gaussian-votes leaves background Gaussians out."""
        if gated == self._votes_gated:
            return
        self._votes_gated = gated
        if gated:
            CONSOLE.log("gaussian-votes: Gaussians of semantic class 0 (background) do not vote")
        else:
            CONSOLE.log(
                "[yellow]gaussian-votes: the semantic head saw no semantic masks, so every Gaussian votes "
                "(add semantic_masks/ to keep background Gaussians out of the vote)"
            )

    def decode_instances(self, maps: Dict[str, Tensor]) -> Tensor:
        """Instance labels [...] int64 from feature maps [..., c] named as in :meth:`segmentation_features`
        (rendered pixels, or one row per Gaussian). Embedding-to-Label (Sec. 3.3): bits of the embedding or, with
        'gaussian-votes', of the rendered votes; no clustering."""
        return embedding_to_label(maps.get("label_votes", maps["embedding"]))

    @torch.no_grad()
    def gaussian_labels(self) -> Tensor:
        """The instance label of every Gaussian: [N] int64."""
        maps = {"embedding": self.embeddings}
        if self.semantic_logits is not None:
            maps["semantic_logits"] = self.semantic_logits
        return self.decode_instances(maps)

    # -------------------------------------------------------------------------------------------- losses

    def _mask_at_render_size(self, mask: Tensor, outputs: Dict) -> Tensor:
        height, width = outputs["embedding"].shape[:2]
        return resize_label_map(mask.to(self.device), height, width).reshape(-1)

    def _neighbours(self) -> Tensor:
        """Neighbour pairs of Eq. 6, found with a KD-tree every ``neighbour_refresh_every`` steps and whenever the
        Gaussians change: gsplat's refinement (and loading a checkpoint) replaces the ``means`` tensor, whose
        indices the pairs refer to."""
        stale = (
            self._neighbour_pairs is None
            or self._neighbour_pairs_means() is not self.gauss_params["means"]
            or self.step - self._neighbour_pairs_step >= self.config.neighbour_refresh_every
        )
        if stale:
            self._neighbour_pairs = neighbour_pairs(self.means.detach(), self.config.neighbour_tau, self.config.max_neighbours)
            self._neighbour_pairs_step = self.step
            self._neighbour_pairs_means = weakref.ref(self.gauss_params["means"])
        assert self._neighbour_pairs is not None
        return self._neighbour_pairs

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> Dict[str, Tensor]:
        """Eq. 7: rendering loss + lambda_cluster L_cluster + lambda_triplet L_triplet + lambda_3D L_3D (+ semantics)."""
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if not self.training:
            return loss_dict
        cfg = self.config
        if "instance_mask" in batch:
            loss_dict.update(self.instance_losses(outputs, self._mask_at_render_size(batch["instance_mask"], outputs)))
        if self.semantic_logits is not None and "semantic_mask" in batch:
            target = self._mask_at_render_size(batch["semantic_mask"], outputs)
            logits = outputs["semantic_logits"].reshape(-1, cfg.num_semantic_classes)
            loss_dict["semantic_loss"] = cfg.semantic_loss_weight * semantic_loss(logits, target, SEMANTIC_IGNORE)
        if cfg.neighbour_loss_weight > 0 and self.step >= cfg.neighbour_loss_start:
            loss_dict["neighbour_loss"] = cfg.neighbour_loss_weight * neighbourhood_loss(self.embeddings, self._neighbours())
        return loss_dict

    def instance_losses(self, outputs: Dict[str, Tensor], segments: Tensor) -> Dict[str, Tensor]:
        """The 2D instance losses on the rendered embedding: lambda_cluster Eq. 4 and lambda_triplet Eq. 5.

        Args:
            outputs: training outputs of :meth:`get_outputs`.
            segments: [H*W] int64 mask segment ids at render size.
        """
        cfg = self.config
        embedding = outputs["embedding"]
        squashed = torch.sigmoid(embedding.reshape(-1, cfg.embedding_dim))
        loss_dict = {"cluster_loss": cfg.cluster_loss_weight * cluster_contrastive_loss(squashed, segments)}
        triplet_start = cfg.stop_split_at if cfg.triplet_start is None else cfg.triplet_start
        if cfg.triplet_loss_weight > 0 and self.step >= triplet_start:
            mine = boundary_triplets if cfg.triplet_mining == "boundary" else random_triplets
            anchor, positive, negative = mine(
                segments.reshape(embedding.shape[:2]), cfg.max_triplets, self._triplet_generator
            )
            z = self.triplet_projection(squashed) if cfg.use_linear_layer else squashed
            loss_dict["triplet_loss"] = cfg.triplet_loss_weight * triplet_loss(
                z, anchor, positive, negative, cfg.triplet_margin
            )
        return loss_dict

    # ------------------------------------------------------------------------------------------- metrics

    def get_image_metrics_and_images(
        self, outputs: Dict[str, Tensor], batch: Dict[str, Tensor]
    ) -> Tuple[Dict[str, float], Dict[str, Tensor]]:
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        predicted_rgb = outputs["rgb"]
        gt = torch.moveaxis(gt_rgb, -1, 0)[None]
        pred = torch.moveaxis(predicted_rgb, -1, 0)[None]
        metrics = {"psnr": float(self.psnr(gt, pred).item()), "ssim": float(self.ssim(gt, pred))}
        lpips = self.lpips(gt, pred)
        if lpips is not None:
            metrics["lpips"] = lpips
        images = {"img": torch.cat([gt_rgb, predicted_rgb], dim=1), "instance": outputs["instance"]}
        if "semantics" in outputs:
            images["semantics"] = outputs["semantics"]
        return metrics, images
