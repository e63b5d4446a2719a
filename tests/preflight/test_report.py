"""The people's report, rendered from a CheckResult built here: the real app environment of a venv, and the
probe's findings as the probe reports them (a probe refused by ORT's CPU-fallback rule needs a CUDA build whose
provider loads, which test_check_refusals.py runs for real)."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.config.settings import load_settings
from launcher.preflight.appenv import prepare_environment
from launcher.preflight.check import CheckResult
from launcher.preflight.probe import ProbeResult, gloss, tidy
from launcher.preflight.report import render_check
from launcher.preflight.verdict import LibraryRow, Verdict
from launcher.system import gpu
from tests import envs
from tests.preflight.test_verdict import BUILD

NO_FALLBACK = (
    "2026-11-28 09:35:16.45 [E:onnxruntime:, inference_session.cc:2117 Initialize] This session contains graph "
    "nodes that are assigned to the default CPU EP, but fallback to CPU EP has been explicitly disabled by the user."
)
LIBRARIES = (
    LibraryRow("libcublasLt.so.13", "toolkit", "NEEDED"),
    LibraryRow("libcudart.so.13", "toolkit", "NEEDED", path="/env/lib/libcudart.so.13"),
    LibraryRow("libcudnn_ops.so.9", "cudnn", "run time", optional=True),
)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return envs.make_venv(tmp_path_factory.mktemp("envs") / "plain")


def check(prefix: Path, app_dir: Path, provider: str, probe: ProbeResult, verdict: Verdict) -> CheckResult:
    (app_dir / "app.py").write_text("print('app')\n")
    flags = {"HEYGEM_CONDA_ENV": str(prefix), "HEYGEM_APP_DIR": str(app_dir), "HEYGEM_REQUIRE_PROVIDER": provider}
    settings = load_settings(flags, environ={})
    app = prepare_environment(settings, {})
    inventory = gpu.Inventory(False, "no NVIDIA driver: libnvidia-ml.so.1 not found")
    return CheckResult(verdict, settings, app, BUILD, LIBRARIES, inventory, probe)


def test_the_no_fallback_line_is_explained_under_orts_own_words(prefix: Path, tmp_path: Path) -> None:
    said = tidy(NO_FALLBACK)
    probe = ProbeResult(3, False, {"stage": "create_session"}, NO_FALLBACK, 0.3, (said,))
    refused = Verdict(False, "provider_not_used", "the probe did not run on CUDAExecutionProvider", "read them")
    lines = render_check(check(prefix, tmp_path, "CUDAExecutionProvider", probe, refused)).splitlines()
    at = lines.index(f"  | {said}")  # ORT's text as ORT wrote it
    assert lines[at + 1] == f"    ^ {gloss(said)}"
    assert "session.disable_cpu_ep_fallback=1" in lines[at + 1] and '"the user" is the probe' in lines[at + 1]


def test_lines_that_do_not_mislead_get_no_note() -> None:
    assert gloss("E: Failed to load library x.so with error: libcublasLt.so.13: cannot open shared object") is None
    probe = ProbeResult(3, False, {}, "", 0.3, ("W: Failed to create CUDAExecutionProvider", tidy(NO_FALLBACK)))
    assert [message for message, _ in probe.ort_notes] == [tidy(NO_FALLBACK)]


@pytest.mark.parametrize(
    ("provider", "table"),
    [("CPUExecutionProvider", False), ("CUDAExecutionProvider", True)],
)
def test_the_library_table_only_where_it_applies(prefix: Path, tmp_path: Path, provider: str, table: bool) -> None:
    probe = ProbeResult(0, False, {"stage": "done", "ok": True}, "", 0.3)
    result = check(prefix, tmp_path, provider, probe, Verdict(True, None, "the probe ran every node", ""))
    text = render_check(result)
    assert ("libcublasLt.so.13          NEEDED    MISSING" in text) is table
    assert ("CUDA libraries: not needed with HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider" in text) is not table
    assert result.as_dict()["libraries_apply"] is table and len(result.as_dict()["libraries"]) == 3
