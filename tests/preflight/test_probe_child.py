"""The probe script runs inside HeyGem's Python 3.8 env: syntax and imports are held to that."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from launcher.preflight.probe import child_source, tidy

REPO = Path(__file__).resolve().parents[2]


def test_probe_parses_as_python_38() -> None:
    ast.parse(child_source(), feature_version=(3, 8))


def test_probe_imports_only_stdlib_onnxruntime_numpy() -> None:
    tree = ast.parse(child_source())
    names = {
        alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names
    }
    names |= {node.module.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    allowed = set(sys.stdlib_module_names) | {"onnxruntime", "numpy"}
    assert names <= allowed, names - allowed


def test_shipped_model_is_what_the_generator_makes() -> None:
    sys.path.insert(0, str(REPO / "scripts"))
    try:
        import make_probe_model
    finally:
        sys.path.pop(0)
    assert (REPO / "launcher" / "preflight" / "data" / "probe.onnx").read_bytes() == make_probe_model.build()


def test_tidy_keeps_only_the_message() -> None:
    line = (
        "\x1b[1;31m2026-11-28 09:31:43.52 [E:onnxruntime:Default, provider_bridge_ort.cc:2458 operator()] "
        "/onnxruntime_src/x.cc:2043 f() [ONNXRuntimeError] : 1 : FAIL : Failed to load library a.so"
    )
    from launcher.preflight.probe import _ANSI

    assert tidy(_ANSI.sub("", line)) == "E: Failed to load library a.so"


def test_launcher_process_never_imports_onnxruntime(tmp_path: Path) -> None:
    """The launcher's own process stays small: only the probe child imports onnxruntime."""
    import subprocess

    code = (
        "import sys, runpy\nsys.argv=['heygem-launch','--check-only','--require-provider','CPUExecutionProvider']\n"
        "try:\n    runpy.run_module('launcher', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('onnxruntime', 'torch', 'numpy'))\n"
        "print('IMPORTED', bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert "IMPORTED []" in out.stdout, out.stdout + out.stderr
