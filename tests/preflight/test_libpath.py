"""The library-path builder: no empty, relative or duplicate entries, order kept; unsafe folders refused."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from launcher.errors import ConfigError
from launcher.preflight.libpath import build_library_path, merge_entries

segment = st.text(alphabet="abc./", min_size=0, max_size=6)
entry = st.one_of(st.just(""), segment, segment.map(lambda s: "/" + s))
groups = st.lists(st.lists(entry, max_size=6), max_size=5)


@given(groups)
def test_no_empty_relative_or_duplicate_entries(gs: list[list[str]]) -> None:
    entries, _dropped = merge_entries(gs)
    assert all(e and e.startswith("/") for e in entries)
    assert len(entries) == len(set(entries))
    assert all(os.path.normpath(e) == e for e in entries)


@given(groups)
def test_order_kept_first_occurrence_wins(gs: list[list[str]]) -> None:
    entries, _dropped = merge_entries(gs)
    flat = [os.path.normpath(e) for g in gs for e in g if e.startswith("/")]
    flat = ["/" + e.lstrip("/") if e.startswith("//") else e for e in flat]
    first_seen = list(dict.fromkeys(flat))
    assert entries == first_seen


@given(groups)
def test_relative_entries_are_reported(gs: list[list[str]]) -> None:
    _entries, dropped = merge_entries(gs)
    assert dropped == [e for g in gs for e in g if e and not e.startswith("/")]


def test_the_incident_scripts_bug_cannot_happen() -> None:
    # `export LD_LIBRARY_PATH=/opt/conda/envs/human/lib:$LD_LIBRARY_PATH` with it unset ends in ':'.
    entries, _ = merge_entries([["/opt/conda/envs/human/lib"], [""]])
    assert ":".join(entries) == "/opt/conda/envs/human/lib"


def test_order_env_lib_wheels_extra_inherited(tmp_path: Path) -> None:
    prefix = tmp_path / "env"
    for sub in (
        "lib",
        "lib/python3.8/site-packages/nvidia/cublas/lib",
        "lib/python3.8/site-packages/nvidia/cu13/lib",
        "extra",
        "inherited",
    ):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    site = prefix / "lib/python3.8/site-packages/nvidia"
    result = build_library_path(
        prefix, [str(prefix / "extra"), ""], f"{prefix / 'inherited'}::{prefix / 'lib'}:relative:/does/not/exist"
    )
    assert result.entries == (
        str(prefix / "lib"),
        str(site / "cu13/lib"),
        str(site / "cublas/lib"),
        str(prefix / "extra"),
        str(prefix / "inherited"),
    )
    assert any("relative" in w for w in result.warnings)
    assert any("/does/not/exist: no such folder" in w for w in result.warnings)


def test_world_writable_folder_refused(tmp_path: Path) -> None:
    unsafe = tmp_path / "unsafe"
    unsafe.mkdir()
    unsafe.chmod(0o777)
    with pytest.raises(ConfigError, match="world-writable"):
        build_library_path(tmp_path / "env", [str(unsafe)], "")
