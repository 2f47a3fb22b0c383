"""Briefs and their expansions: the brief files both expanders read (adgen.records rules,
per-line errors, ids), the records they return (`Expansion` of `ExpandedPrompt`s), and the
text rules they share (cleaning, palette order, style template, the English check).

adgen.prompting.expand (the offline expander and `run_expand`) and adgen.prompting.llm (the
LLM expander) both build on this module.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from adgen.captions import CANONICAL_TEMPLATE, COLOR_NAMES, TEMPLATES, colors_in
from adgen.errors import AdgenError
from adgen.records import ID_MAX, RecordFileError, check_id, id_prefix, read_records

MAX_BRIEF_CHARS = 1000
MAX_K = 64
# A brief's prompts are `<brief id>-<j>` (j < k <= MAX_K): the brief id leaves room for that.
MAX_BRIEF_ID = ID_MAX - len(f"-{MAX_K - 1}")
# Style words in a brief select the training template that says the same thing.
_STYLE_TEMPLATES = (("icon", TEMPLATES[1]), ("emoji", TEMPLATES[2]),
                    ("illustration", TEMPLATES[3]), ("sticker", TEMPLATES[0]))


class ExpandError(AdgenError):
    """A brief file or option that makes the whole run impossible."""


@dataclass(frozen=True)
class Brief:
    id: str
    text: str
    source: str = ""
    line: int = 0


@dataclass(frozen=True)
class Skipped:
    """A brief line that produced no prompt: kind 'error' (bad line) or 'ungrounded'."""
    file: str
    line: int
    kind: str
    reason: str
    brief_id: str | None = None
    brief: str | None = None


@dataclass(frozen=True)
class ExpandedPrompt:
    prompt: str
    concepts: tuple[str, ...]
    expansion: str  # offline | llm:<model> | fallback:<reason>
    color: str | None = None
    meta: dict = field(default_factory=dict, compare=False)
    # {"headline", "cta"} validated from the LLM; None: written by the offline rules
    copy: dict | None = field(default=None, compare=False)


@dataclass(frozen=True)
class Expansion:
    brief: Brief
    prompts: tuple[ExpandedPrompt, ...]
    reason: str = ""  # why there are no prompts (ungrounded / fallback + ungrounded)


# ---------------------------------------------------------------- brief files

def clean_text(text: str) -> str:
    """Control and format characters become spaces; whitespace runs collapse."""
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co") else ch
                   for ch in text)
    return re.sub(r"\s+", " ", text).strip()


def _check_brief(text) -> str:
    if not isinstance(text, str):
        raise ValueError(f"brief must be a string, got {type(text).__name__}")
    text = clean_text(text)
    if not text:
        raise ValueError("brief is empty")
    if len(text) > MAX_BRIEF_CHARS:
        raise ValueError(f"brief is {len(text)} characters, over {MAX_BRIEF_CHARS}")
    return text


def _brief(rec: dict, default_id: str, source: str, line: int) -> Brief:
    raw = rec.get("brief")
    if raw in (None, ""):
        raw = rec.get("prompt")
    if raw is None:
        raise ValueError("no 'brief' (or 'prompt') field")
    text = _check_brief(raw)
    brief_id = rec.get("id")
    brief_id = check_id(default_id if brief_id in (None, "") else brief_id)
    if len(brief_id) > MAX_BRIEF_ID:
        raise ValueError(f"id is {len(brief_id)} characters: a brief id of at most "
                         f"{MAX_BRIEF_ID} leaves room for the '-<k>' of its prompt ids")
    return Brief(brief_id, text, source, line)


def read_briefs(paths) -> tuple[list[Brief], list[Skipped]]:
    """Brief files (.txt/.jsonl/.csv, read by adgen.records like prompt files) ->
    (briefs, per-line errors). Ids unique across files.

    Ids: a record's own `id`, else `line-<n>` (prefixed `<file stem>.` with several files).
    A record's text is its `brief` field, else its `prompt` (a .txt line is the brief).
    """
    paths = [Path(p) for p in paths]
    if not paths:
        raise ExpandError("no brief files given")
    briefs, skipped, seen = [], [], set()
    for path in paths:
        source = str(path)
        prefix = id_prefix(path) if len(paths) > 1 else ""
        try:
            for line, rec, err in read_records(path, "brief", "brief", ("brief", "prompt")):
                reason = None if err is None else err.reason
                if err is None:
                    try:
                        brief = _brief(rec, f"{prefix}line-{line}", source, line)
                        if brief.id in seen:
                            raise ValueError(f"duplicate id {brief.id!r}")
                    except ValueError as exc:
                        reason = str(exc)
                if reason is not None:
                    skipped.append(Skipped(source, line, "error", reason))
                    continue
                seen.add(brief.id)
                briefs.append(brief)
        except RecordFileError as exc:
            raise ExpandError(str(exc)) from None
    return briefs, skipped


# ---------------------------------------------------------------- offline expander

def palette_order(text: str) -> list[str]:
    """A deterministic per-brief permutation of the palette (sha256, no RNG versions)."""
    return sorted(COLOR_NAMES, key=lambda c: hashlib.sha256(f"{text}\0{c}".encode())
                  .hexdigest())


def colours_for(text: str, k: int) -> list[str]:
    """k background colours: the brief's own colour words first, then its palette order."""
    # "Black Friday" is a date, not a background colour.
    named = colors_in(re.sub(r"\bblack friday\b", " ", text, flags=re.I))
    if named:
        return [named[j % len(named)] for j in range(k)]
    order = palette_order(text)
    return [order[j % len(order)] for j in range(k)]


def template_for(text: str) -> str:
    words = set(re.findall(r"[a-z]+", text.lower()))
    for word, template in _STYLE_TEMPLATES:
        if word in words or word + "s" in words:
            return template
    return CANONICAL_TEMPLATE


def language_problem(text: str, tokenizer=None) -> str | None:
    """Why the English-only offline path cannot read `text`, or None if it can."""
    letters = [ch for ch in text if ch.isalpha()]
    if not letters:
        return "brief has no words"
    latin = sum(1 for ch in letters if ord(ch) < 0x250)
    if latin / len(letters) < 0.5:
        return "brief is not in English (the offline expander knows English concept " \
               "names only; try --llm openai)"
    if tokenizer is not None:
        words = [w for w in re.findall(r"[A-Za-z]+", text) if len(w) >= 3]
        if len(words) >= 2:
            # Gibberish has almost no whole-word pieces; real briefs here have >= 1/3
            # (product names split into pieces: 'pineapple' -> 'pine', '##apple').
            known = sum(1 for w in words if _known_word(tokenizer, w.lower()))
            if known / len(words) < 0.25:
                return "brief is mostly words the text encoder does not know"
    return None


def _known_word(tokenizer, word: str) -> bool:
    """In MiniLM's word-piece vocabulary whole, or after dropping a common English suffix."""
    for cut in ("", "s", "es", "ed", "ing", "er", "ers", "ly"):
        stem = word[:len(word) - len(cut)] if cut and word.endswith(cut) else word
        if (not cut or stem != word) and len(stem) >= 2 \
                and len(tokenizer.encode(stem, add_special_tokens=False).ids) == 1:
            return True
    return False


