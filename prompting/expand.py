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

import json
import re
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm import tqdm

from adgen.atomic import atomic_file
from adgen.paths import unwritable
# brief files, expansion records and shared text rules; callers also find them here
from adgen.prompting.briefs import (MAX_BRIEF_CHARS, MAX_K, Brief, ExpandedPrompt,  # noqa: F401
                                    ExpandError, Expansion, Skipped, _check_brief,
                                    clean_text, colours_for, language_problem,
                                    palette_order, read_briefs, template_for)
from adgen.prompting.adcopy import offline_copy
from adgen.prompting.llm import LLMExpander, make_client
from adgen.prompting.vocab import Vocabulary, prompt_caption

# Calibrated on tests/data/briefs_labelled.jsonl by benchmarks/expand_accuracy.py: correct
# top concepts of English briefs score >= 0.41, unrelated business copy <= 0.29.
FLOOR = 0.35
# Variations may use the next-best concepts when they score within this of the best.
MARGIN = 0.05
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
                prompt_caption(m.concept.name, colours[j], template), (m.concept.name,),
                expansion,
                colours[j], {"score": round(m.score, 4), "matched": m.phrase}))
        return Expansion(brief, tuple(prompts))


# ---------------------------------------------------------------- output

def to_records(expansion: Expansion, n: int | None = None) -> list[dict]:
    """Prompt-file lines for `adgen generate` (docs/design.md §5); extra keys are ignored there."""
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


def check_writable(out: Path) -> None:
    """ExpandError (one line) when `out` cannot be written (adgen.paths.unwritable)."""
    problem = unwritable(out)
    if problem:
        raise ExpandError(f"cannot write {out}: {problem}")


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
    return LLMExpander(vocab, offline, cfg, client=client)


def run_expand(cfg: ExpandConfig, client=None, vocab=None, progress: bool = True) -> ExpandSummary:
    """Reads briefs, expands them, writes `cfg.out` (+ skipped sidecar). `client`: an
    injected openai-compatible client for the LLM path (built from cfg when None)."""
    cfg.check()
    start = time.perf_counter()
    check_writable(Path(cfg.out))  # before any brief is expanded (LLM calls cost money)
    briefs, skipped = read_briefs(cfg.inputs)
    if cfg.llm == "openai" and client is None:
        # a missing key fails before any work
        client = make_client(cfg.base_url, cfg.timeout, cfg.max_retries)
    if vocab is None:
        vocab = Vocabulary.load(cfg.concepts, progress=progress)
    expander = build_expander(cfg, vocab, client)
    workers = cfg.concurrency if cfg.llm != "offline" else 1
    bar = None
    if progress:
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
    side = skipped_path(out)
    skipped.sort(key=lambda s: (s.file, s.line))
    try:
        write_jsonl_atomic(out, rows)
        if skipped:
            write_jsonl_atomic(side, [asdict(s) for s in skipped])
        else:
            side.unlink(missing_ok=True)  # a stale list from an earlier run would mislead
    except OSError as exc:  # disk full, quota: the old file is still whole
        raise ExpandError(f"writing {exc.filename or out} failed: "
                          f"{exc.strerror or type(exc).__name__}; files are replaced whole or "
                          "not at all, so an earlier one is unchanged") from None
    return ExpandSummary(
        len(briefs) + sum(s.kind == "error" for s in skipped), len(rows),
        sum(s.kind == "error" for s in skipped), sum(s.kind == "ungrounded" for s in skipped),
        dict(counts), getattr(expander, "cache_hits", 0), time.perf_counter() - start,
        str(out), str(side) if skipped else None)
