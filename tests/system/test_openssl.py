"""OpenSSL kept out of the long-running processes (launcher/system/openssl.py): real interpreters, their
memory maps read from /proc."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from tests import harness

OPENSSL = (b"libssl", b"libcrypto")


def maps_openssl(pid: int | str) -> list[str]:
    """OpenSSL's libraries mapped into process `pid`."""
    lines = Path(f"/proc/{pid}/maps").read_bytes().splitlines()
    return sorted({line.split()[-1].decode() for line in lines if any(name in line for name in OPENSSL)})


def test_kept_out_the_launchers_imports_work_without_it() -> None:
    code = (
        "import sys\n"
        "from launcher.system import openssl\n"
        "assert openssl.keep_out()\n"
        "import hashlib, hmac, http.client, xmlrpc.client, urllib.request\n"
        "assert hashlib.sha1(b'x').hexdigest() == '11f6ad8ec52a2984abaafd7c3b516503785c2072'\n"
        "assert len(hashlib.blake2b(b'x', digest_size=16).digest()) == 16\n"
        "try:\n"
        "    import ssl\n"
        "except ImportError:\n"
        "    print('no ssl')\n"
        "from tests.system.test_openssl import maps_openssl\n"
        "print(maps_openssl('self'))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=harness.REPO)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[:2] == ["no ssl", "[]"]


def test_once_loaded_it_is_left_alone() -> None:
    code = "import ssl\nfrom launcher.system import openssl\nassert not openssl.keep_out()\nimport ssl\n"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_the_running_service_maps_no_openssl(tmp_path: Path, ort_env: Path) -> None:
    """heygem-launch (metrics off) and its supervisord at rest: no libssl, no libcrypto (~3.5 MB each process
    would keep); without a driver the GPU watch says so and pynvml is not loaded either."""
    service = harness.start(tmp_path, ort_env)
    try:
        service.wait_app()
        supervisord = harness.wait_for(lambda: harness._first_child(service.proc.pid), 10, "supervisord")
        assert maps_openssl(service.proc.pid) == [] and maps_openssl(supervisord) == []
        assert "GPU watch off: no NVIDIA driver: libnvidia-ml.so.1 not found" in service.stderr()
    finally:
        service.signal(signal.SIGTERM)
        service.wait(30)
        service.cleanup()
