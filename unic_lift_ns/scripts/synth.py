"""`unic-lift-synth`: generate a Messy-Rooms-style benchmark scene (see `unic_lift_ns.synth.generate`)."""

from __future__ import annotations

import sys

import tyro
from rich.console import Console

from unic_lift_ns.synth.generate import SynthConfig, generate_scene


def entrypoint() -> None:
    config = tyro.cli(SynthConfig, description=__doc__)
    try:
        generate_scene(config)
    except (ValueError, FileExistsError) as err:
        Console(stderr=True).print(f"[bold red]unic-lift-synth: {err}")
        sys.exit(2)


if __name__ == "__main__":
    entrypoint()
