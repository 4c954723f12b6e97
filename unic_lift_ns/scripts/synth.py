"""`unic-lift-synth`: generate a Messy-Rooms-style benchmark scene (see `unic_lift_ns.synth.generate`)."""

from __future__ import annotations

from unic_lift_ns.scripts.cli import run_cli
from unic_lift_ns.synth.generate import SynthConfig


def entrypoint() -> None:
    """Entrypoint for use with pyproject scripts."""
    run_cli("unic-lift-synth", SynthConfig, description=__doc__)


if __name__ == "__main__":
    entrypoint()
