"""The scenario data the tests read is whole, and is the same as the team's ../shared copy where one is beside
the clone: a scenario added or changed there is noticed here, not silently left out of the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.scenarios import DUIX_REPLAY, HEYGEM_REPLAY, SHARED

STREAMS = {"dh.log", "stderr.log", "stdout.log", "container.log"}


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("collection", [HEYGEM_REPLAY, DUIX_REPLAY], ids=lambda p: p.name)
def test_every_scenario_has_its_expectation_and_a_stream(collection: Path) -> None:
    names = sorted(p.name for p in collection.iterdir() if p.is_dir())
    assert len(names) >= 6, f"scenarios missing from {collection}"
    readme = (collection / "README.md").read_text()
    for name in names:
        folder = collection / name
        expected = json.loads((folder / "expected.json").read_text())
        assert {"ready", "tasks", "incidents"} <= expected.keys(), name
        assert STREAMS & {p.name for p in folder.iterdir()}, f"{name}: no log stream"
        if collection is HEYGEM_REPLAY:
            assert name in readme, f"{name} is not in {collection.name}/README.md's table"


@pytest.mark.parametrize("collection", [HEYGEM_REPLAY, DUIX_REPLAY], ids=lambda p: p.name)
def test_the_repo_copy_is_the_shared_one(collection: Path) -> None:
    """Beside the team's ../shared the copies must agree byte for byte; elsewhere (a newcomer's clone) the repo's
    copy is all there is, and the test above is what holds it."""
    shared = SHARED / collection.name
    ours = files_of(collection)
    if not shared.is_dir():
        assert ours, f"{collection} is empty"
        return
    theirs = files_of(shared)
    new = sorted(set(theirs) - set(ours))
    assert not new, f"new in {shared}: {new}; copy them into {collection}"
    changed = sorted(k for k in theirs if ours[k] != theirs[k])
    assert not changed, f"changed in {shared}: {changed}; copy them into {collection}"
