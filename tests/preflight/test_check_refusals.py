"""`heygem-launch --check-only` on this machine (onnxruntime-gpu, no GPU): real refusals, real probe."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from launcher.preflight import causes
from tests import envs
from tests.conftest import assert_no_traceback


def test_this_machine_refuses_naming_the_missing_cuda_libraries(launch, ort_env: Path) -> None:
    run = launch("--check-only", "--conda-env", str(ort_env))
    assert run.returncode == 69, run.stdout + run.stderr
    assert f"REFUSED [{causes.CUDA_LIBRARIES_MISSING}]" in run.stdout
    # The names come from the installed build's NEEDED entries (1.31: CUDA 13), not from a list of ours.
    for soname in ("libcublasLt.so.13", "libcublas.so.13", "libcurand.so.10"):
        assert soname in run.stdout.splitlines()[-2]
    # ORT's own message is shown too: it confirms the table.
    assert "Failed to load library" in run.stdout
    assert_no_traceback(run)


def test_json_document_has_the_contract_keys(launch, ort_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(ort_env))
    assert run.returncode == 69
    doc = run.json
    assert doc["ok"] is False
    assert doc["cause"] == causes.CUDA_LIBRARIES_MISSING
    assert doc["message"] and doc["fix"]
    libraries = {row["name"]: row["path"] for row in doc["libraries"]}
    assert libraries["libcublasLt.so.13"] is None
    assert libraries["libcuda.so.1"] is None
    assert "libcudnn.so.9" in libraries  # opened at run time, so not a NEEDED entry, still checked
    assert doc["environment"]["PATH"].startswith(f"{ort_env}/bin:")
    assert doc["probe"]["report"]["stage"] == "create_session"
    assert doc["probe"]["report"]["executable"].startswith(str(ort_env))


def test_check_subcommand_is_the_same_as_check_only(launch, ort_env: Path) -> None:
    run = launch("check", "--json", "--conda-env", str(ort_env))
    assert run.returncode == 69
    assert run.json["cause"] == causes.CUDA_LIBRARIES_MISSING


def test_cpu_provider_passes_because_the_probe_really_ran(launch, ort_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(ort_env), "--require-provider", "CPUExecutionProvider")
    assert run.returncode == 0, run.stdout
    doc = run.json
    assert doc["ok"] is True and doc["cause"] is None
    report = doc["probe"]["report"]
    assert report["node_providers"] == {"Conv": "CPUExecutionProvider", "MatMul": "CPUExecutionProvider"}
    assert report["max_error"] < 1e-3


CPU_LINE = "  CUDA libraries: not needed with HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider (listed in --json)"


@pytest.mark.parametrize(
    ("command", "env"),
    [
        (("--check-only",), {}),
        (("check",), {}),
        (("--check-only",), {"HEYGEM_GPUS": "2"}),  # the fleet's report: the first app's in full, then a line per GPU
    ],
    ids=["check-only", "check", "two-gpus"],
)
def test_cpu_mode_report_has_no_library_table(launch, ort_env: Path, command: tuple[str], env: dict[str, str]) -> None:
    """This env misses every CUDA library, which the CPU provider never loads: no MISSING rows above the OK."""
    env = {"HEYGEM_REQUIRE_PROVIDER": "CPUExecutionProvider", **env}
    run = launch(*command, "--conda-env", str(ort_env), env=env)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "MISSING" not in run.stdout and "resolves to" not in run.stdout
    lines = run.stdout.splitlines()
    assert lines[lines.index(CPU_LINE) - 1].startswith("ONNX Runtime: onnxruntime-gpu ")
    assert run.stdout.count(CPU_LINE) == 1
    assert_no_traceback(run)


def test_cpu_mode_json_says_the_libraries_do_not_apply(launch, ort_env: Path) -> None:
    cpu = launch("--check-only", "--json", "--conda-env", str(ort_env), "--require-provider", "CPUExecutionProvider")
    assert cpu.returncode == 0, cpu.stdout
    assert cpu.json["libraries_apply"] is False
    # Still listed, as data: what an operator moving to the GPU would have to install.
    assert {row["name"]: row["path"] for row in cpu.json["libraries"]}["libcublasLt.so.13"] is None
    cuda = launch("--check-only", "--json", "--conda-env", str(ort_env))
    assert cuda.returncode == 69 and cuda.json["libraries_apply"] is True


def test_orts_fallback_disabled_line_is_explained_as_the_probes_own_setting(launch, ort_env: Path) -> None:
    """ORT 1.31 without its CUDA libraries says the CPU fallback "has been explicitly disabled by the user":
    the probe's own session option, which the report says under ORT's line, kept word for word."""
    lines = launch("--check-only", "--conda-env", str(ort_env)).stdout.splitlines()
    said = next(i for i, line in enumerate(lines) if "explicitly disabled by the user" in line)
    assert lines[said].startswith("  | E: This session contains graph nodes that are assigned to the default CPU EP")
    assert lines[said + 1].startswith("    ^ ") and "session.disable_cpu_ep_fallback=1" in lines[said + 1]
    assert "no setting of yours" in lines[said + 1]
    doc = launch("--check-only", "--json", "--conda-env", str(ort_env)).json
    (note,) = doc["probe"]["ort_notes"]
    assert note["message"] in doc["probe"]["ort_messages"] and "explicitly disabled by the user" in note["message"]
    assert "session.disable_cpu_ep_fallback=1" in note["note"]


def test_onnxruntime_missing(launch, tmp_path: Path) -> None:
    bare = envs.make_venv(tmp_path / "bare")
    run = launch("--check-only", "--json", "--conda-env", str(bare))
    assert run.returncode == 69
    assert run.json["cause"] == causes.ONNXRUNTIME_MISSING
    assert str(bare) in run.json["fix"]


def test_cpu_onnxruntime_alone(launch, cpu_ort_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(cpu_ort_env))
    assert run.returncode == 69
    assert run.json["cause"] == causes.ONNXRUNTIME_CPU_ONLY


def test_cpu_onnxruntime_shadowing_the_gpu_build(launch, shadowed_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(shadowed_env))
    assert run.returncode == 69
    assert run.json["cause"] == causes.ONNXRUNTIME_CPU_ONLY
    assert "installed over `onnxruntime-gpu`" in run.json["message"]


def test_ort_cuda_unavailable_is_removed_with_a_warning(launch, ort_env: Path) -> None:
    run = launch("--check-only", "--json", "--conda-env", str(ort_env), env={"ORT_CUDA_UNAVAILABLE": "1"})
    doc = run.json
    assert "ORT_CUDA_UNAVAILABLE" not in doc["environment"]
    assert any("ORT_CUDA_UNAVAILABLE" in w for w in doc["warnings"])


def test_hung_probe_is_killed_at_the_timeout(launch, tmp_path: Path) -> None:
    # A real hang in the app's env: its sitecustomize blocks at interpreter start, as a stuck driver would.
    hung = envs.make_venv(tmp_path / "hung")
    marker = tmp_path / "hung.pid"
    (envs.site_of(hung) / "sitecustomize.py").write_text(
        f"import os, time\nopen({str(marker)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n"
    )
    run = launch("--check-only", "--json", "--conda-env", str(hung), "--preflight-timeout", "2", timeout=30)
    assert run.returncode == 69
    assert run.json["cause"] == causes.PROBE_TIMEOUT
    pid = int(marker.read_text())
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_probe_runs_in_the_app_dir_with_the_app_environment(launch, ort_env: Path, app_dir: Path) -> None:
    (app_dir / ".env").write_text("HEYGEM_REQUIRE_PROVIDER=CPUExecutionProvider\nAPP_MODE=production\n")
    run = launch("--check-only", "--json", "--conda-env", str(ort_env))
    assert run.returncode == 0, run.stdout
    doc = run.json
    assert doc["probe"]["report"]["cwd"] == str(app_dir)  # `python app.py` runs there, so the probe does too
    assert doc["environment"]["APP_MODE"] == "production"
    assert doc["settings"]["HEYGEM_ENV_FILE"] == str(app_dir / ".env")


def test_usage_error_exits_64(launch) -> None:
    run = launch("--no-such-flag")
    assert run.returncode == 64
    assert "no such option" in run.stderr.lower()
    assert_no_traceback(run)


def test_version_and_help_exit_0() -> None:
    from tests.conftest import LAUNCH

    assert subprocess.run([*LAUNCH, "--help"], capture_output=True, check=False).returncode == 0
    assert subprocess.run([*LAUNCH, "--version"], capture_output=True, check=False).returncode == 0


def test_skip_does_not_skip_the_check_and_its_json_says_refused(launch, ort_env: Path) -> None:
    """HEYGEM_PREFLIGHT=skip is for starting the app; --check-only is asked to check, and does."""
    env = {"HEYGEM_PREFLIGHT": "skip", "HEYGEM_REQUIRE_PROVIDER": "CUDAExecutionProvider"}
    run = launch("--check-only", "--json", "--conda-env", str(ort_env), env=env)
    assert run.returncode == 69, run.stderr
    doc = run.json
    assert (doc["result"], doc["ok"], doc["cause"]) == ("refused", False, causes.CUDA_LIBRARIES_MISSING)
    assert "skipped" not in doc["probe"]["report"]
