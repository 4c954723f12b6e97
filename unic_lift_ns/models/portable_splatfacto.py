"""Splatfacto that runs on any device: nerfstudio 1.1.5's ``SplatfactoModel`` with the methods that call ``.cuda()``
or gsplat directly re-done (the initial Gaussians, gsplat's ``DefaultStrategy`` and the colour render), rasterising
through :mod:`unic_lift_ns.rasterization` (gsplat's kernels on CUDA, the PyTorch rasteriser elsewhere).

Everything here mirrors upstream line for line where it can; ``tests/test_splatfacto_drift.py`` fails when the
mirrored upstream methods change.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, List, Optional, Tuple, Union

import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import RGB2SH, SplatfactoModel, get_viewmat, num_sh_bases, random_quat_tensor
from nerfstudio.utils.colors import get_color
from nerfstudio.utils.rich_utils import CONSOLE
from pytorch_msssim import SSIM
from torch import Tensor
from torch.nn import Parameter

from unic_lift_ns.lazy_lpips import LazyLPIPS
from unic_lift_ns.rasterization import rasterize, rasterize_with_features

# Splatfacto's get_viewmat is torch.compile'd; the viewer interrupts a render by raising from a trace hook, and when
# that lands inside the first compilation, dynamo re-raises it as an error that kills the viewer's render thread.
world_to_camera = inspect.unwrap(get_viewmat)


class PortableSplatfacto(SplatfactoModel):
    """Splatfacto on any device; subclasses add per-Gaussian parameters with :meth:`extra_gaussian_params`."""

    def populate_modules(self) -> None:
        """Splatfacto's Gaussians (and :meth:`extra_gaussian_params`), metrics, background and strategy.

        Mirrors nerfstudio 1.1.5 ``SplatfactoModel.populate_modules`` (nerfstudio/models/splatfacto.py, lines
        241-332), re-done rather than inherited because it calls ``.cuda()`` on the seed colours and builds LPIPS
        eagerly (which downloads AlexNet); everything else matches it, gsplat's ``DefaultStrategy`` arguments
        included.
        """
        cfg = self.config
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
            **self.extra_gaussian_params(num_points),
        }
        self.gauss_params = torch.nn.ParameterDict({k: Parameter(v) for k, v in params.items()})

        self.camera_optimizer = cfg.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        from torchmetrics.image import PeakSignalNoiseRatio

        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.lpips = LazyLPIPS(enabled=cfg.compute_lpips)
        self.step = 0
        self.crop_box = None
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

    def extra_gaussian_params(self, num_points: int) -> Dict[str, Tensor]:
        """Initial values of per-Gaussian parameters beyond Splatfacto's, by name (drawn after Splatfacto's)."""
        return {}

    def load_state_dict(self, dict, **kwargs):  # type: ignore[override]
        """Resize every per-Gaussian parameter (the extra ones included) to the checkpoint's Gaussian count."""
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

    def get_gaussian_param_groups(self) -> Dict[str, List[Parameter]]:
        return {name: [param] for name, param in self.gauss_params.items()}

    def get_param_groups(self) -> Dict[str, List[Parameter]]:
        groups = self.get_gaussian_param_groups()
        self.camera_optimizer.get_param_groups(param_groups=groups)
        return groups

    def render_rgb(
        self, camera: Cameras, params: Dict[str, Tensor], features: Optional[Tensor] = None
    ) -> Tuple[Dict[str, Union[Tensor, List]], Optional[Tensor]]:
        """Splatfacto's outputs (rgb, depth, accumulation, background) of the Gaussians ``params``, and ``features``
        [N, S] composited in the same rasterisation pass with detached geometry (Eq. 3) as a [H, W, S] map (None
        without ``features``).

        Mirrors nerfstudio 1.1.5 ``SplatfactoModel.get_outputs`` (nerfstudio/models/splatfacto.py, lines 543-649)
        minus its crop (the caller picks ``params``) and bilateral grid (refused in :meth:`populate_modules`): the
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
