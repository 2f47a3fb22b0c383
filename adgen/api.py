"""The Python API: prompts in, PIL images out, through the code `adgen generate` runs.

    import adgen
    images = adgen.generate(["a red apple on a white background"], n=2, engine="local")
    images[0].image            # PIL.Image.Image, 64 x 64 RGB
    images[0].seed, images[0].id
    images[0].save("out")      # out/images/<id>/<id>-<k>-s<seed>.png + its manifest line
    images[0].grounding        # {"concept": "red apple", "score": 0.941, "grounded": True}

    client = adgen.Client(url="127.0.0.1:8001")           # a Triton server over gRPC
    prompts = client.expand(["summer sale sneakers"], k=2)  # briefs -> prompts (+ ad copy)
    for r in client.generate(prompts, n=4, size=256, style="noto"):
        r.save("out256")       # images/<id>/<id>-<k>-s<seed>-256px.png + its manifest line

Engines: "triton" calls the public model over gRPC (adgen.serving.jobs.client: several
URLs, failover, retries); "local" runs the same pipeline in this process with onnxruntime
(adgen.serving.jobs.local_engine) on a model repository, by default the release model's,
built once into the artifacts cache. Naming and seeds are the CLI's: the i-th prompt string
(from 1) has id `line-<i>`, as line i of a .txt prompt file does, and its image k the seed
adgen.latents.derive_seed(seed, id, k); so `adgen generate` on a .txt file of the same
prompts with the same --seed writes these very pixels. Every failure is an AdgenError with a
one-line message.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping, Sequence, Union

import numpy as np
from PIL import Image

from adgen.captions import FAMILIES
from adgen.contract import IMAGE_SIZE, MAX_SEED, SIZES
from adgen.errors import AdgenError, APIError
from adgen.export.repo import build_repository, served_generator
from adgen.export.repo_files import SOURCES, runtime_files
from adgen.export.text_encoder import export_text_encoder
from adgen.paths import artifacts_dir, release_model_dir, release_upsampler_dir, sha256_file, \
    text_encoder_dir
from adgen.prompting.expand import Brief, ExpandConfig, _check_brief, build_expander, \
    to_records
from adgen.prompting.vocab import Vocabulary
from adgen.serving.jobs.client import served_for_job
from adgen.serving.jobs.grounding import GroundedTask, load_grounder
from adgen.serving.jobs.images import image_suffix, pixels_sha256
from adgen.serving.jobs.job import JobConfig, make_engine
from adgen.serving.jobs.job_resume import ImageTask
from adgen.serving.jobs.manifest import Writer
from adgen.serving.jobs.prompt_stream import styled
from adgen.serving.jobs.prompts import MAX_N, PromptItem, _make_item
from adgen.serving.jobs.served import ServedConfigError

__all__ = ["APIError", "Client", "GeneratedImage", "Prompt", "expand", "generate"]

ENGINES = ("triton", "local")
DEFAULT_URL = "127.0.0.1:8001"


@dataclass(frozen=True)
class Prompt:
    """One prompt as `adgen expand` writes it (one prompts.jsonl line); `Client.generate`
    takes these as they are, keeping their id, brief, expansion and ad copy."""
    id: str
    prompt: str
    brief: str | None = None
    expansion: str | None = None
    concepts: tuple[str, ...] = ()
    copy: Mapping[str, str] | None = field(default=None, hash=False)  # {"headline", "cta"}
    meta: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def to_json(self) -> dict:
        """The prompts.jsonl line (`adgen generate` reads it)."""
        return {"id": self.id, "prompt": self.prompt, "brief": self.brief,
                "expansion": self.expansion, "concepts": list(self.concepts),
                "copy": dict(self.copy) if self.copy else None, "meta": dict(self.meta)}


@dataclass(frozen=True)
class GeneratedImage:
    """One image and what `adgen generate` would record for it in manifest.jsonl."""
    image: Image.Image = field(repr=False, compare=False)  # PIL RGB, size x size
    prompt: str  # as sent to the model (with the style phrase, if any)
    seed: int
    id: str  # "<prompt id>-<k>": the manifest's custom_id
    prompt_id: str
    k: int
    size: int
    engine: str
    # name, version, sha256 (+ upsampler) of the served model
    model: Mapping[str, Any] = field(hash=False)
    url: str  # the server that answered ("local" for the local engine)
    latency_ms: float  # of the request this image came back in
    pixels_sha256: str
    created_at: str
    brief: str | None = None
    expansion: str | None = None
    copy: Mapping[str, str] | None = field(default=None, hash=False)
    style: str | None = None
    # The known concept this prompt is drawn as: {"concept", "score", "grounded"}
    # (adgen.serving.jobs.grounding); None when no concept list or text encoder is at hand.
    grounding: Mapping[str, Any] | None = field(default=None, hash=False)

    @property
    def path(self) -> str:
        """Where `adgen generate` puts this image below its output folder."""
        return self._task().rel_path

    def _task(self) -> GroundedTask:
        """The image as the job plans it: the same id, seed, prompt, file name and
        grounding (n, the prompt's image count, is not written anywhere)."""
        item = PromptItem(self.prompt_id, self.prompt, self.k + 1, brief=self.brief,
                          meta={"expansion": self.expansion} if self.expansion else {},
                          copy=dict(self.copy) if self.copy else None)
        return GroundedTask(item, self.k, self.seed, image_suffix(self.size, "png"),
                            dict(self.grounding) if self.grounding else None)

    def save(self, out: str | Path) -> dict:
        """Writes the image into the job folder `out` as `adgen generate` does, with the
        job's own writer: the PNG (atomic, `parameters` and `adgen` metadata) at
        `out`/path and its line appended to `out`/manifest.jsonl; returns that line."""
        root = Path(out)
        try:
            root.mkdir(parents=True, exist_ok=True)
            writer = Writer(root, self.engine, dict(self.model))
            try:
                writer.write([self._task()], np.asarray(self.image)[None], self.latency_ms,
                              self.url)
            finally:
                writer.close()
            return json.loads(_last_line(root / "manifest.jsonl"))
        except OSError as exc:
            raise APIError(f"cannot write {root / self.path}: "
                           f"{exc.strerror or type(exc).__name__}") from None


def _last_line(path: Path) -> bytes:
    """The last line of a file, read from its end (a manifest may be large)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        end = f.tell()
        f.seek(max(0, end - 65536))
        return f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]


PromptLike = Union[str, Prompt, Mapping[str, Any]]


class Client:
    """A connection to adgen's generator: a Triton server, or the local engine.

    Client(url="127.0.0.1:8001")                       # Triton over gRPC
    Client(url=["10.0.0.5:8001", "10.0.0.6:8001"])     # several servers, failover
    Client(engine="local")                             # in-process, the release model
    Client(engine="local", model="model_repository")   # in-process, a built repository

    `llm="openai"` (with `llm_base_url`, `llm_model`; the key from OPENAI_API_KEY) makes
    `expand` ask an OpenAI-compatible model; the default is the offline expander.
    """

    def __init__(self, url: str | Sequence[str] = DEFAULT_URL, engine: str = "triton",
                 model: str | Path | None = None, *, timeout_s: float = 120.0,
                 retries: int = 6, batch_size: int | None = None,
                 concurrency: int | None = None,
                 threads: int = 0, llm: str = "offline", llm_base_url: str | None = None,
                 llm_model: str = "gpt-4o-mini"):
        if engine not in ENGINES:
            raise APIError(f"unknown engine {engine!r}; choose {' or '.join(ENGINES)}")
        urls = (url,) if isinstance(url, str) else tuple(url)
        if engine == "triton" and (not urls or not all(isinstance(u, str) and u for u in urls)):
            raise APIError("url must be host:port (or a list of them), e.g. 127.0.0.1:8001")
        if (batch_size is not None and not 1 <= batch_size <= 256) or \
                (concurrency is not None and concurrency < 1):
            raise APIError("batch_size must be in [1, 256] and concurrency >= 1")
        if llm not in ("offline", "openai"):
            raise APIError(f"llm must be offline or openai, got {llm!r}")
        self.urls, self.engine, self.model = urls, engine, model
        self.timeout_s, self.retries, self.threads = timeout_s, retries, threads
        self.batch_size, self.concurrency = batch_size, concurrency
        self.llm, self.llm_base_url, self.llm_model = llm, llm_base_url, llm_model
        self._engines: dict[int, Any] = {}  # local engines by size: loaded once
        self._vocab = None
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        where = ", ".join(self.urls) if self.engine == "triton" else str(self.model or "release")
        return f"Client(engine={self.engine!r}, {where})"

    # ------------------------------------------------------------ generate

    def generate(self, prompts: PromptLike | Sequence[PromptLike], n: int = 4,
                 seed: int | None = None, size: int = IMAGE_SIZE,
                 style: str | None = None) -> list[GeneratedImage]:
        """n images per prompt, prompt by prompt, k = 0..n-1 within each.

        prompts: a string, a Prompt (from `expand`), a prompts.jsonl-style dict, or a list
        of them. seed: the base seed, as `adgen generate --seed` (None: 0). size: 64, or 256
        (the 64 px image upsampled 4x). style: a design family (adgen.captions.FAMILIES,
        e.g. "noto"), added to each prompt as ", in noto emoji style"."""
        items = self._items(prompts, n, style)
        base = self._base_seed(seed)
        if size not in SIZES:
            raise APIError(f"size must be {' or '.join(map(str, SIZES))}, got {size!r}")
        tasks = [ImageTask(it, k, it.seed_for(k, base)) for it in items for k in range(it.n)]
        images, model, answers = self._infer(tasks, size)
        grounding = _grounding([it.prompt for it in items])
        created = datetime.now(timezone.utc).isoformat(timespec="milliseconds")
        frozen_model = MappingProxyType(dict(model))
        return [GeneratedImage(
            Image.fromarray(np.ascontiguousarray(img)), t.item.prompt, t.seed,
            t.custom_id, t.item.id, t.k, int(img.shape[0]), self.engine, frozen_model, url,
            latency, pixels_sha256(img), created, t.item.brief,
            (t.item.meta or {}).get("expansion"),
            MappingProxyType(dict(t.item.copy)) if t.item.copy else None, style,
            grounding.get(t.item.prompt))
            for t, img, (url, latency) in zip(tasks, images, answers)]

    def _items(self, prompts, n: int, style: str | None) -> list:
        if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_N:
            raise APIError(f"n must be an integer in [1, {MAX_N}], got {n!r}")
        if style is not None and style not in FAMILIES:
            raise APIError(f"unknown style {style!r}; choose one of {', '.join(FAMILIES)}")
        if isinstance(prompts, (str, Prompt, Mapping)):
            prompts = [prompts]
        if not isinstance(prompts, Sequence) or not prompts:
            raise APIError("prompts must be a non-empty list of strings or Prompts")
        items, seen = [], set()
        for i, p in enumerate(prompts, 1):
            if isinstance(p, Prompt):
                rec = p.to_json()
                rec["meta"].setdefault("expansion", p.expansion)
            elif isinstance(p, Mapping):
                rec = dict(p)
            elif isinstance(p, str):
                rec = {"prompt": p}
            else:
                raise APIError(f"prompt {i} must be a string or a Prompt, got "
                               f"{type(p).__name__}")
            if "prompt" in rec:  # the style phrase, as `adgen generate --style` adds it
                rec["prompt"] = styled(rec["prompt"], style)
            rec.pop("n", None)  # the call's n counts for every prompt
            try:  # the prompt-file rules: text, id, seed, copy (adgen.serving.jobs.prompts)
                item = _make_item(rec, f"line-{i}", n, "api", i)
            except ValueError as exc:
                raise APIError(f"prompt {i}: {exc}") from None
            if item.id in seen:
                raise APIError(f"prompt {i}: duplicate id {item.id!r}")
            seen.add(item.id)
            items.append(item)
        return items

    @staticmethod
    def _base_seed(seed) -> int:
        if seed is None:
            return 0
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) \
                or not 0 <= int(seed) <= MAX_SEED:
            raise APIError(f"seed must be an integer in [0, 2**63-1], got {seed!r}")
        return int(seed)

    def _engine(self, size: int):
        """The job's own engine factory (adgen.serving.jobs.job.make_engine); a local
        engine is kept, its ONNX sessions load once per client."""
        if self.engine == "local":
            with self._lock:
                if size not in self._engines:
                    model = self.model or release_repository()
                    self._engines[size] = make_engine(JobConfig(
                        prompts=("-",), out="-", engine="local", model=str(model),
                        threads=self.threads, size=size))
                return self._engines[size]
        return make_engine(JobConfig(prompts=("-",), out="-", urls=self.urls, size=size,
                                     timeout_s=self.timeout_s, retries=self.retries))

    def _batching(self, size: int) -> tuple[int, int]:
        """(images per request, requests in flight): the given ones, else what the server (or
        the local repository) is configured for, else this host's rule - as `adgen generate`."""
        if self.batch_size is not None and self.concurrency is not None:
            return self.batch_size, self.concurrency
        model = self.model if self.engine == "local" else None
        try:
            served, _ = served_for_job(self.engine, self.urls, model, size=size)
        except ServedConfigError as exc:
            raise APIError(str(exc)) from None
        return self.batch_size or served.batch, self.concurrency or served.concurrency

    def _infer(self, tasks, size: int):
        """-> (uint8[N, size, size, 3], model info, [(url, latency ms)] per image)."""
        engine = self._engine(size)
        batch_size, concurrency = self._batching(size)
        batches = [tasks[i:i + batch_size] for i in range(0, len(tasks), batch_size)]

        async def main():
            async with engine:
                await engine.wait_ready(timeout_s=min(self.timeout_s, 60.0))
                model = await engine.model_info()
                sem = asyncio.Semaphore(concurrency)

                async def one(batch):
                    async with sem:
                        t0 = time.perf_counter()
                        images, url = await engine.infer([t.item.prompt for t in batch],
                                                         [t.seed for t in batch])
                        return images, url, (time.perf_counter() - t0) * 1000.0
                return model, await asyncio.gather(*(one(b) for b in batches))
        model, done = _run_async(main())
        images = np.concatenate([d[0] for d in done])
        answers = [(url, ms) for (imgs, url, ms) in done for _ in range(len(imgs))]
        return images, model, answers

    # ------------------------------------------------------------ expand

    def expand(self, briefs: str | Sequence[str], k: int = 3) -> list[Prompt]:
        """Ad briefs -> k prompts each (ids `<brief id>-<j>`, brief ids `line-<i>`), with ad
        copy, as `adgen expand` writes them. A brief nothing fits (ungrounded) gives none."""
        if isinstance(briefs, str):
            briefs = [briefs]
        if not isinstance(briefs, Sequence) or not briefs:
            raise APIError("briefs must be a non-empty list of strings")
        cfg = ExpandConfig(inputs=("-",), out="api.jsonl", k=k, llm=self.llm,
                           base_url=self.llm_base_url, model=self.llm_model)
        cfg.check()
        items = []
        for i, text in enumerate(briefs, 1):
            try:
                items.append(Brief(f"line-{i}", _check_brief(text), "api", i))
            except ValueError as exc:
                raise APIError(f"brief {i}: {exc}") from None
        expander = build_expander(cfg, self._vocabulary())
        out = []
        for b in items:
            for rec in to_records(expander.expand(b, k)):
                out.append(Prompt(rec["id"], rec["prompt"], rec["brief"], rec["expansion"],
                                  tuple(rec["concepts"]), MappingProxyType(rec["copy"]),
                                  MappingProxyType(rec["meta"])))
        return out

    def _vocabulary(self):
        with self._lock:
            if self._vocab is None:
                ensure_text_encoder()
                self._vocab = Vocabulary.load()
            return self._vocab


def _grounding(prompts: list[str]) -> dict[str, Mapping[str, Any]]:
    """prompt -> its grounding record, as `adgen generate` writes it ({} when the concept
    list or the text encoder is missing: the images come back with grounding None)."""
    grounder, _ = load_grounder()
    if grounder is None:
        return {}
    distinct = list(dict.fromkeys(prompts))
    try:
        records = grounder.ground(distinct)
    except (AdgenError, ValueError):
        return {}
    return {p: MappingProxyType(dict(r)) for p, r in zip(distinct, records)}


def _run_async(coro):
    """asyncio.run, also from inside a running event loop (a Jupyter cell): then in a
    worker thread with its own loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def ensure_text_encoder() -> Path:
    """The text encoder export (text_encoder_dir()), exported once when missing; needs the
    train extra only then."""
    folder = text_encoder_dir()
    if (folder / "model.onnx").is_file():
        return folder
    try:
        return export_text_encoder()
    except ImportError as exc:  # torch, transformers: the train extra
        raise APIError(f"the text encoder is not built and exporting it needs the train "
                       f"extra ({exc.name}): pip install 'adgen[train]'") from None


def release_repository(progress: bool = False) -> Path:
    """A model repository of the release model (the precision this host serves, and the
    release upsampler for 256 px), built once into the artifacts cache under a name keyed
    by what it was built from: generator, upsampler, text encoder and the code it vendors
    (the Triton python model and adgen's runtime), so another checkout builds its own."""
    te = ensure_text_encoder()
    if not (release_model_dir() / "generator.safetensors").is_file():
        raise APIError("this install has no release model: pass model= a model repository "
                       "(adgen repo build)")
    try:
        gen, _ = served_generator(None, progress=progress)  # exported once (torch)
    except ImportError as exc:
        raise APIError(f"building the release model needs the train extra ({exc.name}): "
                       "pip install 'adgen[train]', or pass model= a built repository") \
            from None
    up = release_upsampler_dir() / "upsampler.safetensors"
    up_sha = sha256_file(up) if up.is_file() else ""
    key = hashlib.sha256(f"{gen.sha256}:{up_sha}:{sha256_file(te / 'model.onnx')}".encode())
    for source in [*runtime_files().values(), *sorted(SOURCES.rglob("*.p*"))]:
        key.update(source.read_bytes())  # *.py, *.pbtxt: a few hundred KB
    key = key.hexdigest()[:16]
    path = artifacts_dir() / "repository" / f"release-{key}"
    if not (path / "adgen_repository.json").is_file():
        build_repository(path, force=True, progress=progress, text_encoder=te)
    return path


_DEFAULT: dict[tuple, Client] = {}


def _client(url, engine, model) -> Client:
    key = (url if isinstance(url, str) else tuple(url), engine, str(model or ""))
    if key not in _DEFAULT:  # module shortcuts reuse a client: a local engine loads once
        _DEFAULT[key] = Client(url, engine, model)
    return _DEFAULT[key]


def generate(prompts: PromptLike | Sequence[PromptLike], n: int = 4, seed: int | None = None,
             size: int = IMAGE_SIZE, style: str | None = None, *,
             url: str | Sequence[str] = DEFAULT_URL, engine: str = "triton",
             model: str | Path | None = None) -> list[GeneratedImage]:
    """Client(url, engine, model).generate(prompts, n, seed, size, style)."""
    return _client(url, engine, model).generate(prompts, n=n, seed=seed, size=size,
                                                style=style)


def expand(briefs: str | Sequence[str], k: int = 3) -> list[Prompt]:
    """Client().expand(briefs, k) with the offline expander."""
    return _client(DEFAULT_URL, "triton", None).expand(briefs, k=k)

