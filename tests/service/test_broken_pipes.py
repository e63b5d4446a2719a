"""click turns every BrokenPipeError into a quiet exit 1. That is right for our stdout closed by its reader,
and wrong for a pipe to one of our children: that one must be said, with its exit code (a broken env's
python once made `heygem-launch` exit 1 without a word)."""

from __future__ import annotations

import os
import subprocess

import pytest

from launcher import exitcodes
from launcher.commands.check import guarded as _guarded
from launcher.commands.check import stdout_reader_gone
from launcher.errors import LaunchError


def test_a_pipe_whose_reader_is_gone_is_seen() -> None:
    read, write = os.pipe()
    try:
        assert not stdout_reader_gone(write)
        os.close(read)
        read = -1
        assert stdout_reader_gone(write)
    finally:
        os.close(write)
        if read >= 0:
            os.close(read)


def test_a_broken_pipe_to_a_child_is_an_error_with_its_code() -> None:
    """A real child that exits without reading, a real write into its pipe: with our stdout intact, the
    EPIPE is one line and 70, not click's silent 1."""

    def write_to_a_child_that_left() -> int:
        child = subprocess.Popen(["true"], stdin=subprocess.PIPE)
        child.wait()
        assert child.stdin is not None
        child.stdin.write(b"x" * 2**20)
        child.stdin.flush()
        return 0

    with pytest.raises(LaunchError, match="a pipe to a child process broke") as caught:
        _guarded(write_to_a_child_that_left)
    assert caught.value.exit_code == exitcodes.SOFTWARE
