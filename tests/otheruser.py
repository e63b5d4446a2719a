"""A real second local user for the security tests (`useradd`), and running commands as that user
(`setpriv`). Needs root; the tests that use it skip cleanly without."""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess

import pytest

NAME = "heygem-other"


def other_user() -> pwd.struct_passwd:
    """The second user, created once (idempotent across runs and parallel worktrees)."""
    if os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"):
        pytest.skip("needs root, useradd and setpriv to act as a second local user")
    try:
        return pwd.getpwnam(NAME)
    except KeyError:
        subprocess.run(["useradd", "--no-create-home", "--shell", "/bin/sh", NAME], capture_output=True, check=False)
    return pwd.getpwnam(NAME)


def as_other(script: str, user: pwd.struct_passwd) -> subprocess.CompletedProcess[str]:
    """`sh -c script` as the second user, with none of root's groups."""
    return subprocess.run(
        ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--clear-groups", "sh", "-c", script],
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
        env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"},
    )
