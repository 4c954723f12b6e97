"""safe_files: files written under fresh names, never through links, over nothing or over files of ours only."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from unic_lift_ns.safe_files import is_ours, move_into_place, write_file

SIGNATURE = b"ours v"


def write(data: bytes):
    return lambda file: file.write(data)


def test_writes_new_files_and_replaces_only_its_own(tmp_path: Path):
    previous = os.umask(0o027)
    try:
        path = write_file(tmp_path / "a.bin", write(SIGNATURE + b"1"), SIGNATURE)
    finally:
        os.umask(previous)
    assert path.read_bytes() == SIGNATURE + b"1" and stat.S_IMODE(path.stat().st_mode) == 0o640
    write_file(path, write(SIGNATURE + b"2"), SIGNATURE)
    assert path.read_bytes() == SIGNATURE + b"2"
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]  # no temporary file left

    foreign = tmp_path / "foreign.bin"
    foreign.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError, match=f"{foreign} exists and is not a file unic-lift-ns wrote"):
        write_file(foreign, write(SIGNATURE), SIGNATURE)
    assert foreign.read_bytes() == b"someone else's"
    (tmp_path / "folder.bin").mkdir()
    with pytest.raises(FileExistsError, match="folder.bin exists"):
        write_file(tmp_path / "folder.bin", write(SIGNATURE), SIGNATURE)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "folder.bin", "foreign.bin"]


def test_never_writes_through_links(tmp_path: Path):
    outside = tmp_path / "outside"
    outside.mkdir()
    target = outside / "precious"
    target.write_bytes(SIGNATURE + b" and precious")  # even a file that looks like ours
    folder = tmp_path / "folder"
    folder.mkdir()
    (folder / "a.bin").symlink_to(target)
    (folder / ".a.bin.tmp").symlink_to(outside / "planted")  # a predictable temporary name
    with pytest.raises(FileExistsError, match="a.bin exists and is not a file unic-lift-ns wrote"):
        write_file(folder / "a.bin", write(SIGNATURE), SIGNATURE)
    assert (folder / "a.bin").is_symlink() and target.read_bytes() == SIGNATURE + b" and precious"
    assert not is_ours(folder / "a.bin", SIGNATURE)

    (folder / "a.bin").unlink()
    write_file(folder / "a.bin", write(SIGNATURE + b"new"), SIGNATURE)
    assert not (folder / "a.bin").is_symlink() and (folder / "a.bin").read_bytes() == SIGNATURE + b"new"
    assert (folder / ".a.bin.tmp").is_symlink() and sorted(p.name for p in outside.iterdir()) == ["precious"]


def test_move_into_place_takes_no_name_that_appeared_meanwhile(tmp_path: Path):
    source = tmp_path / "source"
    source.write_bytes(SIGNATURE)
    taken = tmp_path / "taken"
    taken.symlink_to(tmp_path / "nowhere")  # a dangling link: lexists, but not exists
    with pytest.raises(FileExistsError, match="taken exists"):
        move_into_place(source, taken, SIGNATURE)
    assert source.read_bytes() == SIGNATURE and taken.is_symlink() and not (tmp_path / "nowhere").exists()
    move_into_place(source, tmp_path / "free", SIGNATURE)
    assert not source.exists() and (tmp_path / "free").read_bytes() == SIGNATURE


def test_is_ours_reads_only_regular_files(tmp_path: Path):
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # opening it to read would block without O_NONBLOCK; it is not a file of ours anyway
    assert not is_ours(fifo, SIGNATURE)
    assert not is_ours(tmp_path / "missing", SIGNATURE)
    (tmp_path / "short").write_bytes(SIGNATURE[:-1])
    assert not is_ours(tmp_path / "short", SIGNATURE)
