"""Pure: HeyGem's log records, and ONNX Runtime's own lines, as data. No I/O, no clock.

HeyGem's root logger writes each record twice with one format,
`[%(asctime)s] [%(filename)s[line:%(lineno)d]] [%(levelname)s] [%(message)s]`: to `./log/dh.log` with
milliseconds (`2025-11-09 17:20:27,082`) and to stderr without (`2025-11-09 17:20:27`, its StreamHandler has
`datefmt='%Y-%m-%d %H:%M:%S'`). Source: FIELD.md section 2, from HeyGem-Linux-Python-Hack's logger and its
committed `log/dh.log`. Everything else the app writes (ONNX Runtime's C++ log, `print()`, tracebacks) is
a plain line that arrives once, on one stream.
"""

from __future__ import annotations

import functools
import re
import time
from dataclasses import dataclass

_RECORD = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(?P<ms>\d{3}))?\] "
    r"\[(?P<file>[^\[\]]*)\[line:(?P<lineno>\d+)\]\] \[(?P<level>[A-Z]+)\] \[(?P<message>.*)$"
)
# ONNX Runtime's default logger: `2025-11-09 17:20:00.000000123 [E:onnxruntime:Default, file.cc:1193 Func] text`.
_ORT = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(?P<frac>\d+) \[(?P<severity>[VIWEF]):onnxruntime:")
# Who a record is about: `[code]…` and `Custom VideoWriter [code]…` (HeyGem's task lines), `任务:code …`.
_CODE = re.compile(r"^(?:Custom VideoWriter )?\[(?P<bracket>[^\]]+)\]|^(?:>>> )?任务:(?P<plain>\S+)")


@dataclass(frozen=True)
class Record:
    """One HeyGem log record. `second` is the record's time to the second (both copies have it); `at` is
    the most precise time the copy carries, in seconds since the epoch, read as local time like asctime."""

    second: str
    at: float
    precise: bool  # this copy carried milliseconds (the log file's)
    file: str
    lineno: int
    level: str
    message: str

    @property
    def key(self) -> tuple[str, str, int, str, str]:
        """The same for both copies of one record, whichever stream carried it."""
        return (self.second, self.file, self.lineno, self.level, self.message)

    @property
    def code(self) -> str | None:
        """The task code the message names, if it names one."""
        match = _CODE.search(self.message)
        return (match.group("bracket") or match.group("plain")) if match else None


@functools.lru_cache(maxsize=256)
def _epoch(second: str) -> float:
    return time.mktime(time.strptime(second, "%Y-%m-%d %H:%M:%S"))


def parse_record(line: str) -> Record | None:
    """A HeyGem record, or None for any other line. A message that goes on over several lines (a logged
    traceback) is cut at the first: the rest arrive as plain lines."""
    match = _RECORD.match(line.rstrip("\r\n"))
    if match is None:
        return None
    try:
        at = _epoch(match["ts"])
    except (ValueError, OverflowError):
        return None
    message = match["message"]
    if message.endswith("]"):
        message = message[:-1]
    ms = match["ms"]
    return Record(
        second=match["ts"],
        at=at + (int(ms) / 1000 if ms else 0.0),
        precise=ms is not None,
        file=match["file"],
        lineno=int(match["lineno"]),
        level=match["level"],
        message=message,
    )


def ort_line_time(line: str) -> float | None:
    """The time of an ONNX Runtime log line, None for any other line."""
    match = _ORT.match(line)
    if match is None:
        return None
    try:
        return _epoch(match["ts"]) + float("0." + match["frac"])
    except (ValueError, OverflowError):
        return None
