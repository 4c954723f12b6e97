"""The error type of bad user input (flags, data files, checkpoints), reported as one line without a traceback."""

from __future__ import annotations

from typing import Sequence


class InputError(ValueError):
    """Bad input found before work starts; the message names the file or flag and says how to fix it.

    ``ns-train`` (through :class:`unic_lift_ns.trainer.SegmentationTrainer`) and the ``unic-lift-*`` scripts print it
    as one red line and exit with code 2.
    """


def few(names: Sequence[str], limit: int = 5) -> str:
    """The first ``limit`` names and how many more, for one-line messages."""
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more
