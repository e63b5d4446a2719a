"""Every error line stays one line, whatever it quotes: a command line holding newlines, a path holding one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from launcher.errors import LaunchError, one_line
from tests.conftest import assert_no_traceback

# A port holder whose command line holds newlines (and a carriage return): `python -c` with a script.
HOLDER = "import socket, sys, time\ns = socket.socket()\ns.bind(('127.0.0.1', 0))\r\ns.listen()\n" + (
    "print(s.getsockname()[1], flush=True)\ntime.sleep(60)\n"
)


def test_a_port_holder_whose_command_line_holds_newlines(launch, tmp_path: Path) -> None:
    # argv[0] "python": the launcher shows a holder's command line cut short, and the interpreter's own path
    # (a clone anywhere) must not push the script past the cut.
    holder = subprocess.Popen(["python", "-c", HOLDER], executable=sys.executable, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        port = int(holder.stdout.readline())
        run = launch(env={"GRADIO_SERVER_PORT": str(port), "HEYGEM_RUN_DIR": str(tmp_path / "run")})
    finally:
        holder.kill()
        holder.wait()
    assert run.returncode == 78 and run.stderr.count("\n") == 1, run.stderr
    assert f"port {port}" in run.stderr and f"pid {holder.pid} (" in run.stderr
    assert "-c import socket, sys, time s = socket.socket()" in run.stderr


def test_a_library_folder_with_a_newline_in_its_name(launch, tmp_path: Path) -> None:
    """The folder is refused (world-writable); the line names it whole, its newline shown as \\n."""
    folder = tmp_path / "lib\nx"
    folder.mkdir()
    folder.chmod(0o777)
    run = launch("--check-only", env={"LD_LIBRARY_PATH": str(folder)})
    assert_no_traceback(run)
    assert run.returncode == 78
    assert run.stderr.count("\n") == 1 and f"{tmp_path}/lib\\nx is world-writable" in run.stderr, run.stderr


def test_one_line_breaks_at_every_line_break() -> None:
    assert one_line("a\nb\r\nc\rd\x0be\u2028f") == "a\\nb\\nc\\nd\\ne\\nf"
    assert str(LaunchError("port 1 held by pid 2 (python -c x\ny)")) == "port 1 held by pid 2 (python -c x\\ny)"
