"""What HeyGem really writes, scenario by scenario: copies of ../shared/heygem-replay and ../shared/duix-replay
(each folder's README says how they were built). They live in the repo so that a clone anywhere runs the tests
that read them; `tests/watch/test_scenarios.py` compares them with ../shared where that exists."""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).resolve().parent
HEYGEM_REPLAY = HERE / "heygem-replay"  # HeyGem-Linux-Python-Hack: dialect A, three streams per scenario
DUIX_REPLAY = HERE / "duix-replay"  # HeyGem.ai / Duix.Avatar's images: dialect B (container.log) and A
# Beside a clone in the team's workspace; absent in a clone anywhere else.
SHARED = HERE.parent.parent.parent / "shared"
