"""Finding and loading nerfstudio checkpoints (a run's folder, its latest ``step-*.ckpt``), with torch >= 2.6, whose
`torch.load` is weights-only by default.

nerfstudio 1.1.5 saves optimizer and scheduler states that hold numpy scalars (learning rates computed with
numpy), which the weights-only unpickler refuses, so `ns-eval`, `ns-viewer --load-config` and `ns-export` fail.
Allow-listing exactly those numpy globals (the scalar constructor and the float64 dtype) keeps weights-only loading (no arbitrary code) and makes the
checkpoints load again. Failures to read a checkpoint are reported naming it (:func:`named_checkpoint_errors`).
"""

from __future__ import annotations

import pickle
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Dict, Iterator, Optional

import numpy as np
import torch
from nerfstudio.engine.trainer import TrainerConfig

from unic_lift_ns.errors import InputError


def allow_nerfstudio_checkpoints() -> None:
    """Allow the numpy scalar globals found in nerfstudio checkpoints in weights-only `torch.load`."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights-only default, nothing to do
        add([np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))])


MAX_DETAIL = 300
"""Characters of the underlying error shown in a checkpoint error's one line."""
CHECKPOINT_READ_ERRORS = (EOFError, RuntimeError, pickle.UnpicklingError, zipfile.BadZipFile)
"""What reading a truncated, empty or foreign checkpoint (or one whose tensors do not fit the config) raises."""


@contextmanager
def named_checkpoint_errors(flag: str, where: Path) -> Iterator[None]:
    """Re-raise a failure to read or load a checkpoint as an :class:`InputError` naming ``flag`` and ``where``."""
    try:
        yield
    except CHECKPOINT_READ_ERRORS as err:
        detail = " ".join(str(err).split())  # load_state_dict lists every mismatch on lines of its own
        if len(detail) > MAX_DETAIL:
            detail = detail[:MAX_DETAIL] + " ..."
        hint = "; was it trained with other --pipeline.model flags (e.g. embedding-dim)?" if "state_dict" in detail else ""
        raise InputError(f"{flag}: cannot load the checkpoint of {where} ({type(err).__name__}: {detail}){hint}") from err


def checkpoint_dir(config_path: Path, config: TrainerConfig, flag: str) -> Path:
    """The run's checkpoint folder: next to config.yml (a moved run), else where the config says."""
    folders = (config_path.parent / config.relative_model_dir, config.get_checkpoint_dir())
    for folder in folders:
        if folder.is_dir() and any(folder.glob("step-*.ckpt")):
            return folder.resolve()
    raise FileNotFoundError(f"{flag}: no step-*.ckpt checkpoint next to {config_path} or in {folders[1]}")


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
