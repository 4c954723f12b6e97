"""What every unic-lift console script does: parse its tyro config, run it, and turn bad input into one red line."""

from __future__ import annotations

import signal
import sys
from types import FrameType
from typing import Any, Optional

import tyro
from nerfstudio.utils.rich_utils import CONSOLE

BAD_INPUT = (FileNotFoundError, FileExistsError, NotADirectoryError, IsADirectoryError, ValueError)
"""Errors that mean bad flags or files: printed as ``<prog>: <message>`` with exit code 2, no traceback."""


def _terminate(signum: int, frame: Optional[FrameType]) -> None:
    """SIGTERM handler: leave through SystemExit (code 128 + signal) so that ``finally`` blocks remove temporary
    files, as on Ctrl-C."""
    raise SystemExit(128 + signum)


def run_cli(prog: str, config_type: Any, description: Optional[str] = None) -> None:
    """Parse ``config_type`` (a dataclass with ``main()``, or a union of subcommands) from argv and run it.

    While ``main()`` runs, SIGTERM exits with code 143 through SystemExit instead of killing the process outright.
    """
    tyro.extras.set_accent_color("bright_yellow")
    config = tyro.cli(config_type, description=description)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        config.main()
    except BAD_INPUT as err:
        # one line whatever the terminal width; file names in the message are not read as rich markup
        CONSOLE.print(f"{prog}: {err}", style="bold red", markup=False, emoji=False, highlight=False, soft_wrap=True)
        sys.exit(2)
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)
