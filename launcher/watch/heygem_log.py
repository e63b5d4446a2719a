"""Pure: HeyGem's log records, and ONNX Runtime's own lines, as data. No I/O, no clock.

HeyGem has written two record formats ("dialects"), told apart per record, never by a setting:

- A, the Hack's logger (and HeyGem.ai's image up to May 2025): each record twice with one format,
  `[%(asctime)s] [%(filename)s[line:%(lineno)d]] [%(levelname)s] [%(message)s]`: to `./log/dh.log` with
  milliseconds (`2025-11-09 17:20:27,082`) and to stderr without (`2025-11-09 17:20:27`, its StreamHandler has
  `datefmt='%Y-%m-%d %H:%M:%S'`). Source: FIELD.md section 2, from HeyGem-Linux-Python-Hack's logger and its
  committed `log/dh.log`.
- B, HeyGem.ai / Duix.Avatar's image since late May 2025:
  `2025-06-06 10:20:39,222-[service.self_logger]-threading.py[line:870]-ERROR: <code> -> …`, once, with
  werkzeug's access lines raw beside it (FIELD-heygem-ai.md section 4.1).

Everything else the app writes (ONNX Runtime's C++ log, `print()`, tracebacks) is a plain line that arrives
once, on one stream.
"""

from __future__ import annotations

import datetime
import functools
import re
import time
import zoneinfo
from collections.abc import Iterable
from dataclasses import dataclass

_RECORD = re.compile(
    r"^\[(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)(?:,(?P<ms>\d{3}))?\] "
    r"\[(?P<file>[^\[\]]*)\[line:(?P<lineno>\d+)\]\] \[(?P<level>[A-Z]+)\] \[(?P<message>.*)$"
)
A, B = "A", "B"
# Dialect B: Python's default asctime, the logger's name (HeyGem's own, so the rules stay anchored at its
# prefix), one space after the level's colon (` -> 服务不进行注册` keeps its own leading space).
_RECORD_B = re.compile(
    r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(?P<ms>\d{3})-\[service\.self_logger\]-"
    r"(?P<file>[^\[\]]*)\[line:(?P<lineno>\d+)\]-(?P<level>[A-Z]+): ?(?P<message>.*)$"
)
# B's task lines: `<code> ->audio_url:…`, `<code> -> video_info:…` (both spacings occur); `system ->…` and
# ` -> …` (no code) are the service's own.
_ARROW = re.compile(r" ?->")
SERVICE_CODES = ("system", "")
# ONNX Runtime's default logger: `2025-11-09 17:20:00.000000123 [E:onnxruntime:Default, file.cc:1193 Func] text`.
_ORT = re.compile(r"^(?P<ts>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d)\.(?P<frac>\d+) \[(?P<severity>[VIWEF]):onnxruntime:")
# Who a record is about: `[code]…` and `Custom VideoWriter [code]…` (HeyGem's task lines), `任务:code -> …`
# and `>>> 任务:code 耗时:…`. The code is the caller's: it may hold spaces and brackets.
_BRACKET = re.compile(r"^(?:Custom VideoWriter )?\[")
_PLAIN = re.compile(r"^(?:>>> )?任务:(?P<code>.+?)(?: -> audio_url:| 耗时:)")
# ONNX Runtime 1.20 and later colour their log lines even into a pipe; 1.16 does not.
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
CODE = "<c>"  # what a task code is replaced with before the rules see a message


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
    dialect: str = A

    def key(self, length: int) -> tuple[str, str, int, str, str]:
        """The same for both copies of one record, whichever stream carried it. Only the message's first
        `length` characters count: a copy cut at a byte limit loses more of it on the stream whose prefix is
        longer (the log file's milliseconds)."""
        return (self.second, self.file, self.lineno, self.level, self.message[:length])


def split_code(message: str, known: Iterable[str] = (), dialect: str = A) -> tuple[str | None, str]:
    """The task code a message names, and the message with that code replaced by CODE, for the rules.
    A bracketed code is the longest `known` one that fits (a caller's code may hold `]`), else up to `]`;
    in B the code is what precedes the first `->`, or the longest `known` one followed by one."""
    if dialect == B:
        return _split_b(message, known)
    match = _PLAIN.match(message)
    if match:
        return match["code"], message[: match.start("code")] + CODE + message[match.end("code") :]
    match = _BRACKET.match(message)
    if match is None:
        return None, message
    rest = message[match.end() :]
    code = next((c for c in sorted(known, key=len, reverse=True) if rest.startswith(c + "]")), None)
    if code is None:
        code = rest.split("]", 1)[0] if "]" in rest else None
    if not code:
        return None, message
    return code, message[: match.end()] + CODE + rest[len(code) :]


def _split_b(message: str, known: Iterable[str]) -> tuple[str | None, str]:
    longest_first = sorted(known, key=len, reverse=True)
    code = next((c for c in longest_first if message.startswith(c) and _ARROW.match(message, len(c))), None)
    if code is None:
        match = _ARROW.search(message)
        if match is None:
            return None, message
        code = message[: match.start()]
    if code.strip() in SERVICE_CODES:
        return None, message
    return code, CODE + message[len(code) :]


def strip_colour(line: str) -> str:
    return _ANSI.sub("", line) if "\x1b" in line else line


@functools.lru_cache(maxsize=256)
def _epoch(second: str, tz: str | None) -> float:
    parsed = time.strptime(second, "%Y-%m-%d %H:%M:%S")
    if tz:
        try:
            return datetime.datetime(*parsed[:6], tzinfo=zoneinfo.ZoneInfo(tz)).timestamp()
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            pass  # a POSIX TZ string or an unknown zone: the launcher's own local time
    return time.mktime(parsed)


def parse_record(line: str, tz: str | None = None) -> Record | None:
    """A HeyGem record, or None for any other line. `tz`: the app's TZ (asctime is the app's local time);
    None for the launcher's own. A message that goes on over several lines (a logged traceback) is cut at
    the first: the rest arrive as plain lines."""
    text = line.rstrip("\r\n")
    dialect = A
    match = _RECORD.match(text)
    if match is None:
        match, dialect = _RECORD_B.match(text), B
    if match is None:
        return None
    try:
        at = _epoch(match["ts"], tz)
    except (ValueError, OverflowError):
        return None
    message = match["message"]
    if dialect == A and message.endswith("]"):
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
        dialect=dialect,
    )


def ort_line_time(line: str, tz: str | None = None) -> float | None:
    """The time of an ONNX Runtime log line (colours stripped), None for any other line."""
    match = _ORT.match(strip_colour(line))
    if match is None:
        return None
    try:
        return _epoch(match["ts"], tz) + float("0." + match["frac"])
    except (ValueError, OverflowError):
        return None
