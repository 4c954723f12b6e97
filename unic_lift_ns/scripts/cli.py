"""What every unic-lift console script does: parse its tyro config, run it, and turn bad input into one red line."""

from __future__ import annotations

import sys
from typing import Any, Optional

import tyro
from nerfstudio.utils.rich_utils import CONSOLE

BAD_INPUT = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError)
"""Errors that mean bad flags or files: printed as ``<prog>: <message>`` with exit code 2, no traceback."""


def run_cli(prog: str, config_type: Any, description: Optional[str] = None) -> None:
    """Parse ``config_type`` (a dataclass with ``main()``, or a union of subcommands) from argv and run it."""
    tyro.extras.set_accent_color("bright_yellow")
    config = tyro.cli(config_type, description=description)
    try:
        config.main()
    except BAD_INPUT as err:
        CONSOLE.print(f"[bold red]{prog}: {err}")
        sys.exit(2)
