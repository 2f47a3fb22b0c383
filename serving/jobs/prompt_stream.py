"""Prompt files as a stream: a job's items and bad lines in bounded memory.

    for x in stream_plan(("prompts.jsonl",), default_n=4, shard=(0, 16)):
        ...  # a PromptItem of this shard, or a LineError this shard reports

Lines are read one at a time and judged in windows of WINDOW lines. What a job of any size
must not hold is the set of ids seen so far (ids are unique across all files of a job), so:

- a Bloom filter of fixed size (2 bits per byte of prompt file and shard, rounded down to
  a power of two, at most 128 MiB: ~1e-9 false positives per id for 100-byte lines) answers
  "certainly new" for almost every id;
- an id it calls "maybe seen" is a suspect: its line is held back in a temporary sqlite
  file (never memory), and once the files are read, one more pass finds the first valid
  line of every suspect id. That line is the item; every later one is a duplicate-id
  error, exactly as parse_prompt_files reports it. Without suspects there is no 2nd pass.

Style: `style` (a design family, adgen.captions.FAMILIES) appends the family phrase to every
prompt before it is judged (styled; the Python API shares it), so the byte limit, the
manifest and a resume all see the prompt the model gets.

Shards: a line whose id can be read belongs to shard sha256(id) mod n (stable when files
are edited or reordered; all lines with one id land in one shard, so duplicates are found
within the shard); a line without a readable id is reported by shard line mod n. Other
shards' lines cost a read and a hash: no validation, nothing held.
"""
from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import tempfile
from pathlib import Path

import numpy as np

from adgen.captions import family_phrase
from adgen.records import ID_RE, LineError, read_records
from adgen.serving.jobs.prompts import PromptItem, _make_item, file_prefix

WINDOW = 4096
BLOOM_MAX_BITS = 1 << 30  # 128 MiB
BLOOM_K = 7


def shard_of(item_id: str, n: int) -> int:
    return int.from_bytes(hashlib.sha256(item_id.encode()).digest()[:8], "big") % n


class Bloom:
    """A fixed-size Bloom filter over str ids, checked and filled a window at a time."""

    def __init__(self, bits: int):
        self.bits = 1 << max(16, min(BLOOM_MAX_BITS, int(bits)).bit_length() - 1)
        self.table = np.zeros(self.bits // 8, dtype=np.uint8)  # pages touched on use only

    def _positions(self, ids: list[str]) -> np.ndarray:
        h = np.fromiter((hash(x) for x in ids), dtype=np.int64, count=len(ids)).view(np.uint64)
        h1, h2 = h & np.uint64(0xFFFFFFFF), (h >> np.uint64(32)) | np.uint64(1)
        k = np.arange(BLOOM_K, dtype=np.uint64)[:, None]
        return (h1[None, :] + k * h2[None, :]) & np.uint64(self.bits - 1)  # [K, len(ids)]

    def check_and_add(self, ids: list[str]) -> np.ndarray:
        """bool per id: maybe added before this call. Then adds them all."""
        if not ids:
            return np.zeros(0, dtype=bool)
        pos = self._positions(ids)
        byte, mask = pos >> np.uint64(3), np.left_shift(1, pos & np.uint64(7)).astype(np.uint8)
        seen = np.all(self.table[byte] & mask, axis=0)
        np.bitwise_or.at(self.table, byte.ravel(), mask.ravel())
        return seen


def styled(prompt, style: str | None):
    """'a cat', 'noto' -> 'a cat, in noto emoji style' (adgen.captions.family_phrase); None
    leaves the prompt as it is, and so does a blank one or one that is not text (validation
    reports it). An unknown family is a KeyError naming the known ones."""
    if style is None or not isinstance(prompt, str) or not prompt.strip():
        return prompt
    return f"{prompt.strip()}, {family_phrase(style)}"


def _lines_in_shard(paths, default_n: int, shard: tuple[int, int], style: str | None = None):
    """(file index, PromptItem or LineError) for this shard's lines, in file order."""
    i, n = shard
    for index, path in enumerate(paths):
        source, prefix = str(path), file_prefix(index, path)
        for line, rec, err in read_records(path, "prompt", "prompt"):
            if err is not None:
                if line % n == i:
                    yield index, err
                continue
            item_id = rec.get("id")
            item_id = f"{prefix}line-{line}" if item_id in (None, "") else item_id
            if n > 1:
                readable = isinstance(item_id, str) and ID_RE.fullmatch(item_id)
                if (shard_of(item_id, n) if readable else line % n) != i:
                    continue
            if style is not None:
                rec = {**rec, "prompt": styled(rec.get("prompt"), style)}
            try:
                yield index, _make_item(rec, item_id, default_n, source, line)
            except ValueError as exc:
                yield index, LineError(source, line, str(exc))


def stream_plan(paths, default_n: int = 1, shard: tuple[int, int] = (0, 1),
                window: int = WINDOW, style: str | None = None):
    """PromptItem and LineError of this shard, every id unique; see the module docstring."""
    paths = [str(p) for p in paths]
    size = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    bloom = Bloom(max(1 << 16, 2 * size // shard[1]))  # this shard's share of the ids
    held = None  # the suspects' sqlite file, created on the first suspect
    buf: list = []
    try:
        for pair in _lines_in_shard(paths, default_n, shard, style):
            buf.append(pair)
            if len(buf) >= window:
                held = yield from _judge(buf, bloom, held)
                buf = []
        held = yield from _judge(buf, bloom, held)
        if held is not None:
            yield from _resolve(held, paths, default_n, shard, style)
    finally:
        if held is not None:
            held.close()


def _judge(buf, bloom: Bloom, held):
    items = [x for _, x in buf if isinstance(x, PromptItem)]
    seen = bloom.check_and_add([it.id for it in items])
    suspect = {id(it) for it, s in zip(items, seen) if s}
    first: set[str] = set()  # exact within the window
    for index, x in buf:
        if isinstance(x, PromptItem):
            if id(x) in suspect:
                held = held or _Held()
                held.add(index, x)
                continue
            if x.id in first:
                yield LineError(x.source, x.line, f"duplicate id {x.id!r}")
                continue
            first.add(x.id)
        yield x
    return held


class _Held:
    """Suspect lines, on disk: (file index, line) -> the item, to be judged at the end."""

    def __init__(self):
        fd, self.path = tempfile.mkstemp(prefix="adgen-ids-", suffix=".sqlite")
        os.close(fd)
        self.db = sqlite3.connect(self.path)
        self.db.executescript(
            "PRAGMA journal_mode=OFF; PRAGMA synchronous=OFF;"
            "CREATE TABLE held(file INT, line INT, id TEXT, item TEXT, PRIMARY KEY(file, line));"
            "CREATE INDEX held_id ON held(id);"
            "CREATE TABLE first(id TEXT PRIMARY KEY, file INT, line INT) WITHOUT ROWID;")

    def add(self, index: int, it: PromptItem) -> None:
        self.db.execute("INSERT INTO held VALUES (?, ?, ?, ?)", (index, it.line, it.id, json.dumps(
            [it.id, it.prompt, it.n, it.seed, it.brief, it.meta, it.source, it.line, it.copy])))

    def close(self) -> None:
        self.db.close()
        Path(self.path).unlink(missing_ok=True)


def _resolve(held: _Held, paths, default_n: int, shard, style: str | None = None):
    """Second pass: the first valid line of each suspect id wins; the others are duplicates."""
    db = held.db
    is_held = "SELECT 1 FROM held WHERE id = ? LIMIT 1"
    for index, x in _lines_in_shard(paths, default_n, shard, style):
        if isinstance(x, PromptItem) and db.execute(is_held, (x.id,)).fetchone():
            db.execute("INSERT OR IGNORE INTO first VALUES (?, ?, ?)", (x.id, index, x.line))
    rows = db.execute("SELECT h.file, h.line, h.item, f.file, f.line FROM held h "
                      "JOIN first f ON f.id = h.id ORDER BY h.file, h.line")
    for index, line, item, f_index, f_line in rows:
        i, prompt, n, seed, brief, meta, source, ln, copy = json.loads(item)
        if (index, line) == (f_index, f_line):
            yield PromptItem(i, prompt, n, seed, brief, meta, source, ln, copy)
        else:
            yield LineError(source, ln, f"duplicate id {i!r}")
