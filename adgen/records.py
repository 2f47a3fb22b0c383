"""The one reader of record files: prompt files and brief files (docs/design.md §5).

    with open_records(path, kind="brief") as f:
        for line, rec, err in iter_records(path, f, field="brief", columns=("brief", "prompt")):
            ...  # rec: a dict, or err: a LineError (file, line, reason)

- `.txt`: one record a line, `{field: line}`; blank lines and lines starting with `#`
  (after leading blanks) are skipped. A line's default id is `line-<n>`.
- `.jsonl`: one JSON object a line.
- `.csv`: a header row naming the fields, one of which must be in `columns`.

Lines are split on LF only (CRLF tolerated) and decoded one at a time, so a bad byte
sequence, a line that is not JSON, JSON nested too deeply or a CSV row the csv module
refuses costs that line alone: it comes out as a LineError carrying file and line number,
in line order, and the reader goes on. A file is read as a stream, never whole. What makes a
file unreadable as a whole (missing, a folder, an unknown type, a CSV without the needed
column) is a RecordFileError, one line for the user.

Ids are checked by `check_id` only: `[A-Za-z0-9._-]{1,128}` and not `.` or `..`, so an id
can name a file or folder that never escapes the folder it is written under.
"""
from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from pathlib import Path

from adgen.errors import AdgenError

ID_RE = re.compile(r"[A-Za-z0-9._-]{1,128}")
ID_MAX = 128
SUFFIXES = (".txt", ".jsonl", ".csv")
BAD_UTF8 = "line is not valid UTF-8"
NOT_OBJECT = "line must be a JSON object"
_BOM = b"\xef\xbb\xbf"
# scan_once is the C scanner json.loads ends in, without the per-call checks; on a job's
# millions of well-formed lines that difference is most of the parse time.
_SCAN = json.JSONDecoder().scan_once


class RecordFileError(AdgenError):
    """A record file that cannot be read at all (missing, unknown type, no needed column)."""


@dataclass(frozen=True)
class LineError:
    """One line that gave no record, and why; the others are read on."""
    file: str
    line: int
    reason: str

    def to_json(self) -> dict:
        return {"file": self.file, "line": self.line, "reason": self.reason}


def check_id(value) -> str:
    """`value` if it is a valid id, else ValueError(reason)."""
    if not isinstance(value, str) or not ID_RE.fullmatch(value):
        shown = repr(value)
        if len(shown) > 160:  # a reason is one short line, never the whole offending input
            shown = shown[:140] + "..."
        raise ValueError(f"id {shown} must match [A-Za-z0-9._-]{{1,{ID_MAX}}}")
    if value == "." or value == "..":
        raise ValueError(f"id {value!r} is not allowed")
    return value


def id_prefix(path) -> str:
    """`<file stem>.` made id-safe: keeps default ids of several files (`line-<n>`) apart."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", Path(path).stem)[:60] + "."


def open_records(path: str | Path, kind: str = "prompt"):
    """The file opened for streaming (binary); RecordFileError if it cannot be.
    `kind` names the file in messages ("prompt", "brief")."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise RecordFileError(f"{path}: unknown {kind} file type {suffix or '(none)'}; "
                              f"use {', '.join(SUFFIXES)}")
    try:
        return open(path, "rb", buffering=1 << 20)
    except FileNotFoundError:
        raise RecordFileError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise RecordFileError(f"{path}: is a folder, not a {kind} file") from None
    except OSError as exc:
        raise RecordFileError(f"{path}: cannot be read ({exc.strerror or exc})") from None


def iter_records(path: str | Path, f, field: str = "prompt", columns: tuple = ()):
    """(line, record dict, None) or (line, None, LineError) per non-blank line of an open
    record file, in line order, one line at a time. `field`: a .txt line's key; `columns`:
    a CSV header must name one of them (default: `field`)."""
    source = str(path)
    suffix = Path(path).suffix.lower()
    if suffix == ".txt":
        return _txt_records(_decoded(f), source, field)
    if suffix == ".jsonl":
        return _jsonl_records(_decoded(f), source)
    return _csv_records(f, source, columns or (field,))


def read_records(path: str | Path, kind: str = "prompt", field: str = "prompt",
                 columns: tuple = ()):
    """open_records + iter_records; the file is closed when the iteration ends."""
    with open_records(path, kind) as f:
        yield from iter_records(path, f, field, columns)


def _decoded(f):
    """(line number, text or None if not UTF-8) per physical line of a binary file.

    str.splitlines() would also split on FF, VT, U+2028..., shifting every later line
    number and breaking JSON lines whose strings legally contain U+2028."""
    for i, raw in enumerate(f, 1):
        if i == 1 and raw.startswith(_BOM):
            raw = raw[3:]
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield i, None
            continue
        if text.endswith("\n"):
            text = text[:-1]
        yield i, text[:-1] if text.endswith("\r") else text


def _txt_records(lines, source: str, field: str):
    for i, raw in lines:
        if raw is None:
            yield i, None, LineError(source, i, BAD_UTF8)
            continue
        line = raw.strip()
        if not line or line[0] == "#":
            continue
        yield i, {field: line}, None


def _jsonl_records(lines, source: str):
    loads, scan = json.loads, _SCAN
    for i, raw in lines:
        if raw is None:
            yield i, None, LineError(source, i, BAD_UTF8)
            continue
        try:  # the fast path; anything odd is judged again by json.loads for its message
            rec, end = scan(raw, 0)
            if end != len(raw) and raw[end:].strip():
                raise ValueError
        except (StopIteration, ValueError, RecursionError):
            rec = None
        if rec is None:
            try:
                rec = loads(raw)
            except json.JSONDecodeError as exc:
                if raw.strip():
                    yield i, None, LineError(source, i, f"invalid JSON: {exc.msg} "
                                                        f"(column {exc.colno})")
                continue
            except RecursionError:
                yield i, None, LineError(source, i, "invalid JSON: nested too deeply")
                continue
            except ValueError as exc:  # e.g. an integer literal over Python's 4300-digit limit
                yield i, None, LineError(source, i, f"invalid JSON: {str(exc).split(':')[0]}")
                continue
        if rec.__class__ is not dict:
            yield i, None, LineError(source, i, NOT_OBJECT)
            continue
        yield i, rec, None


def _csv_records(f, source: str, columns: tuple):
    bad: list[int] = []

    def text_lines():  # the csv module sees a bad line as empty; its error comes first
        for i, raw in enumerate(f, 1):
            if i == 1 and raw.startswith(_BOM):
                raw = raw[3:]
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                bad.append(i)
                yield "\n"

    reader = csv.DictReader(text_lines())
    try:
        fields = reader.fieldnames
    except csv.Error as exc:
        raise RecordFileError(f"{source}: unreadable CSV header: {exc}") from None
    if not fields or not set(columns) & {x.strip() for x in fields}:
        raise RecordFileError(f"{source}: CSV needs a header with a {columns[0]!r} column")
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            row = None
        except csv.Error as exc:  # e.g. a field over the csv module's 128 KiB limit
            row = exc
        while bad:
            i = bad.pop(0)
            yield i, None, LineError(source, i, BAD_UTF8)
        if row is None:
            break
        if isinstance(row, csv.Error):
            yield start, None, LineError(source, start, f"unreadable CSV row: {row}")
            continue
        line = reader.line_num  # the physical line where the row ended
        if None in row:
            yield line, None, LineError(source, line, "more fields than the header")
            continue
        rec = {k.strip(): (v.strip() if isinstance(v, str) else v) for k, v in row.items()}
        if not any(rec.values()):
            continue
        yield line, rec, None
