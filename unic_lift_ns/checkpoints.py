"""Loading nerfstudio checkpoints with torch >= 2.6, whose `torch.load` is weights-only by default.

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
from typing import Iterator

import numpy as np
import torch

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
