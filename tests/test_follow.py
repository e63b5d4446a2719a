"""Following a log as `tail -F` does: a file that does not exist yet, partial lines, rotation, truncation,
bytes that are not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

from launcher.follow import Follower


def test_missing_then_created(tmp_path: Path) -> None:
    path = tmp_path / "log" / "dh.log"
    follower = Follower(path)
    assert follower.read() == []
    path.parent.mkdir()
    path.write_bytes(b"one\ntwo\n")
    assert follower.read() == [b"one", b"two"]


def test_partial_line_is_held_until_complete(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes(b"start of a li")
    follower = Follower(path)
    assert follower.read() == []
    with path.open("ab") as handle:
        handle.write(b"ne\nnext")
    assert follower.read() == [b"start of a line"]
    assert follower.flush() == [b"next"]


def test_rotation_reads_the_rest_of_the_old_file_then_the_new(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes(b"a\n")
    follower = Follower(path)
    assert follower.read() == [b"a"]
    with path.open("ab") as handle:
        handle.write(b"b\n")
    os.rename(path, tmp_path / "dh.log.1")
    path.write_bytes(b"c\n")
    assert follower.read() == [b"b", b"c"]


def test_truncation_starts_over(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes(b"old line one\nold line two\n")
    follower = Follower(path)
    follower.read()
    path.write_bytes(b"new\n")  # truncated and rewritten, shorter than before
    assert follower.read() == [b"new"]


def test_from_end_skips_what_was_there(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes(b"earlier run\n")
    follower = Follower(path, from_end=True)
    assert follower.read() == []
    with path.open("ab") as handle:
        handle.write(b"this run\n")
    assert follower.read() == [b"this run"]


def test_bytes_are_passed_through_undecoded(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes("任务\n".encode() + b"\xff\xfe broken\n")
    lines = Follower(path).read()
    assert lines[0].decode() == "任务"
    assert lines[1].decode("utf-8", errors="replace").endswith("broken")
