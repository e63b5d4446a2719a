"""Following a log as `tail -F` does: a file that does not exist yet, partial lines, rotation, truncation,
bytes that are not UTF-8."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from launcher.system.follow import CUT_MARK, Follower


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


def test_rewritten_in_place_with_as_many_bytes_starts_over(tmp_path: Path) -> None:
    """Issue 8 #9: truncated, then written with at least as many bytes as were read."""
    path = tmp_path / "dh.log"
    path.write_bytes(b"old line one\nold line two\n")
    follower = Follower(path)
    assert len(follower.read()) == 2
    path.write_bytes(b"QUEUE FULL LINE AT THE START\nand more than before\n")
    assert follower.read() == [b"QUEUE FULL LINE AT THE START", b"and more than before"]


def test_an_earlier_runs_output_is_skipped_but_nothing_written_after_start_is(tmp_path: Path) -> None:
    """Issue 8 #7: the run dir outlives `docker restart`; the follower opens at once, so what the new app
    writes before the first read is kept."""
    path = tmp_path / "app.log"
    path.write_bytes(b"queue full, from the previous run\n")
    follower = Follower(path, from_end=True)
    with path.open("ab") as handle:
        handle.write(b"first line of this run\n")
    assert follower.read() == [b"first line of this run"]


def test_long_lines_are_cut_and_marked_in_bounded_memory(tmp_path: Path) -> None:
    """Issue 8 #8: a line longer than the maximum is cut and marked; the rest of it is dropped, not held."""
    path = tmp_path / "dh.log"
    follower = Follower(path, line_max=1000)
    with path.open("wb") as handle:
        handle.write(b"x" * 5000)  # no newline yet
    first = follower.read()
    assert first == [b"x" * 1000 + CUT_MARK]
    assert len(follower._lines._partial) == 0  # the line begun is not held
    with path.open("ab") as handle:
        handle.write(b"y" * 5000 + b"\nshort\n")
    assert follower.read() == [b"short"]


def test_a_flood_is_read_a_budget_at_a_time(tmp_path: Path) -> None:
    path = tmp_path / "dh.log"
    path.write_bytes(b"line\n" * 100_000)  # 500 KB
    follower = Follower(path)
    lines = follower.read(budget=100_000)
    assert len(lines) == 20_000 and follower.more
    total = len(lines)
    while follower.more:
        total += len(follower.read(budget=100_000))
    assert total == 100_000


@pytest.mark.parametrize("kind", ["fifo", "directory", "device"])
def test_something_that_is_not_a_file_is_never_read(tmp_path: Path, kind: str) -> None:
    """A FIFO would block the service's loop (issue 8 #11), /dev/zero would never end."""
    path = tmp_path / "dh.log"
    if kind == "fifo":
        os.mkfifo(path)
    elif kind == "directory":
        path.mkdir()
    else:
        path = Path("/dev/zero")
    follower = Follower(path)
    assert follower.read() == [] and follower._fd is None
