"""The pip names of the fix lines (launcher/preflight/cudapkgs.py) exist on the package index, with the pinned major.

Slow: it asks the index (`pip index versions`, one query per name, once per run). Skips without an index.
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from launcher.preflight.cudapkgs import all_pip_packages, install_commands

pytestmark = pytest.mark.slow


def _versions(name: str) -> list[str] | None:
    out = subprocess.run(
        [sys.executable, "-m", "pip", "index", "versions", name, "--disable-pip-version-check"],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    match = re.search(r"Available versions: (.*)", out.stdout)
    return [v.strip() for v in match.group(1).split(",")] if match else None


def test_every_pip_package_of_the_table_is_on_the_index() -> None:
    packages = all_pip_packages()
    assert len(packages) >= 15  # cuBLAS, cudart, cuRAND, cuFFT, nvrtc for CUDA 11-13, and cuDNN 8/9
    if _versions("pip") is None:
        pytest.skip("no package index reachable")
    missing = []
    for package in packages:
        name, _, pin = package.partition("==")
        versions = _versions(name) or []
        major = pin.removesuffix(".*")
        if not versions or (major and not any(v.split(".")[0] == major for v in versions)):
            missing.append(package)
    assert not missing, f"not on the index: {missing}"


def test_fix_lines_quote_pins_for_the_shell() -> None:
    line = install_commands(["libcudnn.so.9"], 13, 9, "/opt/conda/envs/human/bin/python")
    assert line is not None and "'nvidia-cudnn-cu13==9.*'" in line
