"""The package's layout is a contract the lint step enforces (scripts/test.sh): each layer imports only the layers
below it (import-linter, pyproject.toml), and no class is over 200 lines nor any function over 60
(scripts/check_sizes.py). Each check is shown to fail on a copy of the package broken on purpose."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
PACKAGES = ("commands", "service", "preflight", "watch", "config", "system")


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """The package and the contract, where a change cannot reach the checkout."""
    shutil.copytree(REPO / "launcher", tmp_path / "launcher", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


def lint_imports(where: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=where, capture_output=True, text=True, check=False, env={"PATH": ""}
    )


def test_the_contract_names_every_package_and_the_checkout_keeps_it() -> None:
    contract = (REPO / "pyproject.toml").read_text()
    on_disk = sorted(p.name for p in (REPO / "launcher").iterdir() if (p / "__init__.py").exists())
    assert on_disk == sorted(PACKAGES)
    for package in PACKAGES:
        assert f"launcher.{package}" in contract
    kept = lint_imports(REPO)
    assert kept.returncode == 0, kept.stdout + kept.stderr


@pytest.mark.parametrize(
    ("room", "upward"),
    [
        ("system/procs.py", "from launcher.config import settings"),
        ("config/values.py", "from launcher.preflight import verdict"),
        ("watch/tasks.py", "from launcher.preflight import causes"),  # siblings: independent of each other
        ("service/control.py", "from launcher.commands import probes"),
        ("errors.py", "from launcher.system import rundir"),
    ],
)
def test_an_upward_import_breaks_the_contract(copy: Path, room: str, upward: str) -> None:
    path = copy / "launcher" / room
    path.write_text(path.read_text() + f"\n{upward}  # added on purpose\n")
    broken = lint_imports(copy)
    assert broken.returncode == 1, broken.stdout
    assert "BROKEN" in broken.stdout and room.replace("/", ".").removesuffix(".py") in broken.stdout


def test_no_room_outgrows_one_sitting(copy: Path) -> None:
    check = [sys.executable, str(REPO / "scripts" / "check_sizes.py")]
    kept = subprocess.run([*check, str(REPO / "launcher")], capture_output=True, text=True, check=False)
    assert kept.returncode == 0, kept.stdout
    long_function = "def grown() -> None:\n" + "".join(f"    x{i} = {i}\n" for i in range(60))
    (copy / "launcher" / "system" / "grown.py").write_text(long_function)
    broken = subprocess.run([*check, str(copy / "launcher")], capture_output=True, text=True, check=False)
    assert broken.returncode == 1
    assert "function grown is 61 lines (at most 60)" in broken.stdout
