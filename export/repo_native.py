"""Model-repository variants for NVIDIA's Triton container: native onnxruntime / TensorRT.

`adgen repo build --variant onnxruntime|tensorrt` (dispatched from export/repo.py) writes:

    adgen/         ensemble   PROMPT, SEED -> IMAGE        (triton_models/adgen_ensemble)
    text_encoder/  ensemble   PROMPT -> EMBEDDING          tokenizer -> minilm
    tokenizer/     python     PROMPT -> input_ids, attention_mask, token_type_ids INT64[-1]
    minilm/        native     tokens [B,T] -> EMBEDDING [B,384]  1/model.onnx or 1/model.plan
    latents/       python     SEED -> Z                    (triton_models/latents)
    generator/     native     EMBEDDING, Z -> RAW_IMAGE    1/model.onnx or 1/model.plan
    postprocess/   python     RAW_IMAGE -> IMAGE           (triton_models/postprocess)

Names, dtypes and dims of every contract model come from adgen.contract, so the public
`adgen` and the stages keep the contract whatever runs them. Tokenization stays in Python
(the native backends cannot split text); each request's tokens are padded to a multiple of
16 so that Triton's dynamic batcher, which batches equal shapes only, finds partners.

The native backends are not in the CPU tritonserver of the nvidia-pytriton wheel, so these
variants are checked structurally here (configs parsed with Triton's ModelConfig protobuf
and compared with the contract; model files present; ensemble wiring); the python
`tokenizer` model runs for real in that server. TensorRT engines are built on the serving
GPU (export/tensorrt.py) and cached in artifacts/tensorrt/<label>-<key>/, the key being the
ONNX hash + TensorRT version + GPU compute capability (export/trt_versions.py): an engine is
valid only for all three, so a new TensorRT or another GPU builds a new one.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as pb

from adgen.contract import (EMBED_DIM, GENERATOR_MODEL, LATENTS_MODEL, MAX_BATCH_SIZE,
                            POSTPROCESS_MODEL, TEXT_ENCODER_MODEL, generator_spec,
                            text_encoder_spec)
from adgen.errors import ExportError
from adgen.export import trt_versions
from adgen.export.onnx_files import check_onnx_io, onnx_io
from adgen.export.repo_files import (ensemble_model, link_or_copy, python_model,
                                     python_version_folder, write_config)
from adgen.export.tensorrt import PLAN_NAME, TensorRTConfig, build_engine, require_tensorrt
from adgen.paths import artifacts_dir, sha256_file
# the python `tokenizer` model is the one python model (triton_models/model.py) run by name
from adgen.serving.runtime.backend import TOKEN_INPUTS, TOKENIZER_MODEL

MINILM_MODEL = "minilm"
PLATFORMS = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
MODEL_FILES = {"onnxruntime": "model.onnx", "tensorrt": "model.plan"}  # Triton's defaults
QUEUE_DELAY_US = 2000
log = logging.getLogger("adgen.export")

# ----------------------------------------------------------------------------- configs

def _tensor(msg, name: str, dtype: str, dims) -> None:
    t = msg.add()
    t.name = name
    t.data_type = pb.DataType.Value(dtype)
    t.dims.extend(list(dims))


def native_config(name: str, variant: str, inputs, outputs):
    """A ModelConfig for a native backend: dynamic batching up to MAX_BATCH_SIZE.

    inputs/outputs: [(name, TYPE_*, dims)]. TensorRT instances are pinned to the GPU;
    onnxruntime ones are left to Triton (GPU when the container has one, else CPU).
    """
    config = pb.ModelConfig()
    config.name = name
    config.platform = PLATFORMS[variant]
    config.max_batch_size = MAX_BATCH_SIZE
    config.default_model_filename = MODEL_FILES[variant]
    for n, d, dims in inputs:
        _tensor(config.input, n, d, dims)
    for n, d, dims in outputs:
        _tensor(config.output, n, d, dims)
    group = config.instance_group.add()
    group.count = 1
    if variant == "tensorrt":
        group.kind = pb.ModelInstanceGroup.KIND_GPU
    config.dynamic_batching.max_queue_delay_microseconds = QUEUE_DELAY_US
    config.dynamic_batching.preferred_batch_size.extend([64, MAX_BATCH_SIZE])
    return config


def generator_config(variant: str, z_dim: int):
    spec = generator_spec(z_dim)
    return native_config(GENERATOR_MODEL, variant,
                         [(t.name, t.triton_dtype, t.dims) for t in spec.inputs],
                         [(t.name, t.triton_dtype, t.dims) for t in spec.outputs])


def minilm_config(variant: str, token_inputs=TOKEN_INPUTS):
    return native_config(MINILM_MODEL, variant,
                         [(n, "TYPE_INT64", (-1,)) for n in token_inputs],
                         [("EMBEDDING", "TYPE_FP32", (EMBED_DIM,))])


def tokenizer_config(token_inputs=TOKEN_INPUTS):
    config = pb.ModelConfig()
    config.name = TOKENIZER_MODEL
    config.backend = "python"
    config.max_batch_size = MAX_BATCH_SIZE
    _tensor(config.input, "PROMPT", "TYPE_STRING", (1,))
    for n in token_inputs:
        _tensor(config.output, n, "TYPE_INT64", (-1,))
    group = config.instance_group.add()
    group.count, group.kind = 1, pb.ModelInstanceGroup.KIND_CPU
    return config


def text_encoder_ensemble(token_inputs=TOKEN_INPUTS):
    """`text_encoder` (contract: PROMPT -> EMBEDDING) as tokenizer -> minilm."""
    spec = text_encoder_spec()
    config = pb.ModelConfig()
    config.name = TEXT_ENCODER_MODEL
    config.platform = "ensemble"
    config.max_batch_size = spec.max_batch_size
    for t in spec.inputs:
        _tensor(config.input, t.name, t.triton_dtype, t.dims)
    for t in spec.outputs:
        _tensor(config.output, t.name, t.triton_dtype, t.dims)
    tok = config.ensemble_scheduling.step.add()
    tok.model_name, tok.model_version = TOKENIZER_MODEL, -1
    tok.input_map["PROMPT"] = "PROMPT"
    net = config.ensemble_scheduling.step.add()
    net.model_name, net.model_version = MINILM_MODEL, -1
    for n in token_inputs:
        tok.output_map[n] = f"tok_{n}"
        net.input_map[n] = f"tok_{n}"
    net.output_map["EMBEDDING"] = "EMBEDDING"
    return config


# ----------------------------------------------------------------------------- artifacts

def _token_inputs(te_dir: Path) -> tuple[str, ...]:
    names = [t["name"] for t in onnx_io(te_dir / "model.onnx")["inputs"]]
    if not {"input_ids", "attention_mask"} <= set(names) or not set(names) <= set(TOKEN_INPUTS):
        raise ExportError(f"{te_dir / 'model.onnx'} has inputs {names}, expected "
                          f"{list(TOKEN_INPUTS)} (run `adgen export text-encoder --force`)")
    return tuple(n for n in TOKEN_INPUTS if n in names)


def engine_folder(onnx_path: Path, label: str, tensorrt_version: str,
                  capability: str | None) -> Path:
    """artifacts/tensorrt/<label>-<key>: key = ONNX sha256 + TensorRT version + GPU capability."""
    key = trt_versions.engine_cache_key(sha256_file(onnx_path), tensorrt_version, capability)
    return artifacts_dir() / "tensorrt" / f"{label}-{key}"


def cached_engine(onnx_path: Path, label: str, progress: bool = True) -> Path:
    """The engine folder's model.plan for this ONNX, TensorRT and GPU; built if missing."""
    trt = require_tensorrt()  # not installed / unsupported: one line, before anything is built
    why = trt_versions.deploy_mismatch(trt.__version__)
    if why:
        log.warning("warning: %s", why)
    folder = engine_folder(onnx_path, label, trt.__version__, trt_versions.compute_capability())
    if not (folder / PLAN_NAME).is_file() or not (folder / "manifest.json").is_file():
        build_engine(TensorRTConfig(onnx=str(onnx_path), out=str(folder), force=True),
                     progress=progress)
    return folder / PLAN_NAME


def _model_file(variant: str, onnx_path: Path, label: str, progress: bool) -> Path:
    return onnx_path if variant == "onnxruntime" else cached_engine(onnx_path, label, progress)


def build_native(variant: str, out: Path, gen, te_dir: Path, header: str,
                 extra_models: tuple = (), progress: bool = True) -> None:
    """Fills `out` (a fresh temp folder from adgen.export.repo.build_repository) for `variant`."""
    if variant not in PLATFORMS:
        raise ExportError(f"unknown native variant {variant!r}")
    if extra_models:
        raise ExportError(f"--extra-model is for the python variants; {variant} already "
                          "serves every stage as its own model")
    gen_onnx = gen.folder / "generator.onnx"
    check_onnx_io(gen_onnx, generator_spec(gen.z_dim))  # wrong inputs: one line, nothing built
    token_inputs = _token_inputs(te_dir)
    # Engines first: the step that can fail (no GPU / TensorRT) fails before anything is laid out.
    gen_file = _model_file(variant, gen_onnx, f"generator-{gen.name}", progress)
    te_file = _model_file(variant, te_dir / "model.onnx", "text_encoder", progress)
    for name, config, model_file in ((GENERATOR_MODEL, generator_config(variant, gen.z_dim),
                                      gen_file),
                                     (MINILM_MODEL, minilm_config(variant, token_inputs),
                                      te_file)):
        link_or_copy(model_file, out / name / "1" / MODEL_FILES[variant])
        write_config(config, out / name / "config.pbtxt", header)
    _copy_manifest(gen.folder / "manifest.json", out / GENERATOR_MODEL / "manifest.json")
    _copy_manifest(te_dir / "manifest.json", out / MINILM_MODEL / "manifest.json")
    # tokenizer: the python model + vendored runtime + tokenizer.json
    version = python_version_folder(out, TOKENIZER_MODEL)
    link_or_copy(te_dir / "tokenizer.json", version / "tokenizer.json")
    write_config(tokenizer_config(token_inputs), out / TOKENIZER_MODEL / "config.pbtxt", header)
    (out / TEXT_ENCODER_MODEL / "1").mkdir(parents=True)
    write_config(text_encoder_ensemble(token_inputs), out / TEXT_ENCODER_MODEL / "config.pbtxt",
                   header)
    # latents and postprocess stay python; `adgen` is the committed ensemble.
    for name in (LATENTS_MODEL, POSTPROCESS_MODEL):
        python_model(out, name, gen, None, False, header)
    ensemble_model(out, gen, header)


def _copy_manifest(src: Path, dst: Path) -> None:
    """Beside the model version folder: Triton ignores plain files at the model level."""
    if src.is_file():
        dst.write_text(json.dumps(json.loads(src.read_text()), indent=2) + "\n")

