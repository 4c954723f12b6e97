"""Loading nerfstudio checkpoints with torch >= 2.6, whose `torch.load` is weights-only by default.

nerfstudio 1.1.5 saves optimizer and scheduler states that hold numpy scalars (learning rates computed with
numpy), which the weights-only unpickler refuses, so `ns-eval`, `ns-viewer --load-config` and `ns-export` fail.
Allow-listing exactly those numpy globals (the scalar constructor and the float64 dtype) keeps weights-only loading (no arbitrary code) and makes the
checkpoints load again.
"""

from __future__ import annotations

import numpy as np
import torch


def allow_nerfstudio_checkpoints() -> None:
    """Allow the numpy scalar globals found in nerfstudio checkpoints in weights-only `torch.load`."""
    add = getattr(torch.serialization, "add_safe_globals", None)
    if add is not None:  # torch < 2.4 has no weights-only default, nothing to do
        add([np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))])
