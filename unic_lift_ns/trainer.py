"""nerfstudio's Trainer with the three things a user's first runs need: resume that trains, Ctrl-C that keeps the
work, and bad input reported as one line.

- **Resume.** nerfstudio builds the optimisers before it loads a checkpoint, and Splatfacto's ``load_state_dict``
  swaps in new per-Gaussian tensors, so after ``--load-dir`` the optimisers would update tensors the model no
  longer uses. Here every optimiser is re-bound to the loaded parameters before its state is restored. The
  pipeline's extra state (random generators, view order, densification statistics; see
  :meth:`unic_lift_ns.pipeline.UniCLiftPipeline.get_extra_state`) makes a resumed run continue as the uninterrupted
  one would.
- **Ctrl-C** (SIGINT) during training finishes the current step, saves a checkpoint of it and exits with code 130;
  a second Ctrl-C stops at once.
- **Bad input** (:class:`~unic_lift_ns.errors.InputError`, a missing file) found while data and checkpoint load
  is printed as one red line and the process exits with code 2 before the first step.
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Literal, Optional, Type

import torch
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.checkpoints import named_checkpoint_errors
from unic_lift_ns.errors import InputError

EXIT_BAD_INPUT = 2
"""Exit code of ``ns-train`` for bad input (as the ``unic-lift-*`` scripts)."""
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Exit code after Ctrl-C (the shell's convention for a process stopped by SIGINT)."""


@dataclass
class UniCLiftTrainerConfig(TrainerConfig):
    """nerfstudio's trainer configuration, with the resume, Ctrl-C and bad-input handling of this module."""

    _target: Type = field(default_factory=lambda: UniCLiftTrainer)


def load_checkpoint_file(path: Path, flag: str) -> Dict[str, Any]:
    """Load a nerfstudio checkpoint on the CPU, or raise :class:`InputError` naming ``path`` and ``flag``."""
    if not path.is_file():
        raise InputError(f"{flag}: checkpoint {path} does not exist")
    if path.stat().st_size == 0:
        raise InputError(f"{flag}: checkpoint {path} is empty (0 bytes; was its writing interrupted?)")
    with named_checkpoint_errors(flag, path):
        state = torch.load(path, map_location="cpu")
    missing = [key for key in ("step", "pipeline", "optimizers") if not isinstance(state, dict) or key not in state]
    if missing:
        raise InputError(f"{flag}: {path} is not a nerfstudio checkpoint (missing {', '.join(missing)})")
    return state


def latest_checkpoint(load_dir: Path, load_step: Optional[int]) -> Path:
    """``load_dir/step-<load_step>.ckpt``, or the newest ``step-*.ckpt`` there; other files are ignored."""
    if not load_dir.is_dir():
        raise InputError(f"--load-dir: {load_dir} is not a folder")
    if load_step is not None:
        return load_dir / f"step-{load_step:09d}.ckpt"
    numbers = (path.stem[len("step-") :] for path in load_dir.glob("step-*.ckpt"))
    steps = sorted(int(number) for number in numbers if number.isdigit())
    if not steps:
        raise InputError(f"--load-dir: no step-*.ckpt checkpoint in {load_dir}")
    return load_dir / f"step-{steps[-1]:09d}.ckpt"


class UniCLiftTrainer(Trainer):
    """Trainer of ``unic-lift`` and the baselines (see the module docstring)."""

    config: UniCLiftTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """nerfstudio's setup (data, model, optimisers, viewer, checkpoint); bad input ends the process in one line."""
        self._interrupted = False
        self._last_completed_step = -1
        try:
            super().setup(test_mode)
        except (InputError, FileNotFoundError, NotADirectoryError) as err:
            CONSOLE.print(f"ns-train {self.config.method_name}: {err}", style="bold red", markup=False, soft_wrap=True)
            sys.exit(EXIT_BAD_INPUT)
        except KeyboardInterrupt:
            CONSOLE.print("[bold red]Interrupted while loading: nothing trained, nothing saved")
            sys.exit(EXIT_INTERRUPTED)
        self.callbacks.append(
            TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self._step_completed)
        )

    def _step_completed(self, step: int) -> None:
        self._last_completed_step = step

    def _load_checkpoint(self) -> None:
        """Load ``--load-dir`` / ``--load-checkpoint`` with the optimisers bound to the loaded parameters."""
        if self.config.load_dir is not None:
            path, flag = latest_checkpoint(self.config.load_dir, self.config.load_step), "--load-dir"
        elif self.config.load_checkpoint is not None:
            path, flag = self.config.load_checkpoint, "--load-checkpoint"
        else:
            CONSOLE.print("No Nerfstudio checkpoint to load, so training from scratch.")
            return
        state = load_checkpoint_file(path, flag)
        self._start_step = state["step"] + 1
        self._last_completed_step = state["step"]
        self.pipeline.load_pipeline(state["pipeline"], state["step"])
        self.bind_optimizers()
        unknown = sorted(set(state["optimizers"]) - set(self.optimizers.optimizers))
        if unknown:
            raise InputError(f"{flag}: {path} has optimisers for parameter groups this run lacks: {unknown}")
        self.optimizers.load_optimizers(state["optimizers"])
        if "schedulers" in state and self.config.load_scheduler:
            self.optimizers.load_schedulers(state["schedulers"])
        self.grad_scaler.load_state_dict(state["scalers"])
        CONSOLE.print(f"Done loading Nerfstudio checkpoint from {path}: training continues at step {self._start_step}")

    def bind_optimizers(self) -> None:
        """Point every optimiser at the pipeline's current parameters (``load_state_dict`` may replace them)."""
        for name, params in self.pipeline.get_param_groups().items():
            if name not in self.optimizers.optimizers:
                continue
            group = self.optimizers.optimizers[name].param_groups[0]
            if [p.shape for p in group["params"]] != [p.shape for p in params] or any(
                a is not b for a, b in zip(group["params"], params)
            ):
                self.optimizers.optimizers[name].state.clear()  # stale state of the replaced tensors
                group["params"] = list(params)
            self.optimizers.parameters[name] = list(params)

    def train(self) -> None:
        """nerfstudio's training loop; Ctrl-C saves the last completed step and exits with code 130."""
        self._interrupted = False
        previous = signal.signal(signal.SIGINT, self._on_interrupt)
        CONSOLE.log(f"Training from step {self._start_step}; Ctrl-C saves a checkpoint and stops")
        try:
            super().train()
        except KeyboardInterrupt:
            CONSOLE.print("[bold red]Interrupted twice: stopped without saving the current step")
            sys.exit(EXIT_INTERRUPTED)
        finally:
            signal.signal(signal.SIGINT, previous)
        if self._interrupted:
            CONSOLE.print(
                f"[bold yellow]Interrupted: saved step {self.step} to {self.checkpoint_dir}; resume with "
                f"--load-dir {self.checkpoint_dir}"
            )
            sys.exit(EXIT_INTERRUPTED)

    def _on_interrupt(self, signum: int, frame: Any) -> None:
        """First Ctrl-C: stop after the current step. Then Ctrl-C is Python's KeyboardInterrupt again."""
        self._interrupted = True
        self.stop_training = True  # also ends a pause from the viewer
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def _after_train(self) -> None:
        """Save the last step that completed (after Ctrl-C the loop has already moved to the next index); after
        Ctrl-C the viewer is not kept open."""
        if self._interrupted:
            self.config.viewer.quit_on_train_completion = True
            if self._last_completed_step < 0:
                CONSOLE.print("[bold yellow]Interrupted before the first step: nothing to save")
                return
            self.step = self._last_completed_step
        super()._after_train()
