"""A job's resume state on disk: the manifest indexed by custom_id, bounded logs.

manifest.jsonl stays the record of what is done; `manifest.index.sqlite` beside it is a
cache of it, keyed by custom_id, that a rerun consults a window of images at a time instead
of reading the whole manifest into memory:

- the index remembers how far into the manifest it has read (offset, the bytes just before
  it, the file's inode); a rerun reads only the lines appended since (a killed run's last
  batches), and rebuilds from scratch when the manifest was replaced, cut or removed;
- the last line of a custom_id wins, as in read_manifest; a torn line is skipped;
- an entry carries the (size, mtime_ns, inode) of its file as it was when its sha256 was
  last proven (by the writer right after the atomic rename, or by hashing the file on a
  rerun); a file with the same stat is done without being read again (git's and rsync's
  quick check, done by adgen.serving.jobs.job_resume), any other is hashed as before. Deleting the
  index only costs one rebuild.
"""
from __future__ import annotations

import contextlib
import json
import os
import random
import sqlite3
import threading
from pathlib import Path

from adgen.atomic import atomic_file

INDEX_NAME = "manifest.index.sqlite"
_TAIL = 64  # bytes before the indexed offset that must still be there
_COLS = "custom_id, seed, path, prompt, sha256, size, mtime_ns, ino"
_UPSERT = (f"INSERT INTO entries ({_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
           "ON CONFLICT(custom_id) DO UPDATE SET seed=excluded.seed, path=excluded.path, "
           "prompt=excluded.prompt, sha256=excluded.sha256, "
           # a line read back from the manifest keeps the proof the writer recorded
           "size=coalesce(excluded.size, CASE WHEN sha256=excluded.sha256 THEN size END), "
           "mtime_ns=coalesce(excluded.mtime_ns, CASE WHEN sha256=excluded.sha256 "
           "THEN mtime_ns END), "
           "ino=coalesce(excluded.ino, CASE WHEN sha256=excluded.sha256 THEN ino END)")


class ManifestIndex:
    def __init__(self, out: Path):
        self.out = Path(out)
        self.path = self.out / INDEX_NAME
        self._lock = threading.Lock()
        self.stale = False  # a failed write (disk full): stop recording, the next sync repairs
        try:
            self.db = self._open()
        except sqlite3.DatabaseError:  # a damaged cache: start it again from the manifest
            for suffix in ("", "-wal", "-shm"):
                Path(str(self.path) + suffix).unlink(missing_ok=True)
            self.db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.is_symlink():
            self.path.unlink()  # never write through a planted link
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        db.executescript(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL; PRAGMA cache_size=-16000;"
            "CREATE TABLE IF NOT EXISTS entries (custom_id TEXT PRIMARY KEY, seed INT, "
            "path TEXT, prompt TEXT, sha256 TEXT, size INT, mtime_ns INT, ino INT) WITHOUT ROWID;"
            "CREATE TABLE IF NOT EXISTS state (k TEXT PRIMARY KEY, v) WITHOUT ROWID;")
        db.execute("SELECT count(*) FROM state").fetchone()  # fails here if damaged
        return db

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def finished_cleanly(self) -> bool:
        """Whether the last run ended normally (so it left no temp file behind)."""
        with self._lock:
            return self._state().get("finished") == 1

    def set_finished(self, value: bool) -> None:
        self.set_state("finished", int(value))

    def state(self, key: str):
        with self._lock:
            return self._state().get(key)

    def set_state(self, key: str, value) -> None:
        with self._lock:
            if not self.stale:
                self._write(lambda: self.db.execute(
                    "INSERT OR REPLACE INTO state VALUES (?, ?)", (key, value)))

    def _state(self) -> dict:
        return dict(self.db.execute("SELECT k, v FROM state"))

    def sync(self) -> int:
        """Reads the manifest lines appended since the last sync; returns how many."""
        manifest = self.out / "manifest.jsonl"
        with self._lock:
            s = self._state()
            try:
                info = os.stat(manifest)
            except FileNotFoundError:
                info = None
            offset = int(s.get("offset") or 0)
            if info is None or s.get("ino") != info.st_ino or offset > info.st_size \
                    or (offset and _tail(manifest, offset) != s.get("tail")):
                self.db.execute("BEGIN")
                self.db.execute("DELETE FROM entries")
                self.db.execute("DELETE FROM state WHERE k NOT IN ('finished', 'sheet')")
                self.db.execute("COMMIT")
                offset = 0
            if info is None:
                return 0
            read = 0
            with open(manifest, "rb") as f:
                f.seek(offset)
                while True:
                    chunk = f.readlines(1 << 22)
                    if not chunk:
                        break
                    if not chunk[-1].endswith(b"\n"):
                        chunk.pop()  # a torn last line: the writer ends it, then it is read
                    rows = []
                    for line in chunk:
                        offset += len(line)
                        try:
                            r = json.loads(line)
                            rows.append((r["custom_id"], r.get("seed"), r.get("path"),
                                         r.get("prompt"), r.get("sha256"), None, None, None))
                        except (ValueError, KeyError, TypeError):
                            continue
                    read += len(rows)
                    self.db.execute("BEGIN")
                    self.db.executemany(_UPSERT, rows)
                    self._set_offset(manifest, offset, info.st_ino)
                    self.db.execute("COMMIT")
                    if len(chunk) == 0:
                        break
            return read

    def _set_offset(self, manifest: Path, offset: int, ino: int) -> None:
        self.db.executemany("INSERT OR REPLACE INTO state VALUES (?, ?)", [
            ("offset", offset), ("ino", ino), ("tail", _tail(manifest, offset))])

    def record(self, rows: list[tuple], start: int, end: int, manifest: Path) -> None:
        """The writer's batch: rows as in the table, just appended at [start, end)."""
        with self._lock:
            if not self.stale:
                self._write(lambda: (self.db.executemany(_UPSERT, rows), int(
                    self._state().get("offset") or 0) == start and self._set_offset(
                    manifest, end, os.stat(manifest).st_ino)))

    def _write(self, fn) -> None:
        """One transaction that may fail (disk full) without failing the job: the manifest
        holds the truth and the next sync reads what this one could not record."""
        try:
            self.db.execute("BEGIN")
            fn()
            self.db.execute("COMMIT")
        except (sqlite3.Error, OSError):
            self.stale = True
            try:
                self.db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    def lookup(self, custom_ids: list[str]) -> dict[str, tuple]:
        found = {}
        with self._lock:
            for lo in range(0, len(custom_ids), 500):
                part = custom_ids[lo:lo + 500]
                q = f"SELECT {_COLS} FROM entries WHERE custom_id IN ({','.join('?' * len(part))})"
                for row in self.db.execute(q, part):
                    found[row[0]] = row
        return found

    def prove(self, rows: list[tuple]) -> None:
        """(size, mtime_ns, ino, custom_id) of files whose sha256 was just checked."""
        if rows:
            with self._lock:
                if not self.stale:
                    self._write(lambda: self.db.executemany(
                        "UPDATE entries SET size=?, mtime_ns=?, ino=? WHERE custom_id=?", rows))


def _tail(manifest: Path, offset: int) -> str:
    with open(manifest, "rb") as f:
        f.seek(max(0, offset - _TAIL))
        return f.read(min(offset, _TAIL)).hex()


class Reservoir:
    """Request latencies in fixed memory: every value up to `size`, then a uniform sample
    (Vitter's algorithm R); count and mean stay exact."""

    def __init__(self, size: int = 65536, seed: int = 0):
        self.size, self.values, self.count, self.total = size, [], 0, 0.0
        self._rng = random.Random(seed)

    def append(self, value: float) -> None:
        self.count += 1
        self.total += value
        if len(self.values) < self.size:
            self.values.append(value)
        else:
            j = self._rng.randrange(self.count)
            if j < self.size:
                self.values[j] = value

    def __len__(self) -> int:
        return self.count


class ErrorLog:
    """errors.jsonl written as it goes (a temp file renamed at the end); keeps the first
    `keep` errors and the counts by kind in memory."""

    def __init__(self, out: Path, keep: int = 1000):
        self.out, self.keep, self.first, self.counts = Path(out), keep, [], {}
        # held open across the job: finish() leaves the block (rename), discard() fails it
        self._open = contextlib.ExitStack()
        self._f = self._open.enter_context(atomic_file(self.out / "errors.jsonl", "w",
                                                       fsync=True))

    def append(self, e: dict) -> None:
        self._f.write(json.dumps(e, ensure_ascii=False) + "\n")
        self.counts[e["kind"]] = self.counts.get(e["kind"], 0) + 1
        if len(self.first) < self.keep:
            self.first.append(e)

    def __len__(self) -> int:
        return sum(self.counts.values())

    def finish(self) -> None:
        self._open.close()

    def discard(self) -> None:
        try:
            with self._open:
                raise _Discarded
        except _Discarded:
            pass


class _Discarded(Exception):
    """Ends ErrorLog's atomic_file block as a failure: the temp file goes, nothing is renamed."""
