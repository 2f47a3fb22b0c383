"""ONNX -> TensorRT engine (model.plan) for NVIDIA GPUs, with parity against onnxruntime.

    build_engine(TensorRTConfig(onnx="artifacts/generator/generator.onnx", out="trt/"))
        trt/model.plan       serialized engine, FP16 allowed, one optimisation profile
        trt/timing.cache     tactic timings; reused by the next build on the same GPU/TensorRT
        trt/manifest.json    source ONNX sha256, profile, flags, TensorRT version, parity

TensorRT versions: export/trt_versions.py's SUPPORTED_TENSORRT (10.x and 11.x); outside it the
build stops with one line. FP16 on TensorRT 10 is the builder flag (weak typing); TensorRT 11
removed that flag, so there the ONNX is converted to FP16 with fp32 inputs/outputs
(export/fp16_onnx.py) and built as a strongly typed network. Works for both served ONNX
graphs, recognised by their inputs:
  generator      EMBEDDING [B,384], Z [B,z]  -> RAW_IMAGE [B,3,64,64]   profile B 1/64/256
  text encoder   input_ids, attention_mask, token_type_ids [B,T] -> EMBEDDING [B,384]
                 profile B 1/64/256 x T 1/32/256 (TEXT_MAX_TOKENS)

`tensorrt` (builder) and `polygraphy` (runner for the parity check) are imported lazily:
without them, or without a GPU, the build fails with one line naming what is missing.

Parity tolerances (FP16 engine vs onnxruntime fp32 on CPU):
  generator     images end as uint8, one level = 2/255 in the [-1,1] output. FP16 keeps
                11 significant bits (relative step 4.9e-4); through ~12 convolutions the
                error grows to about 1e-3, far below one level. We require >= 99% of
                values within one level and every value within 4 levels (8/255): a visible
                defect fails, FP16 rounding near a level boundary does not.
  text encoder  the served quantity is the direction of a unit vector; we require cosine
                >= 0.999 per row (the INT8 CPU variant is allowed 0.99).
"""
from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer
from tqdm import tqdm

from adgen.atomic import atomic_dir, atomic_write, atomic_write_json
from adgen.captions import COLOR_NAMES, caption
from adgen.errors import ExportError
from adgen.export.fp16_onnx import convert_to_fp16
from adgen.export.onnx_files import (check_onnx_io, check_out_dir, onnx_io, ort_session,
                                     parity_inputs, spec_to_json, z_dim_of)
from adgen.export.quantize import calibration_captions
from adgen.export.trt_versions import (compute_capability, engine_cache_key, fp16_mode,
                                       nvidia_smi_query, unsupported_reason)
from adgen.contract import (EMBED_DIM, MAX_BATCH_SIZE, TEXT_MAX_TOKENS, generator_spec,
                            text_encoder_spec)
from adgen.paths import sha256_file
from adgen.serving.runtime.backend import TOKEN_INPUTS

PLAN_NAME = "model.plan"  # the file name Triton's tensorrt_plan platform loads
TIMING_CACHE = "timing.cache"
MANIFEST_KIND = "adgen-tensorrt-engine"
INSTALL_HINT = "pip install 'adgen[tensorrt]'"
OPT_TOKENS = 32  # captions and expanded prompts are 10-30 tokens
ONE_LEVEL = 2.0 / 255.0
GENERATOR_TOL = {"within_one_level": 0.99, "max_abs": 4 * ONE_LEVEL}
TEXT_MIN_COSINE = 0.999


class TensorRTUnavailable(ExportError):
    """TensorRT, polygraphy or a CUDA GPU is missing on this machine."""


@dataclass(frozen=True)
class TensorRTConfig:
    """What `adgen export tensorrt` resolved from its options."""
    onnx: str
    out: str
    fp16: bool = True
    profile: tuple[int, int, int] = (1, 64, MAX_BATCH_SIZE)  # min / opt / max batch
    workspace_mib: int = 2048
    timing_cache: str | None = None  # default: reuse <out>/timing.cache if it exists
    force: bool = False
    parity_batches: tuple[int, ...] = (1, 64, 256)


# ----------------------------------------------------------------------------- what is it

def detect_kind(onnx_path: str | Path) -> tuple[str, dict]:
    """('generator', {'z_dim': z}) or ('text_encoder', {}) from the graph inputs; else error."""
    io = onnx_io(onnx_path)
    names = sorted(t["name"] for t in io["inputs"])
    outputs = [t["name"] for t in io["outputs"]]
    if names == ["EMBEDDING", "Z"]:
        z_dim = z_dim_of(onnx_path)
        check_onnx_io(onnx_path, generator_spec(z_dim))
        return "generator", {"z_dim": z_dim}
    if set(names) <= set(TOKEN_INPUTS) and {"input_ids", "attention_mask"} <= set(names):
        if outputs != ["EMBEDDING"]:
            raise ExportError(f"{Path(onnx_path).name}: text encoder outputs {outputs}, "
                              "expected ['EMBEDDING']")
        return "text_encoder", {"inputs": [n for n in TOKEN_INPUTS if n in names]}
    raise ExportError(f"{Path(onnx_path).name} has inputs {names}: neither the generator's "
                      f"['EMBEDDING', 'Z'] nor the text encoder's {list(TOKEN_INPUTS)}")


def profile_shapes(kind: str, info: dict, profile=(1, 64, MAX_BATCH_SIZE)) -> dict:
    """{input name: (min shape, opt shape, max shape)} for the one optimisation profile."""
    lo, opt, hi = profile
    if not 1 <= lo <= opt <= hi <= MAX_BATCH_SIZE:
        raise ExportError(f"batch profile must satisfy 1 <= min <= opt <= max <= "
                          f"{MAX_BATCH_SIZE}, got {lo}/{opt}/{hi}")
    if kind == "generator":
        widths = {"EMBEDDING": EMBED_DIM, "Z": info["z_dim"]}
        return {n: ((lo, w), (opt, w), (hi, w)) for n, w in widths.items()}
    return {n: ((lo, 1), (opt, OPT_TOKENS), (hi, TEXT_MAX_TOKENS)) for n in info["inputs"]}


# ----------------------------------------------------------------------------- lazy imports

def require_tensorrt():
    """The tensorrt module, or TensorRTUnavailable naming what to install."""
    try:
        import tensorrt as trt
    except ImportError:
        raise TensorRTUnavailable(f"TensorRT is not installed: {INSTALL_HINT} "
                                  "(needs an NVIDIA GPU with a CUDA driver)") from None
    why = unsupported_reason(str(getattr(trt, "__version__", "0")))
    if why:  # the supported range and its reasons: export/trt_versions.py
        raise TensorRTUnavailable(f"{why}: {INSTALL_HINT}")
    return trt


def require_polygraphy():
    try:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError:
        raise TensorRTUnavailable(f"polygraphy is not installed (runs the parity check): "
                                  f"{INSTALL_HINT}") from None
    return EngineFromBytes, TrtRunner


def _builder(trt, logger):
    try:
        builder = trt.Builder(logger)
    except Exception as exc:  # CUDA initialisation failure surfaces as TypeError/RuntimeError
        builder, why = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    else:
        why = "no CUDA device"
    if builder is None:
        raise TensorRTUnavailable(f"TensorRT found no usable NVIDIA GPU ({why}); "
                                  "build engines on the GPU that will serve them")
    return builder


def gpu_name() -> str | None:
    return nvidia_smi_query("name")


# ----------------------------------------------------------------------------- build

def precision_of(trt, fp16: bool) -> str:
    """'fp16-builder-flag' (TensorRT 10), 'fp16-strongly-typed' (11) or 'fp32'."""
    return f"fp16-{fp16_mode(trt)}" if fp16 else "fp32"


def _strongly_typed_flags(trt) -> int:
    # 10.x: opt in; 11.x: always strongly typed, the flag is accepted (deprecated) or absent
    flag = getattr(getattr(trt, "NetworkDefinitionCreationFlag", None), "STRONGLY_TYPED", None)
    return 0 if flag is None else 1 << int(flag)


def build_serialized(trt, onnx_path: Path, shapes: dict, fp16: bool, workspace_mib: int,
                     cache_bytes: bytes) -> tuple[bytes, bytes]:
    """(engine bytes, updated timing cache bytes); ExportError with TensorRT's reason."""
    precision = precision_of(trt, fp16)
    with tempfile.TemporaryDirectory(prefix="adgen-trt-") as work:
        source, flags = onnx_path, 0  # TensorRT 10: explicit batch is the only mode
        if precision == "fp16-strongly-typed":
            source = convert_to_fp16(onnx_path, Path(work) / onnx_path.name)
            flags = _strongly_typed_flags(trt)
        return _build(trt, onnx_path.name, source, flags, shapes, precision, workspace_mib,
                      cache_bytes)


def _build(trt, label: str, source: Path, flags: int, shapes: dict, precision: str,
           workspace_mib: int, cache_bytes: bytes) -> tuple[bytes, bytes]:
    logger = trt.Logger(trt.Logger.WARNING)
    builder = _builder(trt, logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(source)):
        errors = [str(parser.get_error(i).desc()) for i in range(parser.num_errors)]
        raise ExportError(f"TensorRT cannot parse {label}: "
                          f"{errors[0] if errors else 'unknown error'}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_mib << 20)
    if precision == "fp16-builder-flag":
        config.set_flag(trt.BuilderFlag.FP16)
    elif precision == "fp32" and hasattr(trt.BuilderFlag, "TF32"):
        config.clear_flag(trt.BuilderFlag.TF32)  # strict fp32: TF32 rounds like FP16
    cache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, False)  # False: a cache from another GPU is an error
    profile = builder.create_optimization_profile()
    for name, (lo, opt, hi) in shapes.items():
        profile.set_shape(name, lo, opt, hi)
    config.add_optimization_profile(profile)
    engine = builder.build_serialized_network(network, config)
    if engine is None:
        raise ExportError(f"TensorRT failed to build an engine from {label} "
                          "(see the TensorRT log above)")
    return bytes(engine), bytes(config.get_timing_cache().serialize())


# ----------------------------------------------------------------------------- parity

def sample_feeds(kind: str, info: dict, batch: int, onnx_path: Path) -> dict[str, np.ndarray]:
    if kind == "generator":
        return parity_inputs(batch, info["z_dim"])
    # Real captions through the tokenizer that sits beside the text encoder ONNX.
    tok_path = onnx_path.parent / "tokenizer.json"
    if not tok_path.is_file():
        raise ExportError(f"no tokenizer.json beside {onnx_path.name}; cannot check parity")
    tok = Tokenizer.from_file(str(tok_path))
    tok.enable_truncation(max_length=TEXT_MAX_TOKENS)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    try:
        texts = calibration_captions(batch)
    except ExportError:  # no dataset here: palette captions are still real prompts
        texts = [caption(f"item {i}", COLOR_NAMES[i % len(COLOR_NAMES)]) for i in range(batch)]
    enc = tok.encode_batch(texts)
    arrays = {"input_ids": [e.ids for e in enc], "attention_mask": [e.attention_mask for e in enc],
              "token_type_ids": [e.type_ids for e in enc]}
    return {n: np.array(arrays[n], dtype=np.int64) for n in info["inputs"]}


def compare(kind: str, ref: np.ndarray, out: np.ndarray) -> dict:
    out = out.astype(np.float32)
    d = np.abs(out.astype(np.float64) - ref.astype(np.float64))
    figures = {"max_abs": float(d.max()), "mean_abs": float(d.mean())}
    if kind == "generator":
        figures["within_one_level"] = float((d <= ONE_LEVEL).mean())
        figures["ok"] = bool(figures["within_one_level"] >= GENERATOR_TOL["within_one_level"]
                             and figures["max_abs"] <= GENERATOR_TOL["max_abs"])  # NaN: False
    else:
        cos = (out * ref).sum(1) / (np.linalg.norm(out, axis=1) * np.linalg.norm(ref, axis=1))
        figures["min_cosine"] = float(cos.min())
        figures["ok"] = bool(figures["min_cosine"] >= TEXT_MIN_COSINE)
    return figures


def run_engine(engine_bytes: bytes, feeds_list: list[dict]) -> list[np.ndarray]:
    """Runs the engine through polygraphy's TrtRunner (it sets the dynamic shapes per call).

    TrtRunner returns views of host buffers it reuses on the next infer(): each output is
    copied, or every batch's result would be the last batch's."""
    EngineFromBytes, TrtRunner = require_polygraphy()
    outputs = []
    with TrtRunner(EngineFromBytes(engine_bytes)) as runner:
        for feeds in feeds_list:
            result = runner.infer(feed_dict=feeds)
            name = "RAW_IMAGE" if "RAW_IMAGE" in result else "EMBEDDING"
            outputs.append(np.asarray(result[name]).copy())
    return outputs


def measure_parity(kind: str, info: dict, onnx_path: Path, engine_bytes: bytes,
                   batches) -> dict:
    sess = ort_session(onnx_path)
    out_name = sess.get_outputs()[0].name
    feeds_list = [sample_feeds(kind, info, b, onnx_path) for b in batches]
    refs = [sess.run([out_name], f)[0] for f in feeds_list]
    outs = run_engine(engine_bytes, feeds_list)
    return {str(b): compare(kind, r, o) for b, r, o in zip(batches, refs, outs)}


def build_engine(cfg: TensorRTConfig, progress: bool = True) -> Path:
    """Builds, checks and publishes the engine folder; returns it. See the module docstring."""
    onnx_path = Path(cfg.onnx)
    out_dir = check_out_dir(cfg.out, cfg.force)
    kind, info = detect_kind(onnx_path)  # wrong inputs fail here, before TensorRT is needed
    shapes = profile_shapes(kind, info, cfg.profile)
    bad = [b for b in cfg.parity_batches if not cfg.profile[0] <= b <= cfg.profile[2]]
    if bad:
        raise ExportError(f"parity batch sizes {bad} are outside the profile {cfg.profile}")
    trt = require_tensorrt()
    require_polygraphy()
    cache_src = Path(cfg.timing_cache) if cfg.timing_cache else out_dir / TIMING_CACHE
    cache_bytes = cache_src.read_bytes() if cache_src.is_file() else b""
    with tqdm(total=2, desc=f"tensorrt {kind}", unit="step", disable=not progress) as steps, \
            atomic_dir(out_dir) as tmp:
        started = time.perf_counter()
        steps.set_postfix_str("build")
        engine, cache = build_serialized(trt, onnx_path, shapes, cfg.fp16, cfg.workspace_mib,
                                         cache_bytes)
        build_s = time.perf_counter() - started
        steps.update()
        (tmp / PLAN_NAME).write_bytes(engine)
        (tmp / TIMING_CACHE).write_bytes(cache)
        steps.set_postfix_str("parity")
        parity = measure_parity(kind, info, onnx_path, engine, cfg.parity_batches)
        steps.update()
        failed = [b for b, f in parity.items() if not f["ok"]]
        if failed:
            f = parity[failed[0]]
            raise ExportError(f"TensorRT parity failed at batch {failed[0]}: "
                              + ", ".join(f"{k}={v:.4g}" for k, v in f.items() if k != "ok"))
        if cfg.timing_cache:  # the user's shared cache gets the new timings too
            atomic_write(cfg.timing_cache, cache)
        spec = generator_spec(info["z_dim"]) if kind == "generator" else text_encoder_spec()
        source_sha, capability = sha256_file(onnx_path), compute_capability()
        atomic_write_json(tmp / "manifest.json", {
            "kind": MANIFEST_KIND, "format_version": 1, "model": kind, "plan": PLAN_NAME,
            "source_onnx": {"name": onnx_path.name, "sha256": source_sha},
            "spec": spec_to_json(spec) if kind == "generator" else None,
            "inputs": {n: {"min": s[0], "opt": s[1], "max": s[2]} for n, s in shapes.items()},
            "fp16": cfg.fp16, "precision": precision_of(trt, cfg.fp16),
            "workspace_mib": cfg.workspace_mib,
            "tensorrt": trt.__version__, "gpu": gpu_name(), "compute_capability": capability,
            "cache_key": engine_cache_key(source_sha, trt.__version__, capability, cfg.fp16),
            "build_seconds": round(build_s, 1), "size_bytes": len(engine),
            "parity": {"reference": "onnxruntime CPU fp32 on the source ONNX",
                       "tolerance": GENERATOR_TOL if kind == "generator"
                       else {"min_cosine": TEXT_MIN_COSINE},
                       "batches": parity},
            "note": "engines are specific to the GPU model and TensorRT version that built them",
        })
    return out_dir


def tensorrt_runner(onnx_path: str | Path, engine_dir: str | Path, progress: bool = False):
    """callable(EMBEDDING fp32[B,384], Z fp32[B,z]) -> RAW_IMAGE fp32[B,3,64,64] on the GPU.

    Builds (or reuses) the engine in engine_dir; for benchmarks. Raises TensorRTUnavailable
    where there is no TensorRT or GPU.
    """
    engine_dir = Path(engine_dir)
    if not (engine_dir / PLAN_NAME).is_file():
        build_engine(TensorRTConfig(onnx=str(onnx_path), out=str(engine_dir), force=True),
                     progress=progress)
    EngineFromBytes, TrtRunner = require_polygraphy()
    runner = TrtRunner(EngineFromBytes((engine_dir / PLAN_NAME).read_bytes()))
    runner.activate()  # stays active for the life of the callable (process)

    def run(embedding: np.ndarray, z: np.ndarray) -> np.ndarray:
        # a copy: polygraphy reuses its output buffer on the next call
        return np.asarray(runner.infer(feed_dict={"EMBEDDING": embedding, "Z": z})["RAW_IMAGE"]
                          ).copy()
    run.runner = runner
    return run
