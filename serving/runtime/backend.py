"""The logic behind adgen's Triton python models, and the in-process pipeline they share.

Pipeline stages (per item; B is the batch):
  PROMPT bytes[B]  --text_encoder-->  EMBEDDING fp32[B,384]
  SEED int64[B]    --latents------->  Z fp32[B,z_dim]
  EMBEDDING, Z     --generator----->  RAW_IMAGE fp32[B,3,64,64] in [-1,1]
  RAW_IMAGE        --postprocess--->  IMAGE uint8[B,64,64,3]
  RAW_IMAGE        --upsampler----->  RAW_IMAGE_256 fp32[B,3,256,256] --postprocess-->
                                      IMAGE uint8[B,256,256,3]        (adgen_256 only)

`Pipeline` runs them with onnxruntime; `--engine local` and the fused Triton models `adgen`
and `adgen_256` (a Pipeline given an upsampler export folder) use it, so the two paths
return identical bytes. Determinism across batch compositions: each distinct prompt is encoded on its own (no padding against other
prompts, whose lengths would change the attention reductions) and cached; the generator
computes every row independently of its neighbours (checked by a test).

`triton_model` is what the one Triton python model (triton_models/model.py, copied into
every python stage) builds from the model name Triton passes: a `TritonModel` for the
contract's stages, which concatenates all requests of a dynamic batch, validates each
request (a bad prompt or seed fails only its own request with INVALID_ARG), runs once, and
splits the result; a `TritonTokenizer` for the native variants' `tokenizer` model.
"""
from __future__ import annotations

import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer

from adgen.contract import (EMBED_DIM, GENERATOR_MODEL, IMAGE_SIZE, LARGE_IMAGE_SIZE,
                            LATENTS_MODEL, MAX_BATCH_SIZE, MAX_PROMPT_BYTES, MAX_SEED,
                            POSTPROCESS_MODEL, PUBLIC_MODEL, PUBLIC_MODEL_256,
                            TEXT_ENCODER_MODEL, TEXT_MAX_TOKENS)
from adgen.errors import AdgenError
from adgen.latents import seed_to_z
from adgen.serving.runtime.providers import import_onnxruntime, ort_session, used_provider
from adgen.serving.runtime.text import TOKENIZER_NAME, TextEncoder

GENERATOR_FILE = "generator.onnx"
GENERATOR_MANIFEST = "manifest.json"
UPSAMPLER_FILE = "upsampler.onnx"  # export/upsampler_onnx.py writes it + manifest.json
# The native variants' python `tokenizer` model (export/repo_native.py): PROMPT -> tokens.
TOKENIZER_MODEL = "tokenizer"
TOKEN_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
TOKEN_PAD_MULTIPLE = 16


class InvalidInput(AdgenError, ValueError):
    """One request's input is unusable; Triton answers it with INVALID_ARG."""


class BackendError(AdgenError):
    """A model folder or artifact the pipeline cannot load."""


# ----------------------------------------------------------------------------- validation

def decode_prompt(value) -> str:
    """One PROMPT element (bytes or str) -> str, or InvalidInput with the reason."""
    if isinstance(value, np.ndarray):
        value = value.item()
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    if not isinstance(value, (bytes, bytearray)):
        raise InvalidInput(f"PROMPT must be bytes, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_BYTES:
        raise InvalidInput(f"PROMPT is {len(value)} bytes, over the {MAX_PROMPT_BYTES}-byte limit")
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidInput(f"PROMPT is not valid UTF-8 (byte {exc.start})") from None
    return text


def check_seeds(seeds: np.ndarray) -> np.ndarray:
    """SEED int64[B] (any integer dtype) -> int64[B]; negative -> InvalidInput."""
    seeds = np.asarray(seeds).reshape(-1)
    if seeds.dtype.kind not in "iu":
        raise InvalidInput(f"SEED must be integers, got {seeds.dtype}")
    if seeds.dtype.kind == "u" and seeds.size and int(seeds.max()) > MAX_SEED:
        raise InvalidInput(f"SEED must be in [0, 2**63-1], got {int(seeds.max())}")
    seeds = seeds.astype(np.int64)
    if seeds.size and int(seeds.min()) < 0:
        raise InvalidInput(f"SEED must be in [0, 2**63-1], got {int(seeds.min())}")
    return seeds


def to_uint8(raw: np.ndarray) -> np.ndarray:
    """The `postprocess` stage: float[B,3,H,W] in [-1,1] (CHW) -> uint8[B,H,W,3] (HWC, RGB);
    (x+1)*127.5, round half to even, clip. Triton, the local engine and the tests all call
    it, so every path rounds the same way (adgen_256 rounds its RAW_IMAGE_256)."""
    raw = np.asarray(raw, dtype=np.float32)
    if raw.ndim != 4 or raw.shape[1] != 3:
        raise BackendError(f"expected raw images [B,3,H,W], got {list(raw.shape)}")
    # One image at a time through one reused buffer, in place: the same arithmetic as
    # np.clip(np.rint((raw + 1) * 127.5), 0, 255) without four batch-sized temporaries
    # (at 256 px a batch of 32 is 25 MB of floats each); 2x faster on a 2-core EPYC.
    b, c, h, w = raw.shape
    out = np.empty((b, h, w, c), dtype=np.uint8)
    buf = np.empty((c, h, w), dtype=np.float32)
    for i in range(b):
        np.add(raw[i], np.float32(1.0), out=buf)
        np.multiply(buf, np.float32(127.5), out=buf)
        np.rint(buf, out=buf)
        np.clip(buf, 0, 255, out=buf)
        out[i] = buf.transpose(1, 2, 0)
    return out


def latents(seeds: np.ndarray, z_dim: int) -> np.ndarray:
    """int64[B] -> Z float32[B, z_dim] (adgen.latents: the same on every client)."""
    seeds = check_seeds(seeds)
    out = np.empty((len(seeds), z_dim), dtype=np.float32)
    for i, s in enumerate(seeds.tolist()):
        out[i] = seed_to_z(s, z_dim)
    return out


# ----------------------------------------------------------------------------- pipeline

def generator_trt_profile(z_dim: int) -> dict:
    """TensorRT EP's profile for the generator: batch 1..MAX_BATCH_SIZE (adgen.serving.runtime.providers)."""
    widths = {"EMBEDDING": EMBED_DIM, "Z": z_dim}
    return {n: ((1, w), (64, w), (MAX_BATCH_SIZE, w)) for n, w in widths.items()}


def _ort_session(path: Path, threads: int, device_id: int = 0, z_dim: int = 0):
    """A session on the best provider here (TensorRT EP > CUDA EP > CPU: adgen.serving.runtime.providers)."""
    ort = import_onnxruntime()
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort_session(path, opts, device_id=device_id,
                       trt_profile=generator_trt_profile(z_dim) if z_dim else None)


def read_generator_info(generator_dir: str | Path) -> dict:
    """generator.onnx's manifest (z_dim, sha256, arch) or what the ONNX itself says."""
    generator_dir = Path(generator_dir)
    onnx_path = generator_dir / GENERATOR_FILE
    if not onnx_path.is_file():
        raise BackendError(f"no {GENERATOR_FILE} in {generator_dir}: run `adgen export onnx`")
    info = {}
    man = generator_dir / GENERATOR_MANIFEST
    if man.is_file():
        try:
            info = json.loads(man.read_text())
        except ValueError:
            raise BackendError(f"{man} is not valid JSON") from None
    return info


def read_upsampler_info(upsampler_dir: str | Path) -> dict:
    """An upsampler export folder's manifest: {name, sha256, ...}; BackendError if unusable."""
    upsampler_dir = Path(upsampler_dir)
    if not (upsampler_dir / UPSAMPLER_FILE).is_file():
        raise BackendError(f"no {UPSAMPLER_FILE} in {upsampler_dir}: export the upsampler "
                           "(adgen.export.upsampler_onnx) or pass its checkpoint to `adgen repo build`")
    man = upsampler_dir / GENERATOR_MANIFEST
    try:
        info = json.loads(man.read_text())
    except OSError:
        raise BackendError(f"no manifest.json beside {UPSAMPLER_FILE} in {upsampler_dir}") \
            from None
    except ValueError:
        raise BackendError(f"{man} is not valid JSON") from None
    if not isinstance(info, dict):
        raise BackendError(f"{man} is not a JSON object")
    checkpoint = info.get("checkpoint") or {}
    sha = (info.get("files") or {}).get(UPSAMPLER_FILE, {}).get("sha256") or ""
    if not sha:
        raise BackendError(f"{man} lacks files.{UPSAMPLER_FILE}.sha256")
    name = Path(checkpoint.get("name") or upsampler_dir.name).stem
    if name == "upsampler":  # the weights file's own name says nothing: use the folder's
        name = upsampler_dir.name
    return {**info, "name": info.get("model_name") or name, "sha256": sha}


class EmbeddingCache:
    """prompt str -> EMBEDDING fp32[384]; each miss is encoded alone (batch-independent)."""

    def __init__(self, encoder, capacity: int = 4096):
        self.encoder = encoder
        self.capacity = capacity
        self._data: OrderedDict[str, np.ndarray] = OrderedDict()

    def __call__(self, texts: list[str]) -> np.ndarray:
        out = np.empty((len(texts), EMBED_DIM), dtype=np.float32)
        for i, t in enumerate(texts):
            vec = self._data.get(t)
            if vec is None:
                vec = self.encoder.encode([t])[0]
                self._data[t] = vec
                if len(self._data) > self.capacity:
                    self._data.popitem(last=False)
            else:
                self._data.move_to_end(t)
            out[i] = vec
        return out


@dataclass(frozen=True)
class ModelInfo:
    """What is recorded with every image: which model made it, and on which provider."""
    name: str
    version: str
    sha256: str
    z_dim: int
    provider: str = ""  # the generator session's onnxruntime provider, as it really ran
    upsampler: dict | None = None  # 256 px: {"name", "sha256"} of upsampler.onnx

    def to_json(self) -> dict:
        out = {"name": self.name, "version": self.version, "sha256": self.sha256,
               "z_dim": self.z_dim}
        if self.provider:
            out["provider"] = self.provider
        if self.upsampler:
            out["upsampler"] = dict(self.upsampler)
        return out


class Pipeline:
    """PROMPT[B], SEED[B] -> IMAGE uint8[B,64,64,3] in-process with onnxruntime; with an
    upsampler export folder, uint8[B,256,256,3]: the same 64 px RAW_IMAGE upsampled 4x."""

    def __init__(self, text_encoder_dir: str | Path, generator_dir: str | Path,
                 threads: int = 0, cache_size: int = 4096, model_name: str = "",
                 version: str = "1", device_id: int = 0,
                 upsampler_dir: str | Path | None = None):
        generator_dir = Path(generator_dir)
        info = read_generator_info(generator_dir)
        self.generator = _ort_session(generator_dir / GENERATOR_FILE, threads, device_id,
                                      int(info.get("z_dim") or 0))
        shape = {i.name: i.shape for i in self.generator.get_inputs()}
        if "EMBEDDING" not in shape or "Z" not in shape:
            raise BackendError(f"{generator_dir / GENERATOR_FILE} lacks inputs EMBEDDING and Z")
        z_dim = shape["Z"][1] if isinstance(shape["Z"][1], int) else int(info.get("z_dim", 0))
        if not z_dim:
            raise BackendError("cannot tell the generator's z_dim (no manifest, dynamic Z)")
        self.z_dim = int(z_dim)
        self.encoder = TextEncoder(text_encoder_dir, threads=threads, batch_size=1,
                                   device_id=device_id)
        self.embed = EmbeddingCache(self.encoder, cache_size)
        checkpoint = info.get("checkpoint") or {}
        self.upsampler, upsampler = None, None
        if upsampler_dir is not None:
            up = read_upsampler_info(upsampler_dir)
            self.upsampler = _ort_session(Path(upsampler_dir) / UPSAMPLER_FILE, threads,
                                          device_id)
            upsampler = {"name": up["name"], "sha256": up["sha256"]}
        self.size = LARGE_IMAGE_SIZE if self.upsampler is not None else IMAGE_SIZE
        self.info = ModelInfo(
            name=model_name or info.get("model_name") or Path(checkpoint.get("name") or
                                                             generator_dir.name).stem,
            version=str(version),
            sha256=(info.get("files", {}).get(GENERATOR_FILE, {}).get("sha256")
                    or checkpoint.get("sha256") or ""),
            z_dim=self.z_dim, provider=used_provider(self.generator), upsampler=upsampler)

    def encode(self, prompts: list[str]) -> np.ndarray:
        return self.embed(prompts)

    def generate(self, embedding: np.ndarray, z: np.ndarray) -> np.ndarray:
        """EMBEDDING fp32[B,384], Z fp32[B,z] -> RAW_IMAGE fp32[B,3,64,64]."""
        if len(embedding) == 0:
            return np.empty((0, 3, 64, 64), dtype=np.float32)
        return self.generator.run(["RAW_IMAGE"], {
            "EMBEDDING": np.ascontiguousarray(embedding, dtype=np.float32),
            "Z": np.ascontiguousarray(z, dtype=np.float32)})[0]

    def upsample(self, raw: np.ndarray) -> np.ndarray:
        """RAW_IMAGE fp32[B,3,64,64] -> RAW_IMAGE_256 fp32[B,3,256,256] in [-1, 1]."""
        if len(raw) == 0:
            return np.empty((0, 3, LARGE_IMAGE_SIZE, LARGE_IMAGE_SIZE), dtype=np.float32)
        return self.upsampler.run(["RAW_IMAGE_256"], {
            "RAW_IMAGE": np.ascontiguousarray(raw, dtype=np.float32)})[0]

    def run(self, prompts: list[str], seeds) -> np.ndarray:
        """list[str], int[B] -> uint8[B,size,size,3] (size 64, or 256 with an upsampler)."""
        emb = self.encode(prompts)
        z = latents(np.asarray(seeds, dtype=np.int64), self.z_dim)
        raw = self.generate(emb, z)
        if self.upsampler is not None:  # the very RAW_IMAGE the 64 px model rounds
            raw = self.upsample(raw)
        return to_uint8(raw)


# ----------------------------------------------------------------------------- Triton

class TritonModel:
    """One python-backend model: batch concat/split, per-request errors, dtypes from config.

    `pb_utils` is the triton_python_backend_utils module (only importable inside Triton),
    passed in so this file stays importable anywhere.
    """

    def __init__(self, kind: str, args: dict, pb_utils):
        self.kind = kind
        self.pb = pb_utils
        self.config = json.loads(args["model_config"])
        self.version_dir = Path(args["model_repository"]) / str(args["model_version"])
        params = {k: v.get("string_value", "") for k, v in
                  (self.config.get("parameters") or {}).items()}
        self.params = params
        threads = int(params.get("intra_op_threads") or 0)
        # KIND_GPU instances (repo build on a GPU machine) run on the GPU Triton assigns them
        self.device_id = int(args.get("model_instance_device_id") or 0) \
            if str(args.get("model_instance_kind", "")).upper() == "GPU" else 0
        self.out_dtypes = {
            o["name"]: pb_utils.triton_string_to_numpy(o["data_type"])
            for o in self.config["output"]}
        self.pipeline = None
        if kind in (PUBLIC_MODEL, PUBLIC_MODEL_256, TEXT_ENCODER_MODEL, GENERATOR_MODEL):
            self.pipeline = self._load_pipeline(kind, threads, params)
        self.z_dim = int(params.get("z_dim") or 0)
        if kind == LATENTS_MODEL:
            self.z_dim = int(next(o for o in self.config["output"] if o["name"] == "Z")["dims"][-1])

    def _load_pipeline(self, kind: str, threads: int, params: dict):
        te_dir = self.version_dir / "text_encoder"
        gen_dir = self.version_dir / "generator"
        if kind == GENERATOR_MODEL:
            return _GeneratorOnly(gen_dir, threads, self.device_id,
                                  int(params.get("z_dim") or 0))
        if kind == TEXT_ENCODER_MODEL:
            return _EncoderOnly(te_dir, threads, int(params.get("embedding_cache") or 4096),
                                self.device_id)
        return Pipeline(te_dir, gen_dir, threads=threads,
                        cache_size=int(params.get("embedding_cache") or 4096),
                        model_name=params.get("model_name", ""),
                        version=str(self.version_dir.name), device_id=self.device_id,
                        upsampler_dir=(self.version_dir / "upsampler"
                                       if kind == PUBLIC_MODEL_256 else None))

    # -- per-kind: validated inputs of one request -> arrays; batch of arrays -> outputs
    def _inputs(self, request) -> dict[str, np.ndarray]:
        names = [i["name"] for i in self.config["input"]]
        return {n: self.pb.get_input_tensor_by_name(request, n).as_numpy() for n in names}

    def _validate(self, feeds: dict[str, np.ndarray]) -> dict:
        """Raises InvalidInput; returns per-request values ready to concatenate."""
        out = {}
        if "PROMPT" in feeds:
            out["PROMPT"] = [decode_prompt(v) for v in feeds["PROMPT"].reshape(-1)]
        if "SEED" in feeds:
            out["SEED"] = check_seeds(feeds["SEED"])
        for name in ("EMBEDDING", "Z", "RAW_IMAGE"):
            if name in feeds:
                arr = feeds[name]
                if not np.all(np.isfinite(arr)):
                    raise InvalidInput(f"{name} contains NaN or infinity")
                out[name] = arr.astype(np.float32, copy=False)
        return out

    def _compute(self, batch: dict) -> dict[str, np.ndarray]:
        if self.kind in (PUBLIC_MODEL, PUBLIC_MODEL_256):
            return {"IMAGE": self.pipeline.run(batch["PROMPT"], batch["SEED"])}
        if self.kind == TEXT_ENCODER_MODEL:
            return {"EMBEDDING": self.pipeline.encode(batch["PROMPT"])}
        if self.kind == LATENTS_MODEL:
            return {"Z": latents(batch["SEED"], self.z_dim)}
        if self.kind == GENERATOR_MODEL:
            return {"RAW_IMAGE": self.pipeline.generate(batch["EMBEDDING"], batch["Z"])}
        if self.kind == POSTPROCESS_MODEL:
            return {"IMAGE": to_uint8(batch["RAW_IMAGE"])}
        raise BackendError(f"unknown model kind {self.kind!r}")

    def execute(self, requests) -> list:
        pb = self.pb
        responses: list = [None] * len(requests)
        good, parts = [], []
        for i, req in enumerate(requests):
            try:
                parts.append(self._validate(self._inputs(req)))
                good.append(i)
            except InvalidInput as exc:
                responses[i] = pb.InferenceResponse(
                    error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG))
        if good:
            batch, sizes = _concat(parts)
            try:
                outputs = self._compute(batch)
            except Exception as exc:  # a model failure fails the batch, not the server
                for i in good:
                    responses[i] = pb.InferenceResponse(error=pb.TritonError(
                        f"{self.kind} failed: {type(exc).__name__}: {exc}"))
                return responses
            offsets = np.cumsum([0] + sizes)
            for j, i in enumerate(good):
                lo, hi = offsets[j], offsets[j + 1]
                tensors = [pb.Tensor(name, np.ascontiguousarray(
                    arr[lo:hi].astype(self.out_dtypes[name], copy=False)))
                    for name, arr in outputs.items()]
                responses[i] = pb.InferenceResponse(output_tensors=tensors)
        return responses


class TritonTokenizer:
    """The native variants' python `tokenizer` model: PROMPT BYTES[1] -> MiniLM token tensors
    INT64[-1] (input_ids, attention_mask, token_type_ids). Each request is padded to its
    longest prompt rounded up to a multiple of TOKEN_PAD_MULTIPLE, so the native `minilm`
    model's dynamic batcher, which batches equal shapes only, finds partners."""

    def __init__(self, args: dict, pb_utils):
        self.pb = pb_utils
        version_dir = Path(args["model_repository"]) / str(args["model_version"])
        self.tok = Tokenizer.from_file(str(version_dir / TOKENIZER_NAME))
        self.tok.enable_truncation(max_length=TEXT_MAX_TOKENS)

    def tokens(self, texts: list[str]) -> dict[str, np.ndarray]:
        """list[str] -> {name: int64[B, T]}, T a multiple of TOKEN_PAD_MULTIPLE."""
        enc = self.tok.encode_batch(texts)
        width = max(len(e.ids) for e in enc)
        width = min(TEXT_MAX_TOKENS, -(-width // TOKEN_PAD_MULTIPLE) * TOKEN_PAD_MULTIPLE)
        out = {n: np.zeros((len(enc), width), np.int64) for n in TOKEN_INPUTS}
        for i, e in enumerate(enc):
            out["input_ids"][i, :len(e.ids)] = e.ids
            out["attention_mask"][i, :len(e.ids)] = e.attention_mask
            out["token_type_ids"][i, :len(e.ids)] = e.type_ids
        return out

    def execute(self, requests) -> list:
        pb = self.pb
        responses = []
        for request in requests:
            prompts = pb.get_input_tensor_by_name(request, "PROMPT").as_numpy().reshape(-1)
            try:
                out = self.tokens([decode_prompt(p) for p in prompts])
            except InvalidInput as exc:
                responses.append(pb.InferenceResponse(
                    error=pb.TritonError(str(exc), pb.TritonError.INVALID_ARG)))
                continue
            responses.append(pb.InferenceResponse(
                output_tensors=[pb.Tensor(n, a) for n, a in out.items()]))
        return responses


def triton_model(args: dict, pb_utils):
    """What the Triton python model named args["model_name"] runs (triton_models/model.py)."""
    name = args["model_name"]
    if name == TOKENIZER_MODEL:
        return TritonTokenizer(args, pb_utils)
    return TritonModel(name, args, pb_utils)


def _concat(parts: list[dict]) -> tuple[dict, list[int]]:
    """Per-request dicts -> one batch dict and each request's row count."""
    first = next(iter(parts[0]))
    sizes = [len(p[first]) for p in parts]
    batch = {}
    for name in parts[0]:
        if isinstance(parts[0][name], list):
            batch[name] = [x for p in parts for x in p[name]]
        else:
            batch[name] = np.concatenate([p[name] for p in parts])
    return batch, sizes


class _GeneratorOnly:
    def __init__(self, generator_dir: Path, threads: int, device_id: int = 0, z_dim: int = 0):
        self.session = _ort_session(generator_dir / GENERATOR_FILE, threads, device_id, z_dim)

    def generate(self, embedding, z):
        return self.session.run(["RAW_IMAGE"], {"EMBEDDING": embedding, "Z": z})[0]


class _EncoderOnly:
    def __init__(self, te_dir: Path, threads: int, cache_size: int, device_id: int = 0):
        self.embed = EmbeddingCache(TextEncoder(te_dir, threads=threads, batch_size=1,
                                                device_id=device_id), cache_size)

    def encode(self, prompts):
        return self.embed(prompts)

