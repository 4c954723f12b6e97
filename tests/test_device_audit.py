"""The CUDA path's device rules on the CPU (issue #27): a training step, every decoding, the collision split,
``gaussian_labels()`` and an export of each method run under :class:`device_audit.DeviceAudit`, which raises on any
tensor our code makes on the host and mixes with the model's, and records device-to-host syncs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import List, Tuple

import pytest
import torch
from device_audit import DeviceAudit, DeviceLeak, unaudited_kernels
from nerfstudio.engine.callbacks import TrainingCallbackLocation

from unic_lift_ns.method_configs import contrastive_lift_trainer_config, gaussian_clustering_trainer_config
from unic_lift_ns.export.instances import export_instances, model_splats
from unic_lift_ns.rasterization import use_kernels
from unic_lift_ns.rasterization.reference_kernels import reference_kernels
from unic_lift_ns.method_configs import unic_lift_trainer_config

# the Gaussians are refined every REFINE_EVERY steps; every loss of each method is on from step 0
REFINE_EVERY = 3
AUDITED_STEPS = range(2, 5)  # a refinement (step 3) and a step on the refined Gaussians
# the CUDA branch of our rasterisation runs on gsplat's kernels' references, outside the audit
KERNELS = unaudited_kernels(reference_kernels())
FACTORIES = {
    "unic-lift": unic_lift_trainer_config,
    "contrastive-lift": contrastive_lift_trainer_config,
    "gaussian-clustering": gaussian_clustering_trainer_config,
}


def every_loss_from_step_0(method: str, model) -> None:
    model.warmup_length, model.refine_every, model.stop_split_at = 1, REFINE_EVERY, 1000
    if method == "unic-lift":
        model.triplet_start, model.neighbour_loss_start = 0, 0
    if method == "gaussian-clustering":
        model.contrastive_every, model.spatial_every = 1, 1


def make_trainer(method: str, scene: Path, output_dir: Path):
    config = FACTORIES[method]()
    config.pipeline.datamanager.data = scene
    config.machine.device_type = "cpu"
    config.vis = "tensorboard"
    config.output_dir = output_dir
    every_loss_from_step_0(method, config.pipeline.model)
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    return trainer


def training_step(trainer, step: int) -> None:
    """One iteration of nerfstudio's training loop: the callbacks before, the step, the callbacks after."""
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def decodings(model) -> List[Tuple[str, bool]]:
    """Every decoding the viewer offers for ``model``, and UniC-Lift's 'gaussian-votes' with the collision split."""
    from unic_lift_ns.viewer import decoding_options

    options = [(decoding, False) for decoding in decoding_options(model)]
    return options + ([("gaussian-votes", True)] if hasattr(model.config, "split_collisions") else [])


@pytest.fixture(scope="module", params=sorted(FACTORIES))
def trained(request, tiny_scene: Path, tmp_path_factory):
    """(method, trainer) after audited training steps, a refinement among them; the syncs of the last step."""
    trainer = make_trainer(request.param, tiny_scene, tmp_path_factory.mktemp("audit"))
    training_step(trainer, 0)
    training_step(trainer, 1)
    for step in AUDITED_STEPS:  # rasterised by our CUDA branch, gsplat's kernels replaced by their references
        with use_kernels(KERNELS), DeviceAudit() as audit:
            training_step(trainer, step)
    return request.param, trainer, audit


def test_a_training_step_leaks_nothing_and_syncs_like_splatfacto(trained) -> None:
    """No leak in any audited step (the fixture raises); in the last one, the only syncs of ours are Splatfacto's
    own two, reading the image size in the colour render it mirrors."""
    method, trainer, audit = trained
    ours = [f"{re.sub(r':[0-9]+ ', ' ', sync.where)}: {sync.call}" for sync in audit.syncs_of("ours")]
    assert ours == ["models/portable_splatfacto.py (render_rgb): Tensor.item"] * 2, (method, ours)


def test_decodings_labels_and_export_leak_nothing(trained, tmp_path: Path) -> None:
    """Each decoding renders a view, labels the Gaussians (through the collision split where it is on) and exports
    two instances without a leak."""
    method, trainer, _ = trained
    model = trainer.pipeline.model
    model.eval()
    camera, _ = trainer.pipeline.datamanager.next_eval_image(0)
    try:
        for decoding, split in decodings(model):
            with use_kernels(KERNELS), DeviceAudit():
                model.set_decoding(instance_decoding=decoding, **({"split_collisions": True} if split else {}))
                model.get_outputs(camera)
                labels = model.gaussian_labels()
                splats, numbers = model_splats(model, labels)
                chosen = sorted(set(numbers.tolist()))[:2]
                export_instances(splats, numbers, chosen, tmp_path / f"{decoding}-{split}", progress=False)
            assert not split or "collision_split" in model._gaussian_caches
    finally:
        model.train()


def test_the_audit_finds_leaks_and_syncs() -> None:
    here = f"{Path(__file__).parent}/"
    weights = torch.ones(4)
    with pytest.raises(DeviceLeak, match=r"test_device_audit.py:\d+ .*no device="):
        with DeviceAudit(ours=here):
            weights + torch.zeros(4)
    with pytest.raises(DeviceLeak, match="from_numpy"):
        with DeviceAudit(ours=here):
            torch.cat([weights, torch.from_numpy(weights.numpy().copy())])
    with DeviceAudit(ours=here) as audit:
        moved = weights * torch.zeros(4).to(weights.device)  # moved to the model's device: no leak
        scalar = weights * torch.tensor(2.0)  # a 0-dim host tensor mixes on CUDA too
        picked = weights[torch.arange(2)]  # host indices may index device tensors
        count = int(weights.sum()) + len(weights[weights > 0]) + weights.nonzero().shape[0]
    assert moved.shape == scalar.shape == (4,) and picked.shape == (2,) and count == 12
    assert [sync.call for sync in audit.syncs] == ["Tensor.__int__", "Tensor.__getitem__", "Tensor.nonzero"]
    assert all(sync.owner == "ours" and "test_device_audit.py" in sync.where for sync in audit.syncs)
    with pytest.raises(DeviceLeak, match=r"gsplat's isect_offset_encode gets a tensor made on the host \(\(3,\)"):
        with DeviceAudit(ours=here):
            KERNELS.isect_offset_encode(torch.zeros(3, dtype=torch.int64), 1, 1, 1)

