"""Pure: is the app ready, by the markers of the log dialect it writes (dialects.py), since its last start."""

from __future__ import annotations

from launcher.watch.dialects import Dialect
from launcher.watch.heygem_log import A, Record


class Readiness:
    def __init__(self, tables: dict[str, Dialect]) -> None:
        self.tables = tables
        self.dialect: str | None = None  # the dialect of the app's last record; kept across its restarts
        self.markers: set[str] = set()
        self.ready_at: float | None = None

    def restart(self) -> None:
        """A new app process: nothing it has not logged counts."""
        self.markers = set()
        self.ready_at = None

    @property
    def table(self) -> Dialect:
        return self.tables[self.dialect or A]

    @property
    def missing(self) -> list[str]:
        return [m for m in self.table.ready_markers if m not in self.markers]

    def see(self, record: Record, now: float) -> None:
        """The markers since the process's (and its workers') last start: workers that HeyGem restarts, or
        that die at start, are not ready until they announce themselves again."""
        self.dialect = record.dialect
        d = self.table
        message = record.message.lstrip("* ")  # B's Flask banner is framed in stars
        if d.process_start.search(record.message):
            self.markers.clear()
        elif d.worker_spawn.search(message):
            self.markers.difference_update(d.worker_markers)
        for marker in d.ready_markers:
            if message.startswith(marker):
                self.markers.add(marker)
        if self.missing:
            self.ready_at = None
        elif self.ready_at is None:
            self.ready_at = now
