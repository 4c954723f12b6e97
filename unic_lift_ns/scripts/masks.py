"""`unic-lift-masks`: write per-view instance (and semantic) masks for a capture with a 2D segmenter (see
`unic_lift_ns.masks.mask_writer`)."""

from __future__ import annotations

from unic_lift_ns.masks.mask_writer import MasksConfig
from unic_lift_ns.scripts.cli import run_cli


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-masks", MasksConfig, description=__doc__)


if __name__ == "__main__":
    entrypoint()
