"""Loading a trained run: one :func:`load_run` for eval, export and the bench, with one run-type check.

A run is the folder of an ``ns-train`` run (``config.yml``, ``nerfstudio_models/step-*.ckpt``). Moved runs load
from the checkpoint folder next to their ``config.yml``. Every failure is an :class:`~unic_lift_ns.errors.InputError`
(or FileNotFoundError) naming the flag and the file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import yaml
from nerfstudio.engine.trainer import TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.checkpoints import allow_nerfstudio_checkpoints, checkpoint_dir, named_checkpoint_errors
from unic_lift_ns.corrections import CORRECTIONS_FILE, load_corrections
from unic_lift_ns.errors import InputError
from unic_lift_ns.models.backbone import SegmentationSplatModel, SegmentationSplatModelConfig
from unic_lift_ns.models.unic_lift import UniCLiftModel
from unic_lift_ns.pipeline import SegmentationPipeline


@dataclass
class LoadedRun:
    """A trained run of ``unic-lift`` or one of the baselines, loaded from its latest checkpoint."""

    config_path: Path
    """The run's config.yml."""
    config: TrainerConfig
    """Its trainer configuration (checkpoint folder set to where the checkpoint was found)."""
    pipeline: SegmentationPipeline
    """The loaded pipeline, its model in eval mode."""
    step: int
    """Step of the loaded checkpoint."""

    @property
    def model(self) -> SegmentationSplatModel:
        return self.pipeline.model

    @property
    def is_unic_lift(self) -> bool:
        """Whether the model is the paper's (not a baseline's), e.g. for its decoding choices."""
        return type(self.model) is UniCLiftModel

    @property
    def name(self) -> str:
        """Method and step, e.g. ``unic-lift (step 999)``."""
        return f"{self.config.method_name} (step {self.step})"


def read_run_config(config_path: Path, flag: str = "--load-config") -> TrainerConfig:
    """The trainer configuration of a run of this plugin, refusing other files and other methods' runs."""
    if not config_path.is_file():
        raise FileNotFoundError(f"{flag}: no such file {config_path}")
    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, ImportError, AttributeError, TypeError) as err:
        raise InputError(f"{flag}: {config_path} is not a readable nerfstudio config ({err})") from err
    if not isinstance(config, TrainerConfig):
        raise InputError(f"{flag}: {config_path} is not a nerfstudio config.yml")
    if not isinstance(config.pipeline.model, SegmentationSplatModelConfig):
        raise InputError(
            f"{flag}: {config_path} is a '{config.method_name}' run ({type(config.pipeline.model).__name__}), "
            "not a run of unic-lift or its baselines"
        )
    if not config.pipeline.model.segmentation:
        raise InputError(
            f"{flag}: {config_path} was trained with --pipeline.model.segmentation False (plain Splatfacto): it has "
            "no instances to evaluate or export"
        )
    return config


def load_run(
    config_path: Path,
    test_mode: Literal["test", "val", "inference"] = "test",
    flag: str = "--load-config",
    corrections: bool = True,
) -> LoadedRun:
    """Load the latest checkpoint of a run; ``test_mode`` as nerfstudio's ``eval_setup`` ("inference" loads no
    images, "test" the eval views). With ``corrections``, a unic-lift run's ``instance_corrections.json`` (the
    viewer's corrections) is replayed on its labels."""
    from nerfstudio.utils.eval_utils import eval_setup

    allow_nerfstudio_checkpoints()
    config = read_run_config(config_path, flag)
    folder = checkpoint_dir(config_path, config, flag)

    def use_folder(loaded: TrainerConfig) -> TrainerConfig:
        loaded.relative_model_dir = folder  # absolute, so get_checkpoint_dir() returns it unchanged
        return loaded

    with named_checkpoint_errors(flag, folder):
        loaded, pipeline, _, step = eval_setup(config_path, test_mode=test_mode, update_config_callback=use_folder)
    run = LoadedRun(config_path, loaded, pipeline, step)
    corrections_file = config_path.parent / CORRECTIONS_FILE
    if corrections and run.is_unic_lift and corrections_file.exists():
        run.model.set_corrections(load_corrections(corrections_file))
        count = len(run.model.corrections.operations)
        CONSOLE.print(f"Replaying {count} label correction(s) from {corrections_file}", markup=False, soft_wrap=True)
    return run
