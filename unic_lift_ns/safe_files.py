"""Writing files without following links and without replacing files of other programs.

A file is written under a fresh random name in its folder, opened with ``O_CREAT | O_EXCL | O_NOFOLLOW`` (a planted
link or file there fails the open), and only then put in place: hard-linked to a free name (``link`` fails if the
name is taken meanwhile) or renamed over a regular file whose content starts with the caller's ``signature`` (one
this package wrote earlier). A link, a folder or another program's file under the final name is refused with
``FileExistsError``; rename replaces a link itself, never the file it points to.
"""

from __future__ import annotations

import json
import os
import secrets
import stat
from pathlib import Path
from typing import Any, BinaryIO, Callable, Dict, Union

PathLike = Union[str, Path]


def is_ours(path: PathLike, signature: bytes) -> bool:
    """Whether ``path`` is a regular file (not a link) whose content starts with ``signature``."""
    try:
        if not stat.S_ISREG(os.lstat(path).st_mode):
            return False
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return False
    with os.fdopen(fd, "rb") as file:  # fstat: the name may have been swapped since lstat
        return stat.S_ISREG(os.fstat(fd).st_mode) and file.read(len(signature)) == signature


def _taken(path: PathLike) -> FileExistsError:
    return FileExistsError(
        f"{path} exists and is not a file unic-lift-ns wrote (a link, a folder or another program's file); "
        "move it away"
    )


def check_replaceable(path: PathLike, signature: bytes) -> None:
    """Refuse a ``path`` that exists and is not a file of ours (see :func:`is_ours`).

    Raises:
        FileExistsError: naming ``path``.
    """
    if os.path.lexists(path) and not is_ours(path, signature):
        raise _taken(path)


def move_into_place(source: PathLike, path: PathLike, signature: bytes) -> None:
    """Rename the file ``source`` to ``path`` (same file system): to a free name, or over a file of ours.

    Raises:
        FileExistsError: ``path`` is taken by anything else (``source`` is left where it is).
    """
    if is_ours(path, signature):
        os.replace(source, path)
        return
    try:
        os.link(source, path, follow_symlinks=False)
    except FileExistsError:  # taken since is_ours looked
        raise _taken(path) from None
    except OSError:  # a file system without hard links (FAT, some network mounts): rename to the name still free
        if os.path.lexists(path):
            raise _taken(path) from None
        os.rename(source, path)
        return
    os.unlink(source)


def write_file(path: PathLike, write: Callable[[BinaryIO], None], signature: bytes) -> Path:
    """Write ``path`` atomically with ``write`` (called with the open binary file; what it writes must start with
    ``signature``), without following links, over nothing or over a file of ours; nothing is left on failure.

    Raises:
        FileExistsError: ``path`` exists and is not a file of ours; nothing is written.
    """
    path = Path(path)
    check_replaceable(path, signature)
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
    try:
        with os.fdopen(fd, "wb") as file:
            write(file)
        move_into_place(temporary, path, signature)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def json_signature(generator: str) -> bytes:
    """How a JSON file that :func:`write_json` wrote for ``generator`` starts."""
    return f'{{\n  "generator": "{generator}",'.encode("utf8")


def write_json(path: PathLike, data: Dict[str, Any], generator: str) -> Path:
    """Write ``{"generator": generator, **data}`` as indented JSON with :func:`write_file`: over nothing or over a
    JSON file of the same ``generator``."""
    text = json.dumps({"generator": generator, **data}, indent=2) + "\n"
    return write_file(path, lambda file: file.write(text.encode("utf8")), json_signature(generator))
