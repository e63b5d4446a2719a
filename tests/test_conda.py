"""Conda activation without conda: a real venv made into a conda env, and the probe sees what activation set."""

from __future__ import annotations

from pathlib import Path

import pytest

from launcher.conda import CondaEnv, activation_env, resolve_prefix
from launcher.errors import ConfigError
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


def test_probe_runs_with_the_env_python_and_sees_activation(launch, conda_root: Path, app_dir: Path) -> None:
    import json

    run = launch(
        "--check-only",
        "--json",
        "--require-provider",
        "CPUExecutionProvider",
        env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "human"},
    )
    assert run.returncode == 0, run.stdout + run.stderr
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
    assert run.json["environment"]["LD_LIBRARY_PATH"] == env["LD_LIBRARY_PATH"]


def test_missing_env_lists_the_envs_found(launch, conda_root: Path) -> None:
    run = launch("--check-only", env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "humann"})
    assert run.returncode == 78
    assert "HEYGEM_CONDA_ENV='humann'" in run.stderr
    assert "envs found: base, human" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1


def test_failing_activate_script_is_a_config_error(launch, conda_root: Path) -> None:
    script = conda_root / "envs" / "human" / "etc" / "conda" / "activate.d" / "20-broken.sh"
    script.write_text("echo broken >&2\nfalse\n")
    run = launch("--check-only", env={"HEYGEM_CONDA_ROOT": str(conda_root), "HEYGEM_CONDA_ENV": "human"})
    assert run.returncode == 78
    assert "activate.d" in run.stderr and "Traceback" not in run.stderr


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
