"""Prompt files (docs/design.md §5): .txt, .jsonl and .csv into validated prompt items.

The files are read by adgen.records (the reader briefs share): every line is judged on its
own, a bad line becomes a `LineError` (file, line number, reason) and never stops the
others. Ids are checked by records.check_id (``[A-Za-z0-9._-]{1,128}``, so they can never
escape the output folder) and must be unique across all files of one job.

Seeds: a line's own ``seed`` s gives image k the seed s + k (so seed s reproduces the
image seen before exactly); otherwise image k of prompt `id` gets
``derive_seed(base_seed, id, k)`` (stable under resharding and reordering).
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from adgen.contract import MAX_PROMPT_BYTES, MAX_SEED
from adgen.latents import derive_seed, derive_seeds
from adgen import records
from adgen.records import ID_RE, SUFFIXES, LineError, RecordFileError, check_id
from adgen.prompting.adcopy import CTA_MAX, HEADLINE_MAX

__all__ = ["ID_RE", "SUFFIXES", "LineError", "MAX_N", "PromptFileError", "PromptItem",
           "check_prompt", "file_prefix", "iter_records", "open_prompt_file",
           "parse_prompt_file", "parse_prompt_files"]

# Rejected in prompts: C0 controls but TAB, DEL, C1 controls, U+2028/U+2029 line breaks.
_CONTROL_RE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029]")
MAX_N = 1024  # images per prompt; more is almost certainly a typo
# A prompt file that cannot be read at all: the reader's error, under the name jobs know.
PromptFileError = RecordFileError


@dataclass(frozen=True)
class PromptItem:
    id: str
    prompt: str
    n: int
    seed: int | None = None  # the line's own base seed, if it gave one
    brief: str | None = None
    meta: dict = field(default_factory=dict, hash=False, compare=False)
    source: str = ""
    line: int = 0
    copy: dict | None = field(default=None, hash=False, compare=False)  # headline, cta

    def seed_for(self, k: int, base_seed: int) -> int:
        if self.seed is not None:
            return self.seed + k
        return derive_seed(base_seed, self.id, k)

    def seeds(self, base_seed: int) -> list[int]:
        """[self.seed_for(k, base_seed) for k in range(self.n)], faster."""
        if self.seed is not None:
            return list(range(self.seed, self.seed + self.n))
        return derive_seeds(base_seed, self.id, self.n)


def check_prompt(prompt) -> str:
    """A non-empty str of at most MAX_PROMPT_BYTES UTF-8 bytes, else ValueError(reason)."""
    if not isinstance(prompt, str):
        raise ValueError(f"prompt must be a string, got {type(prompt).__name__}")
    text = prompt.strip()
    if not text:
        raise ValueError("prompt is empty")
    bad = _CONTROL_RE.search(text)
    if bad:
        # NUL usually means a UTF-16 file; other controls (ESC, CR, line breaks) would make
        # the one-line PNG `parameters` chunk and terminal output lie about the prompt.
        hint = " (is the file UTF-16?)" if bad.group() == "\x00" else ""
        raise ValueError(f"prompt contains control character U+{ord(bad.group()):04X} at "
                         f"position {bad.start()}{hint}")
    try:  # ASCII (the usual prompt) needs no encoding to know its size: a job's hot loop
        size = len(text) if text.isascii() else len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise ValueError("prompt is not valid UTF-8 (lone surrogate)") from None
    if size > MAX_PROMPT_BYTES:
        raise ValueError(f"prompt is {size} bytes, over the {MAX_PROMPT_BYTES}-byte limit")
    return text


def _check_int(value, what: str, lo: int, hi: int) -> int:
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{what} must be an integer, got {value!r}")
    if not lo <= value <= hi:
        raise ValueError(f"{what} must be in [{lo}, {hi}], got {value}")
    return value


def _make_item(rec: dict, default_id: str, default_n: int, source: str, line: int) -> PromptItem:
    prompt = check_prompt(rec.get("prompt"))
    item_id = rec.get("id")
    item_id = check_id(default_id if item_id in (None, "") else item_id)
    n = default_n if rec.get("n") in (None, "") else _check_int(rec["n"], "n", 1, MAX_N)
    seed = None
    if rec.get("seed") not in (None, ""):
        seed = _check_int(rec["seed"], "seed", 0, MAX_SEED)
        if seed + n - 1 > MAX_SEED:
            raise ValueError(f"seed {seed} + n {n} overflows 2**63-1")
    brief = rec.get("brief")
    if brief is not None and not isinstance(brief, str):
        raise ValueError("brief must be a string")
    meta = {} if rec.get("meta") is None else rec["meta"]  # [] or "" is a mistake, not {}
    if not isinstance(meta, dict):
        raise ValueError("meta must be an object")
    return PromptItem(item_id, prompt, n, seed, brief or None, meta, source, line,
                      _check_copy(rec.get("copy")))


def _check_copy(copy) -> dict | None:
    """A line's ad copy ({"headline", "cta"}, from `adgen expand`): limits as there."""
    if copy is None:
        return None
    if not isinstance(copy, dict):
        raise ValueError("copy must be an object {\"headline\", \"cta\"}")
    out = {}
    for key, limit in (("headline", HEADLINE_MAX), ("cta", CTA_MAX)):
        value = copy.get(key, "")
        if not isinstance(value, str) or len(value) > limit or _CONTROL_RE.search(value):
            raise ValueError(f"copy.{key} must be one line of at most {limit} characters")
        out[key] = value.strip()
    return out


def open_prompt_file(path: str | Path):
    """The file opened for streaming (binary); PromptFileError if it cannot be read."""
    return records.open_records(path, "prompt")


def iter_records(path: str | Path, f):
    """(line, record dict, None) or (line, None, LineError) per non-blank line of an open
    prompt file, in line order, one line at a time (adgen.records.iter_records)."""
    return records.iter_records(path, f, "prompt")


def file_prefix(index: int, path) -> str:
    """Default ids of later files carry the file stem so `line-<n>` cannot collide."""
    return "" if index == 0 else records.id_prefix(path)


def parse_prompt_file(path: str | Path, default_n: int = 1, seen: set[str] | None = None,
                      id_prefix: str = "") -> tuple[list[PromptItem], list[LineError]]:
    """One file -> (good items, per-line errors). `seen` carries ids across files.

    Lines without an id get `<id_prefix>line-<n>`. Holds the whole file's items: a job
    streams instead (adgen.serving.jobs.prompt_stream)."""
    seen = set() if seen is None else seen
    items, errors = [], []
    source = str(path)
    for line, rec, err in records.read_records(path, "prompt", "prompt"):
        if err is None:
            try:
                item = _make_item(rec, f"{id_prefix}line-{line}", default_n, source, line)
                if item.id in seen:
                    raise ValueError(f"duplicate id {item.id!r}")
            except ValueError as exc:
                err = LineError(source, line, str(exc))
        if err is not None:
            errors.append(err)
            continue
        seen.add(item.id)
        items.append(item)
    errors.sort(key=lambda e: e.line)
    return items, errors


def parse_prompt_files(paths, default_n: int = 1) -> tuple[list[PromptItem], list[LineError]]:
    """Several files -> items with ids unique across all of them."""
    seen: set[str] = set()
    items, errors = [], []
    for index, p in enumerate(paths):
        i, e = parse_prompt_file(p, default_n, seen, file_prefix(index, p))
        items.extend(i)
        errors.extend(e)
    return items, errors
