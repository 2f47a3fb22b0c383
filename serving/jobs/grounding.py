"""Grounding: which known concept a prompt is drawn as, and how sure that choice is.

The generator draws one concept of its concept list (a hard choice, never a blend), so a
prompt naming something it does not know is drawn as the nearest known concept. Every
image's manifest line says so (docs/design.md §5):

    {"concept": "headphone", "score": 0.607, "grounded": false}

`score` is the cosine similarity of the prompt's subject to the nearest concept, scored by
the offline expander's vocabulary (adgen.prompting.vocab.Vocabulary.nearest: the concept
names, aliases and categories embedded with the MiniLM text encoder the server runs), or
1.0 when the subject is a concept's own name or specific alias word for word ("a red
apple": what the offline expander writes), which needs no encoder; `grounded` is score >=
THRESHOLD. The subject is the prompt less the caption templates' own words (style,
background colour, design family): they are in every prompt, known or not, and would
otherwise decide the match ("a dumpling ... on a navy background" is nearest to "military
helmet" as a whole, to "dumpling" as a subject).

A job embeds each distinct subject that names no concept word for word once (a bounded
cache across its windows), in batches, a window ahead of the requests (in a worker
thread), so memory stays bounded by the window;
subjects any earlier job of this machine grounded are read back from the grounding cache
(adgen.serving.jobs.grounding_cache) instead, and the encoder loads only for a subject it
lacks. Without a concept list or a text encoder the grounding is None and the job says why.
"""
from __future__ import annotations

import json
import re
import threading
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from adgen.captions import COLOR_NAMES, FAMILIES
from adgen.errors import AdgenError
from adgen.paths import grounding_cache_path, text_encoder_dir
from adgen.prompting.vocab import Concept, Vocabulary, default_concepts_path, \
    embedding_cache_key, encoder_dir_id, literal_names, load_concepts, named_concept
from adgen.serving.jobs.grounding_cache import GroundingCache
from adgen.serving.jobs.job_resume import ImageTask
from adgen.serving.runtime.text import ONNX_NAME, TOKENIZER_NAME, MissingArtifactError, \
    TextEncoder

# Measured by `python -m benchmarks.grounding_threshold` (docs/design.md §5): the subjects of
# 445 distinct prompts the offline expander writes (examples/briefs.txt and the labelled
# brief sets of tests/data, k=3, plus examples/prompts.txt) score 0.790-0.992 (5% quantile
# 0.836); 44 prompts naming things the emoji set lacks score 0.397-0.864 (median 0.552, 95%
# quantile 0.738). At 0.75 no known prompt is flagged and 2 of 44 unknown ones pass (a
# bamboo toothbrush 0.788, an electric scooter 0.864: near-synonyms of known concepts).
# 0.79 would pass one fewer but is the known prompts' minimum itself (no margin) and flags
# 6 of 25 known things in a user's own words ("a slice of pizza", 0.760) where 0.75 flags 3.
THRESHOLD = 0.75
# A job grounds on one worker thread with one onnxruntime thread: no intra-op pool whose
# threads spin between calls on the cores the server is using. Three 2,000-image jobs against
# a local server on 2 cores, back to back: client system time 2.1-2.4 s with the pool, 0.8-1.0
# s without (this filesystem's own cost varies as much between minutes: see docs/design.md).
GROUNDING_THREADS = 1
CACHE_SIZE = 65536  # subjects remembered across a job's windows (~100 B each)
NEAREST_BATCH = 256  # subjects per Vocabulary.nearest call: [256, phrases] float32 scores

_COLOURS = "|".join(re.escape(c) for c in sorted(
    set(COLOR_NAMES) | {"grey", "blue", "dark blue", "light blue", "gold", "golden", "silver",
                        "cream", "tan", "turquoise", "violet", "lime", "magenta"},
    key=len, reverse=True))
_NAMED = "|".join(f for f in FAMILIES if f != "twemoji")
# The caption templates' words (adgen.captions TEMPLATES, TRAIN and PARAPHRASE templates),
# background phrases and design-family phrases: removed, the rest is the subject.
_TEMPLATE_WORDS = re.compile("|".join(f"(?:{p})" for p in (
    rf"\b(?:in\s+(?:the\s+)?)?(?:(?:{_NAMED})\s+(?:emoji\s+)?style|(?:{_NAMED})\s+emoji|"
    r"twemoji(?:\s+(?:emoji\s+)?style)?)\b",
    r"\b(?:on|against|over|with|in front of)\s+(?:(?:a|an|the)\s+)?(?:[\w-]+\s+){0,3}?"
    r"(?:background|backdrop)\b",
    rf"(?:\b(?:a|an|the)\s+)?(?:\b(?:plain|solid)\s+)?(?:\b(?:{_COLOURS})\s+)?"
    r"(?:colou?red\s+)?\b(?:background|backdrop)\b(?:\s+(?:with|behind)\b)?",
    r"\bflat (?:sticker )?style\b", r"\bflat illustration of\b", r"\bflat design\b",
    r"\bvector art\b", r"\bad image\s*:", r"\bpicture of\b", r"\ba simple\b", r"\bcute\b",
    r"\bclipart\b", r"\bsticker\b", r"\bicon\b", r"\bemoji\b")), re.I)


def subject(prompt: str) -> str:
    """'a red apple, flat sticker style, on a teal background, in noto emoji style' ->
    'a red apple'; the whole prompt when nothing else is left."""
    rest = _TEMPLATE_WORDS.sub(" ", prompt)
    rest = re.sub(r"\s*([,;:])(?:\s*[,;:])+", r"\1", rest)
    rest = re.sub(r"\s+", " ", rest).strip(" ,;:.-")
    return rest or prompt.strip()


@dataclass(frozen=True)
class Grounding:
    concept: str  # the nearest known concept: what the prompt is drawn as
    score: float  # cosine similarity of the prompt's subject to it, 3 decimals
    grounded: bool  # score >= the threshold

    def to_json(self) -> dict:
        return {"concept": self.concept, "score": self.score, "grounded": self.grounded}


class Grounder:
    """Prompts -> grounding records. A subject that is a concept's name or specific alias
    (given `concepts`) is that concept, score 1.0. Any other is embedded once per process
    (a bounded cache) and once per machine (a GroundingCache on disk); the vocabulary
    (concept embeddings and the text encoder) is loaded by `load_vocab` on the first subject
    that neither holds, so a job whose subjects were all named or seen before never loads
    it."""

    def __init__(self, load_vocab, source: str = "", disk=None, threshold: float = THRESHOLD,
                 cache_size: int = CACHE_SIZE, concepts: list[Concept] | None = None):
        self._load_vocab, self._vocab = load_vocab, None
        self.source, self.disk = source, disk
        self.threshold, self.cache_size = threshold, cache_size
        self._concepts = concepts or []
        self._names = literal_names(self._concepts)  # ~5 ms for the release list
        self._cache: OrderedDict[str, tuple[str, float]] = OrderedDict()
        self._lock = threading.Lock()
        # distinct subjects: named word for word / encoded here / read back from disk
        self.named = self.embedded = self.from_disk = 0

    @property
    def vocab(self) -> Vocabulary:
        """The vocabulary, loaded on first use (GroundingError, one line, if it cannot be)."""
        with self._lock:
            if self._vocab is None:
                self._vocab = self._load_vocab()
            return self._vocab

    def _record(self, concept: str, score: float) -> dict:
        return Grounding(concept, score, score >= self.threshold).to_json()

    def ground(self, prompts: list[str]) -> list[dict]:
        """One record (Grounding.to_json) per prompt; the same dict for equal subjects."""
        subjects = [subject(p) for p in prompts]
        with self._lock:
            known = {s: self._cache[s] for s in set(subjects) if s in self._cache}
            for s in known:
                self._cache.move_to_end(s)
        new = [s for s in dict.fromkeys(subjects) if s not in known]
        named = {}
        for s in new:
            i = named_concept(s, self._names)
            if i is not None:  # the encoder would score it ~1.0 against that very phrase
                named[s] = (self._concepts[i].name, 1.0)
        self.named += len(named)
        known.update(named)
        unnamed = [s for s in new if s not in named]
        found = self.disk.get(unnamed) if unnamed and self.disk is not None else {}
        self.from_disk += len(found)
        known.update(found)
        missing = [s for s in unnamed if s not in found]
        embedded = {}
        for start in range(0, len(missing), NEAREST_BATCH):
            chunk = missing[start:start + NEAREST_BATCH]
            for s, matches in zip(chunk, self.vocab.nearest(chunk, top=1)):
                embedded[s] = (matches[0].concept.name, round(matches[0].score, 3))
        self.embedded += len(embedded)
        known.update(embedded)
        if embedded and self.disk is not None:
            self.disk.put(embedded)
        with self._lock:
            for s in new:
                self._cache[s] = known[s]
            while len(self._cache) > self.cache_size:
                self._cache.popitem(last=False)
        records = {s: self._record(*known[s]) for s in dict.fromkeys(subjects)}
        return [records[s] for s in subjects]


class GroundingError(AdgenError):
    """The grounding's vocabulary cannot be loaded (one line: why)."""


def _why(exc: BaseException) -> str:
    what = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, OSError) and getattr(exc, "filename", None):
        what = f"{exc.filename}: {exc.strerror or type(exc).__name__}"
    return what


_VOCABS: dict[tuple, Vocabulary] = {}
_VOCABS_LOCK = threading.Lock()
_GROUNDERS: dict[tuple, Grounder] = {}


def load_grounder(concepts: str | Path | None = None, progress: bool = False,
                  threads: int = GROUNDING_THREADS) -> tuple[Grounder | None, str]:
    """(a Grounder, "") or (None, why not: one line). The concept list defaults to the
    release model's (adgen.prompting.vocab.default_concepts_path); the text encoder is
    the artifacts cache's export, run on `threads` onnxruntime threads (0: every core).
    The concept file and the encoder export are checked here; the encoder itself loads on
    the first subject not seen before. One Grounder per process, concept file and thread
    count."""
    try:
        path = Path(concepts) if concepts else default_concepts_path()
        concept_list = load_concepts(path)  # its own one-line error (~20 ms)
        stat = path.stat()
        model_dir = text_encoder_dir()
        if not all((model_dir / name).is_file() for name in (ONNX_NAME, TOKENIZER_NAME)):
            raise MissingArtifactError(f"text encoder not built in {model_dir}: run `adgen "
                                       "export text-encoder`")
        key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, str(model_dir), threads)
        disk_path = grounding_cache_path()
        with _VOCABS_LOCK:
            grounder = _GROUNDERS.get((key, disk_path))
            if grounder is None:
                disk = GroundingCache(disk_path, embedding_cache_key(
                    path, encoder_dir_id(model_dir))) if disk_path else None

                def load_vocab(vkey=key) -> Vocabulary:
                    with _VOCABS_LOCK:
                        vocab = _VOCABS.get(vkey)
                    if vocab is not None:
                        return vocab
                    try:
                        vocab = Vocabulary.load(path, TextEncoder(model_dir, threads),
                                                progress=progress)
                    except (AdgenError, OSError, ValueError, ImportError) as exc:
                        raise GroundingError(_why(exc)) from None
                    with _VOCABS_LOCK:
                        _VOCABS.clear()  # one concept list at a time: ~10 MB of embeddings
                        _VOCABS[vkey] = vocab
                    return vocab
                grounder = Grounder(load_vocab, str(path), disk, concepts=concept_list)
                for old in _GROUNDERS.values():
                    if old.disk is not None:
                        old.disk.close()
                _GROUNDERS.clear()
                _GROUNDERS[(key, disk_path)] = grounder
    except (AdgenError, OSError, ValueError, ImportError) as exc:
        return None, _why(exc)
    return grounder, ""


def warm_grounder(progress: bool = False) -> tuple[float, str]:
    """Loads the default concept list's embeddings, computing and caching them on a miss
    (artifacts/vocab: ~3,900 phrases through MiniLM, 15-60 CPU seconds once per machine and
    text encoder), so a machine's first job does not pay it beside the server it shares the
    cores with. -> (seconds it took, why not: "" when ready)."""
    t0 = time.perf_counter()
    grounder, why = load_grounder(None, progress, threads=0)  # every core: nothing else runs
    if grounder is not None:
        try:
            grounder.vocab
        except GroundingError as exc:
            why = str(exc)
    return time.perf_counter() - t0, why


def ground_prompt_file(prompt_file: str | Path, concepts: str | Path | None = None) -> int:
    """ground_ahead over the prompts of a .jsonl prompt file (as `adgen expand` writes it);
    0 for a file it cannot read."""
    try:
        with open(prompt_file, encoding="utf-8") as f:
            prompts = [json.loads(line)["prompt"] for line in f if line.strip()]
    except (OSError, ValueError, KeyError, TypeError):
        return 0
    return ground_ahead(prompts, concepts)


def ground_ahead(prompts: list[str], concepts: str | Path | None = None) -> int:
    """Grounds `prompts` into this machine's grounding cache on every core (run where nothing
    else does: `adgen expand`, `adgen demo` before its server starts), so a job over them
    reads every record back and loads no text encoder beside the server. -> subjects newly
    grounded (0 when there is no cache, nothing to ground, or no concept list or encoder:
    the job then grounds and warns as usual)."""
    grounder, _ = load_grounder(concepts, threads=0)
    if grounder is None or grounder.disk is None or not prompts:
        return 0
    before = grounder.embedded
    try:
        grounder.ground(list(dict.fromkeys(prompts)))
    except (AdgenError, ValueError):
        return 0
    return grounder.embedded - before


class PendingRecord:
    """A task's grounding record that a worker thread is still computing: the writer asks
    for it (record_of) when it writes the image, so requests never wait for the encoder."""
    __slots__ = ("_future", "_prompt")

    def __init__(self, future, prompt: str):
        self._future, self._prompt = future, prompt

    def result(self) -> dict | None:
        return self._future.result().get(self._prompt)


def record_of(task) -> dict | None:
    """A task's grounding record (None: not checked), waiting for it if still pending."""
    rec = getattr(task, "grounding", None)
    return rec.result() if isinstance(rec, PendingRecord) else rec


@dataclass(frozen=True)
class GroundedTask(ImageTask):
    """An ImageTask with its prompt's grounding record (None: not checked), or a
    PendingRecord of it (read it with record_of)."""
    grounding: dict | PendingRecord | None = field(default=None, compare=False, hash=False)


@dataclass
class Tally:
    """What a job's grounding found: prompts checked and not grounded (this run's)."""
    threshold: float = THRESHOLD
    concepts: str = ""  # the concept list scored against
    checked: int = 0
    ungrounded: int = 0
    unavailable: str = ""  # why nothing was checked ("" when it was)
    subjects_embedded: int = 0  # distinct subjects this job ran through the text encoder
    subjects_cached: int = 0  # ... and found in the machine's grounding cache instead
    subjects_named: int = 0  # ... and neither: a concept's own name or alias, word for word
    _last: str | None = None  # the last prompt id counted (a prompt's tasks are contiguous)

    def count(self, task: ImageTask, record: dict | None) -> None:
        if record is None or task.item.id == self._last:
            return
        self._last = task.item.id
        self.checked += 1
        self.ungrounded += not record["grounded"]

    def summary(self) -> dict:
        return {"threshold": self.threshold, "concepts": self.concepts or None,
                "prompts_checked": self.checked, "prompts_ungrounded": self.ungrounded,
                "subjects_embedded": self.subjects_embedded,
                "subjects_cached": self.subjects_cached,
                "subjects_named": self.subjects_named,
                "unavailable": self.unavailable or None}

    def warning(self) -> str | None:
        """The one line `adgen generate` prints at the end, or None."""
        if self.unavailable:
            return (f"warning: prompts not checked against the model's concepts "
                    f"({self.unavailable}); \"grounding\" is null in manifest.jsonl")
        if self.ungrounded:
            return (f"warning: {self.ungrounded} of {self.checked} prompts name nothing the "
                    f"model knows (drawn as the nearest known concept; see \"grounding\" in "
                    f"manifest.jsonl)")
        return None


FIRST_CHUNK = 256  # tasks grounded first: the first images are written without a window's wait
AHEAD = 2  # chunks handed out before their records are ready, at most (bounded memory)


def grounded_tasks(tasks, load, tally: Tally, window: int):
    """GroundedTasks of `tasks` (an iterator of ImageTask, read on the caller's thread), each
    with a PendingRecord: a worker thread first loads the grounder (load() -> (Grounder or
    None, why not), ~0.1-0.3 s) and then grounds the tasks a chunk at a time, while the
    caller already sends them; the writer waits for a record only when it writes its image.
    The tally is counted in the worker, in task order."""
    def chunks():
        buf, size = [], min(window, FIRST_CHUNK)
        for t in tasks:
            buf.append(t)
            if len(buf) >= size:
                yield buf
                buf, size = [], window
        if buf:
            yield buf

    state: dict = {}

    def ground(chunk) -> dict:
        """prompt -> record for the chunk's distinct prompts ({} when none can be had)."""
        if "grounder" not in state:
            grounder, why = load()
            state["grounder"] = grounder
            tally.concepts = grounder.source if grounder else ""
            tally.unavailable = tally.unavailable or why
        grounder = state["grounder"]
        records: dict = {}
        if grounder is not None and not tally.unavailable:
            prompts = list(dict.fromkeys(t.item.prompt for t in chunk))
            before = grounder.embedded, grounder.from_disk, grounder.named
            try:
                records = dict(zip(prompts, grounder.ground(prompts)))
            except (AdgenError, ValueError) as exc:  # the encoder failed: the images still go
                tally.unavailable = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            tally.subjects_embedded += grounder.embedded - before[0]
            tally.subjects_cached += grounder.from_disk - before[1]
            tally.subjects_named += grounder.named - before[2]
        for t in chunk:
            tally.count(t, records.get(t.item.prompt))
        return records

    with ThreadPoolExecutor(1, thread_name_prefix="grounding") as pool:
        pending = []
        for chunk in chunks():
            future = pool.submit(ground, chunk)
            pending = [f for f in pending if not f.done()]
            while len(pending) >= AHEAD:
                pending.pop(0).result()
            pending.append(future)
            for t in chunk:
                yield GroundedTask(t.item, t.k, t.seed, t.suffix,
                                   PendingRecord(future, t.item.prompt))
