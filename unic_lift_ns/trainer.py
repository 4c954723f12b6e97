"""nerfstudio's Trainer with the three things a user's first runs need: resume that trains, Ctrl-C that keeps the
work, and bad input reported as one line.

- **Resume.** nerfstudio builds the optimisers before it loads a checkpoint, and Splatfacto's ``load_state_dict``
  swaps in new per-Gaussian tensors, so after ``--load-dir`` the optimisers would update tensors the model no
  longer uses. Here every optimiser is re-bound to the loaded parameters before its state is restored. The
  pipeline's extra state (random generators, view order, densification statistics; see
  :meth:`unic_lift_ns.pipeline.SegmentationPipeline.get_extra_state`) makes a resumed run continue as the uninterrupted
  one would.
- **Ctrl-C** (SIGINT) or SIGTERM (what ``timeout``, ``docker stop`` and SLURM send) during training finishes the
  current step, saves a checkpoint of it and exits with code 130 or 143; a second signal stops at once.
- **Nothing lost.** A run folder that already holds checkpoints is refused (before its config.yml is replaced)
  unless ``--load-dir``/``--load-checkpoint`` resumes it or ``--overwrite-checkpoints True`` is given, and the
  latest-only checkpoint cleanup removes only the ``step-*.ckpt`` files this process saved.
- **Bad input** (:class:`~unic_lift_ns.errors.InputError`, a missing file, a numeric flag out of its range, an
  output folder that cannot be written) is printed as one red line naming the file or flag and the process exits
  with code 2: flags and the output folder before config.yml is written, data and checkpoints before the first step
  (then the config.yml and the run folders that this run created are removed again).
"""

from __future__ import annotations

import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Dict, List, Literal, NoReturn, Optional, Type

from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

from unic_lift_ns.checkpoints import latest_checkpoint, load_checkpoint_file, named_checkpoint_errors
from unic_lift_ns.errors import InputError
from unic_lift_ns.flag_ranges import AT_LEAST_0, AT_LEAST_1, Range, check_flag_ranges

EXIT_BAD_INPUT = 2
"""Exit code of ``ns-train`` for bad input (as the ``unic-lift-*`` scripts)."""
EXIT_INTERRUPTED = 128 + signal.SIGINT
"""Exit code after Ctrl-C (the shell's convention for a process stopped by SIGINT)."""
EXIT_TERMINATED = 128 + signal.SIGTERM
"""Exit code after SIGTERM."""
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
"""Signals that stop training after the current step, with a checkpoint of it."""


def exit_bad_input(method_name: str, message: object) -> NoReturn:
    """Print ``ns-train <method>: <message>`` as one red line and exit with code 2."""
    CONSOLE.print(f"ns-train {method_name}: {message}", style="bold red", markup=False, soft_wrap=True)
    sys.exit(EXIT_BAD_INPUT)


@dataclass
class SegmentationTrainerConfig(TrainerConfig):
    """nerfstudio's trainer configuration, with the resume, signal, nothing-lost and bad-input handling of this
    module."""

    _target: Type = field(default_factory=lambda: SegmentationTrainer)
    overwrite_checkpoints: bool = False
    """Train into a run folder that already holds checkpoints without resuming them: config.yml is replaced and a
    checkpoint of the same step overwritten; the others are kept. Without it such a folder is refused."""

    flag_ranges: ClassVar[Dict[str, Range]] = {
        "steps_per_save": AT_LEAST_0, "steps_per_eval_batch": AT_LEAST_0, "steps_per_eval_image": AT_LEAST_0,
        "steps_per_eval_all_images": AT_LEAST_0, "max_num_iterations": AT_LEAST_1, "load_step": AT_LEAST_0,
    }  # fmt: skip
    """Allowed values of the trainer's numeric fields (0 = never, for the periodic ones)."""

    def check_flags(self) -> None:
        """Raise :class:`InputError` for a numeric flag of the trainer, the model or the datamanager out of range."""
        check_flag_ranges(self, "--")
        check_flag_ranges(self.pipeline.model, "--pipeline.model.")
        check_flag_ranges(self.pipeline.datamanager, "--pipeline.datamanager.")

    def check_run_folder(self) -> None:
        """Refuse a run folder holding checkpoints that this run neither resumes nor may overwrite."""
        if self.load_dir is not None or self.load_checkpoint is not None or self.overwrite_checkpoints:
            return
        folder = self.get_checkpoint_dir()
        found = sorted(path.name for path in folder.glob("*.ckpt")) if folder.is_dir() else []
        if found:
            raise InputError(
                f"--timestamp: {folder} already holds checkpoints ({', '.join(found[-3:])}); resume them with "
                f"--load-dir {folder}, choose another --timestamp or --output-dir, or pass --overwrite-checkpoints True"
            )

    def check_data(self) -> None:
        """Refuse a ``--data`` (the datamanager's, else its dataparser's) that does not exist."""
        data = self.pipeline.datamanager.data_path()
        if not data.exists():
            raise InputError(f"--data: no such file or folder {data}")

    def save_config(self) -> None:
        """Check the flags, the data path and the run folder, then write config.yml (nerfstudio's); bad input exits
        with code 2 before anything is written."""
        try:
            self.check_flags()
            self.check_data()
            self.check_run_folder()
            created = missing_folders(self.get_base_dir())
            super().save_config()
        except InputError as err:
            exit_bad_input(self.method_name, err)
        except OSError as err:
            exit_bad_input(self.method_name, f"--output-dir: cannot write the run folder {self.get_base_dir()} ({err})")
        self._created_run_folders = created  # set after the dump, so config.yml does not hold it

    def remove_unused_run_folder(self) -> None:
        """Undo :meth:`save_config` for a run that stopped before training: remove its config.yml and the folders it
        created, each only while nothing else is in it (a folder that existed before is never touched)."""
        created: List[Path] = getattr(self, "_created_run_folders", [])
        self._created_run_folders = []
        if created:
            (created[0] / "config.yml").unlink(missing_ok=True)
        for folder in created:
            if not folder.is_dir() or any(folder.iterdir()):
                return
            folder.rmdir()


def missing_folders(folder: Path) -> List[Path]:
    """``folder`` and those of its parents that do not exist yet, deepest first."""
    missing = []
    for path in (folder, *folder.parents):
        if path.exists():
            break
        missing.append(path)
    return missing


class SegmentationTrainer(Trainer):
    """Trainer of ``unic-lift`` and the baselines (see the module docstring)."""

    config: SegmentationTrainerConfig

    def setup(self, test_mode: Literal["test", "val", "inference"] = "val") -> None:
        """nerfstudio's setup (data, model, optimisers, viewer, checkpoint); bad input ends the process in one line."""
        self._stop_signal: Optional[int] = None
        self._last_completed_step = -1
        self._saved_checkpoints: List[Path] = []
        try:
            check_flag_ranges(self.config, "--")  # the model and the datamanager check theirs when built
            super().setup(test_mode)
        except (InputError, FileNotFoundError, NotADirectoryError) as err:
            self.config.remove_unused_run_folder()
            exit_bad_input(self.config.method_name, err)
        except KeyboardInterrupt:
            self.config.remove_unused_run_folder()
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
        with named_checkpoint_errors(flag, path):  # e.g. another --pipeline.model.embedding-dim
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
        """nerfstudio's training loop; Ctrl-C or SIGTERM saves the last completed step and exits with code 130 or
        143."""
        self._stop_signal = None
        previous = {signum: signal.signal(signum, self._on_stop_signal) for signum in STOP_SIGNALS}
        CONSOLE.log(f"Training from step {self._start_step}; Ctrl-C saves a checkpoint and stops")
        try:
            super().train()
        except KeyboardInterrupt:
            CONSOLE.print("[bold red]Interrupted twice: stopped without saving the current step")
            sys.exit(EXIT_INTERRUPTED)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        if self._stop_signal is not None:
            CONSOLE.print(
                f"[bold yellow]Interrupted: saved step {self.step} to {self.checkpoint_dir} "
                f"({signal.Signals(self._stop_signal).name}); resume with --load-dir {self.checkpoint_dir}"
            )
            sys.exit(128 + self._stop_signal)

    def _on_stop_signal(self, signum: int, frame: Any) -> None:
        """First Ctrl-C or SIGTERM: stop after the current step. Then Ctrl-C is Python's KeyboardInterrupt again
        and SIGTERM ends the process at once."""
        self._stop_signal = signum
        self.stop_training = True  # also ends a pause from the viewer
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)

    def save_checkpoint(self, step: int) -> None:
        """nerfstudio's checkpoint of ``step``; with ``save_only_latest_checkpoint`` the older ``step-*.ckpt`` files
        that this process saved are removed, and no other file (nerfstudio would delete every other ``*.ckpt``)."""
        only_latest = self.config.save_only_latest_checkpoint
        self.config.save_only_latest_checkpoint = False
        try:
            super().save_checkpoint(step)
        finally:
            self.config.save_only_latest_checkpoint = only_latest
        path = self.checkpoint_dir / f"step-{step:09d}.ckpt"
        if only_latest:
            for older in self._saved_checkpoints:
                if older != path:
                    older.unlink(missing_ok=True)
            self._saved_checkpoints.clear()
        if path not in self._saved_checkpoints:
            self._saved_checkpoints.append(path)

    def _after_train(self) -> None:
        """Save the last step that completed (after a stop signal the loop has already moved to the next index);
        after one the viewer is not kept open."""
        if self._stop_signal is not None:
            self.config.viewer.quit_on_train_completion = True
            if self._last_completed_step < 0:
                CONSOLE.print("[bold yellow]Interrupted before the first step: nothing to save")
                return
            self.step = self._last_completed_step
        super()._after_train()


UniCLiftTrainerConfig = SegmentationTrainerConfig
UniCLiftTrainer = SegmentationTrainer
"""The names that config.yml files written before #28 give these classes (``tests/test_old_configs.py`` loads such
files); new code uses the Segmentation names."""
