"""The tests' env cache stays bounded: a recipe tied to another clone's venv, unused for days, is removed when a
new one of the same name is made; anything in the making or of another name is left alone."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests import envs


def test_a_stale_recipe_of_the_same_name_goes_when_a_new_one_is_made(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(envs, "CACHE", tmp_path)
    old, fresh = tmp_path / "cuda13-aaaaaaaaaaaa", tmp_path / "cuda13-bbbbbbbbbbbb"
    building, similar = tmp_path / "cuda13-cccccccccccc", tmp_path / "cuda13-gpu-dddddddddddd"
    for folder in (old, fresh, similar):
        (folder / ".heygem-test-env").parent.mkdir()
        (folder / ".heygem-test-env").write_text("[]")
    building.mkdir()
    week_ago = time.time() - 7 * 86400
    for stale in (old, similar):
        os.utime(stale / ".heygem-test-env", (week_ago, week_ago))

    made = envs._cached("cuda13", ["a new recipe"], lambda p: p.mkdir())

    assert made.is_dir() and (made / ".heygem-test-env").exists()
    assert not old.exists(), "unused for a week: pruned"
    assert fresh.exists() and building.exists() and similar.exists()
