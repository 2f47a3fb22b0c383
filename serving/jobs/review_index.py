"""What `adgen review` reads and writes in a job folder: the manifest as a paged index, the
decisions in review.jsonl, and which paths may be served (the export of the approved images
is adgen.serving.jobs.review_export).

    index = ReviewIndex(out); index.start()   # reads manifest.jsonl once: offsets, not lines
    page = index.page(offset=0, limit=60, q="shoe", decision="pending", decisions=d.current)
    d = Decisions(out)                         # review.jsonl: last line of a custom_id wins
    d.record("line-3-0-1", "approve")          # appended, flushed and fsynced before it returns
    safe_path(out, "images/a/a-0-s1.png")     # a job image's real path, never outside out

The index keeps, per image (manifest lines without "kind" or with "kind": "image"), the byte
offset of its current line (the last one of its custom_id), its lowered prompt + brief +
family (for the filter) and the offsets of its creatives' lines ("kind": "creative", custom
id `<image id>@<W>x<H>`). A page reads its few lines back from the file, so memory is
bounded by the number of images, never by what a line holds. Lines appended later (a job
still running, `adgen compose`) are read on the next call; a replaced or cut manifest is read
again from the start. A torn last line (a writer killed mid-line) waits until it is whole.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import sys
import threading
from array import array
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from adgen.errors import AdgenError
from adgen.records import read_records

MANIFEST = "manifest.jsonl"
REVIEW = "review.jsonl"
STATE_DIR = ".review"  # thumbnails; never exported, never listed
DECISIONS = ("approve", "reject", "clear")  # clear: back to undecided
FILTERS = ("all", "pending", "approved", "rejected")
MAX_LIMIT = 500
_FAMILY_RE = re.compile(r"\b(twemoji|noto|fluent)\b")
_SCAN = json.JSONDecoder().scan_once  # the C scanner without json.loads' per-call checks


class ReviewError(AdgenError):
    """A job folder that cannot be reviewed or exported; one line for the user."""


class PathRefused(ReviewError):
    """A requested path that is not an image file inside the job folder."""


class NoSuchFile(ReviewError):
    """A requested path inside the job that names no file."""


class NotSaved(ReviewError):
    """A decision that could not be written (full disk, file size limit, read-only job)."""


def family_of(line: dict) -> str:
    """The manifest's `family`, else the design family the prompt names, else ""."""
    fam = line.get("family")
    if isinstance(fam, str) and fam:
        return fam
    m = _FAMILY_RE.search(str(line.get("prompt") or "").lower())
    return m.group(1) if m else ""


def parse_line(raw: bytes) -> dict | None:
    try:
        text = raw.decode("utf-8")
        rec, end = _SCAN(text, 0)
        if text[end:].strip():
            return None
    except (UnicodeDecodeError, StopIteration, ValueError, RecursionError):
        return None
    return rec if rec.__class__ is dict else None


@dataclass(frozen=True)
class Page:
    total: int  # items matching the filter (so far, while indexing)
    offset: int
    items: list[dict]
    indexing: bool  # the manifest is still being read: more may match


class ReviewIndex:
    """The images of a job folder's manifest, in the order they first appear."""

    def __init__(self, out: Path):
        self.out = Path(out)
        self.manifest = self.out / MANIFEST
        if not self.manifest.is_file():
            raise ReviewError(f"{self.out} has no {MANIFEST}: run `adgen generate` into it first")
        self._lock = threading.Lock()       # guards what pages read
        self._reading = threading.Lock()    # one reader of the manifest at a time
        self.indexing = False               # a first read still under way (background)
        self._reset()

    def _reset(self) -> None:
        self.ids: list[str] = []           # position -> custom_id
        self.pos: dict[str, int] = {}      # custom_id -> position
        self.offsets = array("q")          # position -> offset of its current line
        self.texts: list[str] = []         # position -> lowered prompt, brief, family
        self.creatives: dict[int, list[int]] = {}  # position -> offsets of creative lines
        self._orphans: dict[str, list[int]] = {}   # creatives read before their image
        self._shared: dict[str, str] = {}  # one string per distinct text (n images a prompt)
        self._read = 0                     # bytes of the manifest indexed
        self._ino = None
        self.version = 0                   # changes whenever what a page shows may change
        self._cache: tuple | None = None   # (key, matching positions) of the last filter

    def __len__(self) -> int:
        return len(self.ids)

    def start(self, first_bytes: int = 4 << 20) -> None:
        """Reads the first `first_bytes` of the manifest now and the rest in a background
        thread; pages show what is read so far, so a 100k-image job answers its first page
        long before its last line is read (a small job is read whole before this returns)."""
        self._reading.acquire()  # handed to the thread: no request reads meanwhile
        try:
            self.indexing = True
            done = self._sync(budget=first_bytes)
        except BaseException:
            self.indexing = False
            self._reading.release()
            raise
        if done:
            self.indexing = False
            self._reading.release()
            return

        def rest():
            try:
                self._sync()
            except ReviewError as exc:
                print(f"warning: {exc}", file=sys.stderr, flush=True)
            finally:
                self.indexing = False
                self._reading.release()
        threading.Thread(target=rest, name="review-index", daemon=True).start()

    def sync(self, wait: bool = True) -> None:
        """Indexes the lines appended since the last call (all of them the first time).
        wait=False returns at once when another thread is reading."""
        if not self._reading.acquire(blocking=wait):
            return
        try:
            self._sync()
        finally:
            self._reading.release()

    def _sync(self, budget: int | None = None) -> bool:
        """Reads on from where the index stands; False if it stopped after `budget` bytes
        with more to read."""
        try:
            st = os.stat(self.manifest)
        except OSError as exc:
            raise ReviewError(f"{self.manifest}: cannot be read "
                              f"({exc.strerror or exc})") from None
        with self._lock:
            if st.st_ino != self._ino or st.st_size < self._read:
                self._reset()
                self._ino = st.st_ino
            offset = start = self._read
        if st.st_size == offset:
            return True
        with open(self.manifest, "rb") as f:
            f.seek(offset)
            torn = False
            while not torn:
                if budget is not None and offset - start >= budget:
                    return False
                chunk = f.readlines(1 << 21)
                if not chunk:
                    break
                parsed = []  # parsed outside the lock: pages keep being answered
                for raw in chunk:
                    if not raw.endswith(b"\n"):
                        torn = True  # read again once its writer ends it
                        break
                    parsed.append((offset, parse_line(raw)))
                    offset += len(raw)
                with self._lock:
                    for at, rec in parsed:
                        if rec is not None:
                            self._add(rec, at)
                    self._read = offset
                    self.version += 1
        return True

    def _add(self, rec: dict, offset: int) -> None:
        cid = rec.get("custom_id")
        if not isinstance(cid, str) or not isinstance(rec.get("path"), str):
            return
        kind = rec.get("kind", "image")
        if kind == "creative":
            owner = cid.rsplit("@", 1)[0]
            at = self.pos.get(owner)
            if at is None:
                self._orphans.setdefault(owner, []).append(offset)
            else:
                self.creatives.setdefault(at, []).append(offset)
            return
        if kind != "image":
            return
        text = "\n".join((str(rec.get("prompt") or ""), str(rec.get("brief") or ""),
                          family_of(rec))).lower()
        text = self._shared.setdefault(text, text)
        at = self.pos.get(cid)
        if at is None:
            at = self.pos[cid] = len(self.ids)
            self.ids.append(cid)
            self.offsets.append(offset)
            self.texts.append(text)
            if cid in self._orphans:
                self.creatives[at] = self._orphans.pop(cid)
        else:  # a rerun's line for the same image: the last one wins
            self.offsets[at] = offset
            self.texts[at] = text

    def matching(self, q: str = "", decision: str = "all", decisions: dict | None = None,
                 decisions_version: int = 0) -> list[int] | range:
        """Positions whose prompt/brief/family holds every word of q, with that decision."""
        if decision not in FILTERS:
            raise ReviewError(f"decision filter must be one of {', '.join(FILTERS)}")
        words = q.lower().split()
        if not words and decision == "all":
            return range(len(self.ids))
        key = (tuple(words), decision, self.version,
               decisions_version if decision != "all" else 0)
        cache = self._cache
        if cache is not None and cache[0] == key:
            return cache[1]
        found = range(len(self.ids))
        if words:
            texts = self.texts
            found = [i for i in found if all(w in texts[i] for w in words)]
        if decision != "all":
            want = {"pending": None, "approved": "approve", "rejected": "reject"}[decision]
            d, ids = decisions or {}, self.ids
            found = [i for i in found if d.get(ids[i]) == want]
        self._cache = (key, found)
        return found

    def page(self, offset: int = 0, limit: int = 60, q: str = "", decision: str = "all",
             decisions: dict | None = None, decisions_version: int = 0) -> Page:
        """Items [offset, offset + limit) of those matching; each a dict for the page."""
        self.sync(wait=False)
        offset, limit = max(0, int(offset)), max(0, min(int(limit), MAX_LIMIT))
        with self._lock:
            found = self.matching(q, decision, decisions, decisions_version)
            chosen = list(found[offset:offset + limit])
            spots = [(self.ids[i], self.offsets[i], self.creatives.get(i, ())) for i in chosen]
            total = len(found)
        items = []
        with open(self.manifest, "rb") as f:
            for cid, line_at, creative_at in spots:
                rec = _read_line(f, line_at)
                if rec is None or rec["custom_id"] != cid:
                    continue  # the manifest was replaced under us: the next sync reads it
                creatives: dict[str, dict] = {}
                for at in creative_at:
                    c = _read_line(f, at)
                    if c is not None:
                        creatives[c["custom_id"]] = c  # a later line of the same one wins
                items.append(self._item(rec, list(creatives.values()), decisions or {}))
        return Page(total, offset, items, self.indexing)

    def _item(self, rec: dict, creatives: list[dict], decisions: dict) -> dict:
        seed = rec.get("seed")
        return {
            "custom_id": rec["custom_id"], "id": rec.get("id"), "k": rec.get("k"),
            "prompt": rec.get("prompt") or "", "brief": rec.get("brief") or "",
            # a seed goes up to 2^63 - 1: as text, JavaScript numbers would round it
            "seed": None if seed is None else str(seed), "family": family_of(rec),
            "path": rec["path"], "size": rec.get("size"), "format": rec.get("format"),
            "missing": not _inside(self.out, rec["path"]),
            "decision": decisions.get(rec["custom_id"]),
            "creatives": [{"custom_id": c["custom_id"], "size": c.get("size"),
                           "path": c["path"], "headline": c.get("headline")}
                          for c in creatives if isinstance(c.get("path"), str)],
        }

    def lines_of(self, custom_id: str) -> list[bytes]:
        """The current manifest lines of an image and its creatives, as they are on disk."""
        self.sync()
        with self._lock:
            at = self.pos.get(custom_id)
            if at is None:
                return []
            spots = [self.offsets[at], *self.creatives.get(at, ())]
        out: dict[str, bytes] = {}
        with open(self.manifest, "rb") as f:
            for line_at in spots:
                f.seek(line_at)
                raw = f.readline()
                rec = parse_line(raw)
                if rec is not None:
                    out[rec["custom_id"]] = raw
        return list(out.values())


def _inside(root: Path, rel: str) -> bool:
    try:
        safe_path(root, rel)
        return True
    except ReviewError:
        return False


def _read_line(f, offset: int) -> dict | None:
    f.seek(offset)
    rec = parse_line(f.readline())
    if rec is None or not isinstance(rec.get("custom_id"), str) \
            or not isinstance(rec.get("path"), str):
        return None
    return rec


class Decisions:
    """review.jsonl beside the manifest: `{custom_id, decision, at}` lines, appended only.

    record() returns once the line is on disk (write, fsync; the folder too when the file is
    new), so a decision the page was told is saved survives a crash. Reading takes the last
    line of each custom_id; a line that is not whole JSON (torn by a crash) is skipped, and
    the next append starts on a new line so it never joins it."""

    def __init__(self, out: Path):
        self.path = Path(out) / REVIEW
        self._lock = threading.Lock()
        self.current: dict[str, str] = {}  # custom_id -> approve | reject
        self.version = 0
        self.skipped = 0  # lines that were not a decision (torn or foreign)
        if self.path.is_symlink():
            raise ReviewError(f"{self.path} is a symbolic link; refusing to write through it")
        if self.path.exists():
            for _, rec, err in read_records(self.path, kind="review"):
                if err is not None or rec.get("decision") not in DECISIONS \
                        or not isinstance(rec.get("custom_id"), str):
                    self.skipped += 1
                    continue
                self._apply(rec["custom_id"], rec["decision"])
        self._fd: int | None = None

    def _apply(self, custom_id: str, decision: str) -> None:
        if decision == "clear":
            self.current.pop(custom_id, None)
        else:
            self.current[custom_id] = decision
        self.version += 1

    def _open(self) -> int:
        new = not self.path.exists()
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT
                     | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0), 0o644)
        try:
            size = os.fstat(fd).st_size
            if size:
                with open(self.path, "rb") as f:
                    f.seek(size - 1)
                    if f.read(1) != b"\n":
                        os.write(fd, b"\n")  # end a torn line so it never joins the next
            if new:
                os.fsync(fd)
                dfd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
                try:
                    os.fsync(dfd)
                finally:
                    os.close(dfd)
        except BaseException:
            os.close(fd)
            raise
        return fd

    def record(self, custom_id: str, decision: str) -> dict:
        """Appends one decision and returns its line (after fsync)."""
        if decision not in DECISIONS:
            raise ReviewError(f"decision must be one of {', '.join(DECISIONS)}, "
                              f"not {decision!r}")
        rec = {"custom_id": custom_id, "decision": decision,
               "at": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        data = (json.dumps(rec, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            size = None
            try:
                if self._fd is None:
                    self._fd = self._open()
                size = os.fstat(self._fd).st_size
                if os.write(self._fd, data) != len(data):
                    raise OSError(errno.EFBIG, "disk full or file size limit reached")
                os.fsync(self._fd)
            except OSError as exc:
                if self._fd is not None:
                    if size is not None:  # cut a partial line back: the file stays whole lines
                        with contextlib.suppress(OSError):
                            os.ftruncate(self._fd, size)
                    os.close(self._fd)
                    self._fd = None
                raise NotSaved(f"{self.path}: decision not saved "
                                  f"({exc.strerror or exc})") from None
            self._apply(custom_id, decision)
        return rec

    def counts(self) -> dict[str, int]:
        with self._lock:
            values = list(self.current.values())
        return {"approved": values.count("approve"), "rejected": values.count("reject")}

    def snapshot(self) -> tuple[dict[str, str], int]:
        with self._lock:
            return dict(self.current), self.version

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


# ---------------------------------------------------------------- files

IMAGE_SUFFIXES = (".png", ".webp", ".jpg", ".jpeg")


def safe_path(root: Path, rel: str) -> Path:
    """root/rel when it names an existing image file inside root (after links are
    resolved); ReviewError otherwise: absolute paths, `..`, backslashes, NUL, links that
    lead out, other file types and the review state are refused."""
    if not rel or "\x00" in rel or "\\" in rel or rel.startswith("/"):
        raise PathRefused(f"path {rel[:80]!r} is not a relative path in the job")
    parts = rel.split("/")
    if any(p in ("", ".", "..") for p in parts) or parts[0] == STATE_DIR:
        raise PathRefused(f"path {rel[:80]!r} is not allowed")
    if not rel.lower().endswith(IMAGE_SUFFIXES):
        raise PathRefused(f"path {rel[:80]!r} is not an image")
    base = Path(root).resolve()
    try:
        real = (base / rel).resolve(strict=True)
    except (OSError, RuntimeError):
        raise NoSuchFile(f"path {rel[:80]!r}: no such file") from None
    if not real.is_relative_to(base):
        raise PathRefused(f"path {rel[:80]!r} leads outside the job folder")
    if not real.is_file():
        raise NoSuchFile(f"path {rel[:80]!r} is not a file")
    return real
