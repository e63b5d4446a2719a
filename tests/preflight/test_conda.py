"""Conda activation without conda: a real venv made into a conda env, and the probe sees what activation set."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.errors import ConfigError
from launcher.preflight.conda import CondaEnv, activation_env, resolve_prefix
from tests import envs


@pytest.fixture
def conda_root(tmp_path: Path) -> Path:
    """A conda root with a `human` env: real venv, conda-meta/state, an activate.d script, onnxruntime."""
    root = tmp_path / "conda"
    (root / "conda-meta").mkdir(parents=True)
    prefix = envs.make_venv(root / "envs" / "human")
    envs.link_ort(prefix)
    envs.make_conda(
        prefix,
        {"HEYGEM_TEST_STATE": "from-state", "OMP_NUM_THREADS": "2"},
        'export HEYGEM_TEST_ACTIVATED="$CONDA_PREFIX/activated"\n'
        'export LD_LIBRARY_PATH="$CONDA_PREFIX/lib/extra${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"\n'
        'echo "activate.d says hello"\n',
    )
    (prefix / "lib" / "extra").mkdir()
    # What the probe child really sees: its interpreter records its environment at start.
    (envs.site_of(prefix) / "sitecustomize.py").write_text(
        "import json, os, sys\n"
        f"json.dump({{'env': dict(os.environ), 'exe': sys.executable, 'cwd': os.getcwd()}}, "
        f"open({str(tmp_path / 'child.json')!r}, 'w'))\n"
    )
    return root


def check_human_on_cpu(launch, conda_root: Path) -> dict:  # type: ignore[no-untyped-def, type-arg]
    """`--check-only --json` of the `human` env with the CPU provider, which must pass."""
    run = launch(
        "--check-only",
        "--json",
        "--require-provider",
        "CPUExecutionProvider",
        env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "human"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run.json


def test_probe_runs_with_the_env_python_and_sees_activation(launch, conda_root: Path, app_dir: Path) -> None:
    import json

    doc = check_human_on_cpu(launch, conda_root)
    prefix = conda_root / "envs" / "human"
    child = json.loads((conda_root.parent / "child.json").read_text())
    assert child["exe"] == str(prefix / "bin" / "python")
    assert child["cwd"] == str(app_dir)
    env = child["env"]
    assert env["CONDA_PREFIX"] == str(prefix)
    assert env["CONDA_DEFAULT_ENV"] == "human"
    assert env["CONDA_SHLVL"] == "1"
    assert env["CONDA_PROMPT_MODIFIER"] == "(human) "
    assert env["HEYGEM_TEST_STATE"] == "from-state"
    assert env["HEYGEM_TEST_ACTIVATED"] == f"{prefix}/activated"
    assert env["PATH"].split(":")[0] == str(prefix / "bin")
    # The script's LD_LIBRARY_PATH is kept, behind the env's own lib folder.
    assert env["LD_LIBRARY_PATH"].split(":")[:2] == [str(prefix / "lib"), str(prefix / "lib" / "extra")]
    # What the report says is what the child got.
    assert doc["environment"]["LD_LIBRARY_PATH"] == env["LD_LIBRARY_PATH"]


def test_missing_env_lists_the_envs_found(launch, conda_root: Path) -> None:
    run = launch("--check-only", env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "humann"})
    assert run.returncode == 78
    assert "HEYGEM_CONDA_ENV='humann'" in run.stderr
    assert "envs found: base, human" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_activate_script_returning_non_zero_is_a_warning_as_with_conda(launch, conda_root: Path) -> None:
    """`conda activate` sources each activate.d script and goes on whatever it returns."""
    folder = conda_root / "envs" / "human" / "etc" / "conda" / "activate.d"
    (folder / "20-broken.sh").write_text("echo broken >&2\nexport AFTER_BROKEN=yes\nfalse\n")
    (folder / "30-later.sh").write_text("export LATER_RAN=yes\n")
    doc = check_human_on_cpu(launch, conda_root)
    assert doc["environment"]["AFTER_BROKEN"] == "yes" and doc["environment"]["LATER_RAN"] == "yes"
    warning = next(w for w in doc["warnings"] if "20-broken.sh" in w)
    assert "returned 1" in warning and "broken" in warning


def test_activate_script_that_ends_the_shell_is_a_config_error(launch, conda_root: Path) -> None:
    script = conda_root / "envs" / "human" / "etc" / "conda" / "activate.d" / "20-exits.sh"
    script.write_text("echo leaving >&2\nexit 3\n")
    run = launch("--check-only", env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "human"})
    assert run.returncode == 78
    assert "activate.d" in run.stderr and "leaving" in run.stderr and "Traceback" not in run.stderr


def test_named_env_and_base_resolve(conda_root: Path) -> None:
    assert resolve_prefix(conda_root, "human").name == "human"
    with pytest.raises(ConfigError):
        resolve_prefix(conda_root, "base")  # the root has conda-meta but no python in this test


@pytest.mark.parametrize(
    ("base", "expected_level", "stacked"),
    [
        ({"PATH": "/usr/bin"}, "1", {}),
        # Switching from base: conda replaces base's bin and remembers it as CONDA_PREFIX_1.
        (
            {"PATH": "/opt/conda/bin:/usr/bin", "CONDA_PREFIX": "/opt/conda", "CONDA_SHLVL": "1"},
            "2",
            {"CONDA_PREFIX_1": "/opt/conda"},
        ),
        # Already active: activating again changes nothing.
        ({"PATH": "/envs/human/bin:/usr/bin", "CONDA_PREFIX": "/envs/human", "CONDA_SHLVL": "1"}, "1", {}),
    ],
)
def test_activation_env_is_what_conda_activate_leaves(
    base: dict[str, str], expected_level: str, stacked: dict[str, str]
) -> None:
    env = CondaEnv(Path("/envs/human"), "human", Path("/envs/human/bin/python"), True)
    out = activation_env(base, env, {"FOO": "bar"})
    assert out["PATH"] == "/envs/human/bin:/usr/bin"
    assert out["CONDA_SHLVL"] == expected_level
    assert out["FOO"] == "bar"
    for key, value in stacked.items():
        assert out[key] == value
