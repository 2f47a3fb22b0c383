"""Brief -> prompts, grounded in the generator's vocabulary (docs/design.md §1, §5).

Two expanders share one output shape:
- `OfflineExpander` (the default): nearest training concepts to the brief by MiniLM
  similarity, colour and style words kept from the brief, prompts written with the
  training caption templates. Below a calibrated similarity floor, or for a brief not in
  English, it reports the brief as ungrounded rather than inventing a concept.
- `LLMExpander` (adgen.prompting.llm): an OpenAI-compatible model handed the nearest
  concepts; its replies are validated and fall back to the offline expander.

`run_expand` reads brief files, expands (concurrently for the LLM), and writes the jsonl
`adgen generate` reads, atomically, plus `<out>.skipped.jsonl` for briefs that produced
no prompt (bad line or ungrounded).
"""
from __future__ import annotations

import hashlib
import json
import re
import time
import unicodedata
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

from adgen.atomic import atomic_file
from adgen.captions import CANONICAL_TEMPLATE, COLOR_NAMES, TEMPLATES, caption, colors_in
from adgen.errors import AdgenError
from adgen.records import ID_MAX, RecordFileError, check_id, id_prefix, read_records
from adgen.prompting.vocab import prompt_name

# Calibrated on tests/data/briefs_labelled.jsonl by benchmarks/expand_accuracy.py: correct
# top concepts of English briefs score >= 0.41, unrelated business copy <= 0.29.
FLOOR = 0.35
# Variations may use the next-best concepts when they score within this of the best.
MARGIN = 0.05
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


class OfflineExpander:
    """Nearest-concept prompts in the training caption style; deterministic."""

    name = "offline"

    def __init__(self, vocab, floor: float = FLOOR, margin: float = MARGIN, top: int = 8):
        self.vocab = vocab
        self.floor = floor
        self.margin = margin
        self.top = top

    def ground(self, text: str, brief: str | None = None):
        """-> (matches best first, None) or (matches, reason the brief is ungrounded).
        Guarded concepts (prohibition, warning, mourning: adgen.prompting.vocab.GUARDED)
        are left out unless `brief` (default: `text` itself) asks for them."""
        problem = language_problem(text, getattr(self.vocab.encoder, "tokenizer", None))
        matches = self.vocab.nearest_allowed(text, top=self.top, brief=brief)
        if problem:
            return matches, problem
        best = matches[0]
        if best.score < self.floor:
            return matches, (f"nothing the generator knows is close: nearest concept "
                             f"{best.concept.name!r} scores {best.score:.2f} "
                             f"< floor {self.floor:.2f}")
        return matches, None

    def expand(self, brief: Brief, k: int, expansion: str = "offline") -> Expansion:
        matches, problem = self.ground(brief.text)
        if problem:
            return Expansion(brief, (), f"ungrounded: {problem}")
        best = matches[0].score
        usable = [m for m in matches if m.score >= max(self.floor, best - self.margin)]
        colours = colours_for(brief.text, k)
        template = template_for(brief.text)
        prompts = []
        for j in range(k):
            m = usable[j % len(usable)]
            prompts.append(ExpandedPrompt(
                caption(prompt_name(m.concept.name), colours[j], template), (m.concept.name,),
                expansion,
                colours[j], {"score": round(m.score, 4), "matched": m.phrase}))
        return Expansion(brief, tuple(prompts))


# ---------------------------------------------------------------- output

def to_records(expansion: Expansion, n: int | None = None) -> list[dict]:
    """Prompt-file lines for `adgen generate` (docs/design.md §5); extra keys are ignored there."""
    from adgen.prompting.adcopy import offline_copy
    out = []
    for j, p in enumerate(expansion.prompts):
        meta = {"expansion": p.expansion, "concepts": list(p.concepts),
                "brief_id": expansion.brief.id, "variation": j, **p.meta}
        if p.color:
            meta["color"] = p.color
        rules = offline_copy(expansion.brief.text, j)
        copy = p.copy or {"headline": rules["headline"], "cta": rules["cta"]}
        meta.setdefault("copy_source", "llm" if p.copy else "rules")
        meta["copy_lang"] = rules["lang"]
        rec = {"id": f"{expansion.brief.id}-{j}", "prompt": p.prompt,
               "brief": expansion.brief.text, "expansion": p.expansion,
               "concepts": list(p.concepts), "copy": copy, "meta": meta}
        if n is not None:
            rec["n"] = n
        out.append(rec)
    return out


def write_jsonl_atomic(path: Path, rows) -> None:
    with atomic_file(path, "w") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def skipped_path(out: Path) -> Path:
    """prompts.jsonl -> prompts.skipped.jsonl (beside it)."""
    return out.with_name(out.stem + ".skipped.jsonl")


# ---------------------------------------------------------------- the command

@dataclass(frozen=True)
class ExpandConfig:
    inputs: tuple[str, ...]
    out: str
    k: int = 3
    llm: str = "offline"  # offline | openai
    base_url: str | None = None
    model: str = "gpt-4o-mini"
    # the openai client's retries of a transport failure, and as many re-asks after
    # unusable replies; re-ask j waits up to backoff * 2**j seconds (jittered, capped 8 s)
    max_retries: int = 3
    timeout: float = 30.0  # seconds per request
    backoff: float = 0.5
    concurrency: int = 4
    cache: bool = True
    cache_dir: str | None = None
    concepts: str | None = None
    floor: float = FLOOR
    margin: float = MARGIN
    top: int = 8
    structured: str = "auto"  # auto | json_schema | json_object | none
    temperature: float = 0.7
    n: int | None = None

    def check(self) -> None:
        if not 1 <= self.k <= MAX_K:
            raise ExpandError(f"-k must be in [1, {MAX_K}], got {self.k}")
        if self.llm not in ("offline", "openai"):
            raise ExpandError(f"--llm must be offline or openai, got {self.llm!r}")
        if self.concurrency < 1 or self.max_retries < 0 or self.top < 1 or self.backoff < 0:
            raise ExpandError("--concurrency and --top must be >= 1, --max-retries and "
                              "--backoff >= 0")
        if self.timeout <= 0:
            raise ExpandError(f"--timeout must be positive, got {self.timeout}")
        if self.structured not in ("auto", "json_schema", "json_object", "none"):
            raise ExpandError("--structured must be auto, json_schema, json_object or none")
        if self.n is not None and not 1 <= self.n <= 1024:
            raise ExpandError(f"-n must be in [1, 1024], got {self.n}")
        if Path(self.out).suffix.lower() != ".jsonl":
            raise ExpandError(f"-o must name a .jsonl file, got {self.out}")

    def public(self) -> dict:
        """The resolved config for --dry-run. The key is never in it; credentials written
        into --base-url (user:pass@host) are masked."""
        d = asdict(self)
        if d["base_url"]:
            d["base_url"] = re.sub(r"(?<=://)[^/@]+@", "***@", d["base_url"])
        return d


@dataclass(frozen=True)
class ExpandSummary:
    briefs: int
    prompts: int
    errors: int
    ungrounded: int
    by_expansion: dict
    cache_hits: int
    seconds: float
    out: str
    skipped_file: str | None


def build_expander(cfg: ExpandConfig, vocab, client=None):
    offline = OfflineExpander(vocab, cfg.floor, cfg.margin, cfg.top)
    if cfg.llm == "offline":
        return offline
    from adgen.prompting.llm import LLMExpander
    return LLMExpander(vocab, offline, cfg, client=client)


def run_expand(cfg: ExpandConfig, client=None, vocab=None, progress: bool = True) -> ExpandSummary:
    """Reads briefs, expands them, writes `cfg.out` (+ skipped sidecar). `client`: an
    injected openai-compatible client for the LLM path (built from cfg when None)."""
    cfg.check()
    start = time.perf_counter()
    briefs, skipped = read_briefs(cfg.inputs)
    if cfg.llm == "openai" and client is None:
        from adgen.prompting.llm import make_client
        # a missing key fails before any work
        client = make_client(cfg.base_url, cfg.timeout, cfg.max_retries)
    if vocab is None:
        from adgen.prompting.vocab import Vocabulary
        vocab = Vocabulary.load(cfg.concepts, progress=progress)
    expander = build_expander(cfg, vocab, client)
    workers = cfg.concurrency if cfg.llm != "offline" else 1
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(briefs), desc=f"expanding ({expander.name})", unit="brief")
    results: list[Expansion] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for exp in pool.map(lambda b: expander.expand(b, cfg.k), briefs):
            results.append(exp)
            if bar:
                bar.update(1)
    if bar:
        bar.close()
    rows, counts = [], Counter()
    for exp in results:
        if not exp.prompts:
            skipped.append(Skipped(exp.brief.source, exp.brief.line, "ungrounded", exp.reason,
                                   exp.brief.id, exp.brief.text))
        for rec in to_records(exp, cfg.n):
            counts[rec["expansion"].split(":")[0]] += 1
            rows.append(rec)
    out = Path(cfg.out)
    write_jsonl_atomic(out, rows)
    side = skipped_path(out)
    skipped.sort(key=lambda s: (s.file, s.line))
    if skipped:
        write_jsonl_atomic(side, [asdict(s) for s in skipped])
    else:
        side.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    return ExpandSummary(
        len(briefs) + sum(s.kind == "error" for s in skipped), len(rows),
        sum(s.kind == "error" for s in skipped), sum(s.kind == "ungrounded" for s in skipped),
        dict(counts), getattr(expander, "cache_hits", 0), time.perf_counter() - start,
        str(out), str(side) if skipped else None)
