"""The grounding records of subjects already seen, kept on disk for every later job.

A job grounds each distinct subject with the MiniLM text encoder (adgen.serving.jobs.
grounding): ~3 ms of CPU per subject on one thread, plus ~0.4 s to import onnxruntime,
load the encoder and the concept embeddings. On a host that runs Triton too, that CPU is
the server's. Campaigns repeat their subjects: a rerun with other seeds, a second shard, a
new prompt file over the same catalogue. This table remembers (subject -> nearest concept,
score) per concept list and encoder, so a job whose subjects were all seen before never
loads the encoder at all.

One sqlite file per machine (adgen.paths.grounding_cache_path: <artifacts>/vocab/
grounding.sqlite, $ADGEN_GROUNDING_CACHE, or "off"), shared by concurrent jobs (WAL, a
short busy wait). Rows are keyed by the concept embeddings' own cache key (concept file
sha256, encoder id, phrase version) plus GROUNDING_VERSION, so another concept list or
encoder never reads them. At most MAX_ROWS rows: the oldest go first. The cache is a
speed-up only: a file that cannot be opened, read or written (read-only, locked, damaged)
turns it off for the process and the job grounds as without it.
"""
from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

GROUNDING_VERSION = 1  # bump when a subject's record would be computed differently
MAX_ROWS = 200_000  # ~100 bytes a row: ~20 MB at most
_CHUNK = 500  # subjects per SELECT (sqlite's variable limit is 32,766; small is fast)


class GroundingCache:
    """subject -> (concept, score) for one concept list and encoder (`key`)."""

    def __init__(self, path: Path | None, key: str):
        self.path, self.key = path, f"{key}:{GROUNDING_VERSION}"
        self.off = path is None  # why it is off is not the job's concern: it grounds anyway
        self._db: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None and not self.off:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                db = sqlite3.connect(str(self.path), timeout=1.0, check_same_thread=False,
                                     isolation_level=None)
                db.executescript(
                    "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;"
                    "CREATE TABLE IF NOT EXISTS subjects (key TEXT NOT NULL, "
                    "subject TEXT NOT NULL, concept TEXT NOT NULL, score REAL NOT NULL, "
                    "UNIQUE (key, subject));")
                self._db = db
            except (sqlite3.Error, OSError):
                self.off = True
        return self._db

    def get(self, subjects: list[str]) -> dict[str, tuple[str, float]]:
        """The subjects found, with their (concept, score)."""
        found: dict[str, tuple[str, float]] = {}
        with self._lock:
            db = self._conn()
            if db is None:
                return found
            try:
                for lo in range(0, len(subjects), _CHUNK):
                    part = subjects[lo:lo + _CHUNK]
                    rows = db.execute(
                        "SELECT subject, concept, score FROM subjects WHERE key = ? AND "
                        f"subject IN ({','.join('?' * len(part))})", [self.key, *part])
                    for subject, concept, score in rows:
                        found[subject] = (concept, float(score))
            except sqlite3.Error:
                self._off()
        return found

    def put(self, records: dict[str, tuple[str, float]]) -> None:
        """Remembers new (subject -> (concept, score)); the oldest rows past MAX_ROWS go."""
        if not records:
            return
        with self._lock:
            db = self._conn()
            if db is None:
                return
            try:
                db.execute("BEGIN IMMEDIATE")
                db.executemany("INSERT OR IGNORE INTO subjects VALUES (?, ?, ?, ?)",
                               [(self.key, s, c, sc) for s, (c, sc) in records.items()])
                db.execute("DELETE FROM subjects WHERE rowid <= "
                           "(SELECT MAX(rowid) FROM subjects) - ?", (MAX_ROWS,))
                db.execute("COMMIT")
            except sqlite3.Error:
                self._off()

    def _off(self) -> None:
        self.off = True
        try:
            self._db.close()
        except sqlite3.Error:
            pass
        self._db = None

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None
