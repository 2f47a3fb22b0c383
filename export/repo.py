"""Build a Triton model repository from triton_models/ and the exported artifacts.

    build_repository("model_repository")            # release model, fused python `adgen`
    build_repository(out, variant="python-ensemble")  # `adgen` as an ensemble of 4 models

Layout written (python-ort):
    out/adgen/config.pbtxt              from triton_models/adgen, parameters filled in, and
                                        the served config for this host (instances x
                                        threads, preferred batch, queue delay:
                                        export/served_config.py)
    out/adgen/1/model.py                the one python model (triton_models/model.py)
    out/adgen/1/adgen/                  a copy of adgen's core and adgen.serving.runtime
                                        (torch-free), so the repository runs in any Triton
                                        with numpy, onnxruntime and tokenizers (no adgen
                                        install needed)
    out/adgen/1/text_encoder/           model.onnx, tokenizer.json, manifest.json
    out/adgen/1/generator/              generator.onnx, manifest.json
    out/adgen_256/...                   the same plus 1/upsampler/ (upsampler.onnx,
                                        manifest.json): 256 px images; only when an
                                        upsampler is given or the release one exists

The folder is assembled beside `out` and renamed into place; an existing repository is
replaced only with force=True. Large files are hard-linked when possible. Variants are a
small dispatch table (VARIANTS) so other backends (native onnxruntime, TensorRT) plug in.
"""
from __future__ import annotations

import logging
import subprocess
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from tritonclient.grpc import model_config_pb2

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.contract import (GENERATOR_MODEL, LATENTS_MODEL, POSTPROCESS_MODEL, PUBLIC_MODEL,
                            PUBLIC_MODEL_256, TEXT_ENCODER_MODEL, UPSAMPLER_MODEL, all_specs,
                            generator_spec, upsampler_spec)
from adgen.errors import AdgenError
from adgen.export import repo_native
from adgen.export.onnx_files import check_onnx_io, z_dim_of
from adgen.export.precision import (PrecisionChoice, choose_precision,
                                    choose_upsampler_precision)
from adgen.export.served_config import resolve_served
# SOURCES and load_config: also read from here by benchmarks that look at the committed configs
from adgen.export.repo_files import (ENSEMBLE_SOURCE, SOURCES, GeneratorArtifact,  # noqa: F401
                                     ensemble_model, link_or_copy, load_config, parse_config,
                                     python_model, set_param, write_config)
from adgen.export.text_encoder import export_text_encoder
from adgen.paths import artifacts_dir, release_model_dir, release_upsampler_dir, sha256_file
from adgen.serving.jobs.served import ServedConfig, ServedConfigError, from_proto
from adgen.serving.runtime.backend import UPSAMPLER_FILE, read_generator_info, read_upsampler_info
from adgen.serving.runtime.text import ONNX_NAME, TOKENIZER_NAME

log = logging.getLogger("adgen.export")

# Contract stages with no Triton model of their own: the upsampler ONNX runs inside the
# fused `adgen_256` only (a separate model would add a process and a hop per request).
INTERNAL_STAGES = (UPSAMPLER_MODEL,)
# The fused python models: their instances, threads and dynamic batching are the served config.
SERVED_MODELS = (PUBLIC_MODEL, PUBLIC_MODEL_256)
# Variants that build `adgen_256` (a python model holding onnxruntime sessions); the native
# variants target Tritons whose python may lack onnxruntime.
UPSAMPLED_VARIANTS = ("python-ort", "python-ensemble")


class RepoError(AdgenError):
    """A repository that cannot be built; one line for the user."""


# ----------------------------------------------------------------------------- inputs

def served_generator(model: str | Path | None = None, precision: str = "auto",
                     progress: bool = True):
    """(the generator a repository built from `model` serves, PrecisionChoice): the fp32
    export (resolve_generator) or a variant the model folder ships, as export/precision.py
    decides for this host."""
    return _served_precision(resolve_generator(model, progress=progress), model, precision)


def _served_precision(gen: GeneratorArtifact, model, requested: str):
    if model is None:
        model_dir = release_model_dir()
    else:
        path = Path(model)
        model_dir = path if (path / "generator.safetensors").is_file() else None
    if model_dir is None:  # an ONNX export folder, served as given
        if requested == "int8":
            raise RepoError("--precision int8 needs a checkpoint folder that ships an int8 "
                            "export (e.g. the release model), not an ONNX folder")
        return gen, PrecisionChoice("fp32" if requested == "auto" else requested, None,
                                    "the given ONNX export, as it is")
    ckpt_sha = (read_generator_info(gen.folder).get("checkpoint") or {}).get("sha256")
    choice = choose_precision(requested, model_dir, ckpt_sha)
    log.info("generator precision: %s", choice.reason)
    if choice.folder is None:
        return gen, choice
    return replace(_artifact(choice.folder, gen.name), name=f"{gen.name}-{choice.precision}"), \
        choice


def resolve_generator(model: str | Path | None = None, progress: bool = True) -> GeneratorArtifact:
    """An ONNX export folder as is, or a checkpoint (folder or .safetensors) exported once.

    None means the release model (models/adgen-emoji64)."""
    path = Path(model) if model else release_model_dir()
    if path.is_dir() and (path / "generator.onnx").is_file():
        return _artifact(path, path.name)
    is_ckpt = (path.is_file() and path.suffix == ".safetensors") or \
        (path.is_dir() and (path / "generator.safetensors").is_file())
    if not is_ckpt:
        what = "the release model" if model is None else str(path)
        raise RepoError(f"{what} has no generator: expected generator.onnx or "
                        f"generator.safetensors in {path}")
    weights = path if path.is_file() else path / "generator.safetensors"
    sha = sha256_file(weights)
    name = path.stem if path.is_file() else path.name
    cache = artifacts_dir() / "generator" / f"{name}-{sha[:12]}"
    if not (cache / "generator.onnx").is_file() or not (cache / "manifest.json").is_file():
        from adgen.export.onnx_export import export_onnx  # imports torch: only to export
        export_onnx(path, cache, force=True, progress=progress)
    return _artifact(cache, name)


def _artifact(folder: Path, name: str) -> GeneratorArtifact:
    info = read_generator_info(folder)
    z_dim = int(info.get("z_dim") or 0)
    if not z_dim:
        try:
            z_dim = z_dim_of(folder / "generator.onnx")
        except AdgenError as exc:
            raise RepoError(str(exc)) from None
    sha = (info.get("files", {}).get("generator.onnx", {}).get("sha256")
           or (info.get("checkpoint") or {}).get("sha256") or "")
    if not sha:
        sha = sha256_file(folder / "generator.onnx")
    ckpt_name = (info.get("checkpoint") or {}).get("name")
    return GeneratorArtifact(folder, z_dim, sha, Path(ckpt_name).stem if ckpt_name else name)


@dataclass(frozen=True)
class UpsamplerArtifact:
    """An exported upsampler folder (upsampler.onnx + manifest.json) and what it says."""
    folder: Path
    sha256: str  # of upsampler.onnx
    name: str
    precision: str = "fp32"
    reason: str = "an ONNX export folder, served as it is"


def resolve_upsampler(upsampler: str | Path | bool | None = None, progress: bool = True,
                      precision: str = "auto") -> UpsamplerArtifact | None:
    """An upsampler ONNX export folder as is, or a checkpoint folder: its int8/ export where
    the upsampler's precision rule keeps it on this host (export/precision.py), else its
    fp32 export made once in artifacts/upsampler/<name>-<sha12>. None: the release
    upsampler if it exists (else None, logged); False: no upsampler. RepoError (one line)
    for anything unusable."""
    if upsampler is False:
        return None
    if upsampler is None or upsampler is True:
        path = release_upsampler_dir()
        if not path.exists():
            log.warning("no release upsampler at %s: adgen_256 not built (see --upsampler)",
                        path)
            return None
    else:
        path = Path(upsampler)
    if path.is_dir() and (path / UPSAMPLER_FILE).is_file():
        return _upsampler_artifact(path)
    is_ckpt = (path.is_dir() and (path / "upsampler.safetensors").is_file()) or \
        (path.is_file() and path.suffix == ".safetensors")
    if not is_ckpt:
        raise RepoError(f"{path} has no upsampler: expected {UPSAMPLER_FILE} (an export) or "
                        "upsampler.safetensors + config.json (a checkpoint)")
    weights = path if path.is_file() else path / "upsampler.safetensors"
    folder = path.parent if path.is_file() else path
    sha = sha256_file(weights)
    try:
        choice = choose_upsampler_precision("fp32" if precision == "fp32" else "auto", folder,
                                            sha)
    except AdgenError as exc:
        raise RepoError(f"upsampler {path}: {exc}") from None
    log.info("upsampler precision: %s (%s)", choice.precision, choice.reason)
    if choice.folder is not None:
        return replace(_upsampler_artifact(choice.folder), precision=choice.precision,
                       reason=choice.reason)
    cache = artifacts_dir() / "upsampler" / f"{folder.name}-{sha[:12]}"
    if not (cache / UPSAMPLER_FILE).is_file() or not (cache / "manifest.json").is_file():
        from adgen.export.upsampler_onnx import export_upsampler  # imports torch
        try:
            export_upsampler(folder, cache, force=True)
        except AdgenError as exc:  # CheckpointError / ExportError: name the folder
            raise RepoError(f"upsampler {path}: {exc}") from None
    return replace(_upsampler_artifact(cache, folder.name), reason=choice.reason)


def _upsampler_artifact(folder: Path, name: str = "") -> UpsamplerArtifact:
    """Checks the export against the contract (one-line RepoError) before anything is built."""
    try:
        info = read_upsampler_info(folder)
        check_onnx_io(folder / UPSAMPLER_FILE, upsampler_spec())
    except AdgenError as exc:
        raise RepoError(f"upsampler {folder}: {exc}") from None
    return UpsamplerArtifact(folder, info["sha256"], name or info["name"])


def resolve_text_encoder(text_encoder: str | Path | None = None) -> Path:
    if text_encoder:
        folder = Path(text_encoder)
        if not (folder / ONNX_NAME).is_file() or not (folder / TOKENIZER_NAME).is_file():
            raise RepoError(f"no text encoder ({ONNX_NAME}, {TOKENIZER_NAME}) in {folder}")
        return folder
    return export_text_encoder()  # reuses artifacts/text_encoder when it exists


# ----------------------------------------------------------------------------- models

def _upsampled_model(out: Path, gen: GeneratorArtifact, te_dir: Path,
                     up: UpsamplerArtifact, header: str) -> None:
    """`adgen_256`: the fused `adgen` files plus 1/upsampler/ and the upsampler's identity."""
    python_model(out, PUBLIC_MODEL_256, gen, te_dir, True, header)
    for f in ("upsampler.onnx", "manifest.json", "upsampler.onnx.data"):
        if (up.folder / f).is_file():
            link_or_copy(up.folder / f, out / PUBLIC_MODEL_256 / "1" / "upsampler" / f)
    path = out / PUBLIC_MODEL_256 / "config.pbtxt"
    config = parse_config(path.read_text())
    set_param(config, "upsampler_name", up.name)  # the client records these (client.py)
    set_param(config, "upsampler_sha256", up.sha256)
    write_config(config, path, header)


def apply_served(folder: Path, served: ServedConfig, z_dim: int) -> list[str]:
    """Writes `served` into every fused model of a built repository (instance group, threads,
    max_batch_size, preferred batch sizes, queue delay), each checked against the contract
    (RepoError, one line, before anything is renamed into place); returns the models."""
    done = []
    for name in SERVED_MODELS:
        path = folder / name / "config.pbtxt"
        if not path.is_file():
            continue
        text = path.read_text()
        header = text.splitlines()[0].lstrip("# ") if text.startswith("#") else ""
        config = parse_config(text)
        if config.backend != "python":  # `adgen` as an ensemble: its stages keep theirs
            continue
        del config.instance_group[:]
        group = config.instance_group.add()
        group.count, group.kind = served.instances, model_config_pb2.ModelInstanceGroup.KIND_CPU
        set_param(config, "intra_op_threads", served.threads)
        config.max_batch_size = served.max_batch_size
        config.dynamic_batching.max_queue_delay_microseconds = served.delay_us
        del config.dynamic_batching.preferred_batch_size[:]
        config.dynamic_batching.preferred_batch_size.extend(served.preferred)
        problems = check_against_contract(config, z_dim)
        if problems:
            raise RepoError(f"served config {served.label} breaks the contract: {problems[0]}")
        write_config(config, path, header)
        done.append(name)
    return done


# ----------------------------------------------------------------------------- variants

def _variant_python_ort(out, gen, te_dir, header, extra_models):
    """`adgen` fused: one python model running all four stages with onnxruntime."""
    python_model(out, PUBLIC_MODEL, gen, te_dir, True, header)
    _stage_models(out, gen, te_dir, header, extra_models)


def _variant_python_ensemble(out, gen, te_dir, header, extra_models):
    """`adgen` as a Triton ensemble of four python stage models."""
    _stage_models(out, gen, te_dir, header, (TEXT_ENCODER_MODEL, LATENTS_MODEL,
                                             GENERATOR_MODEL, POSTPROCESS_MODEL))
    ensemble_model(out, gen, header)


def _stage_models(out, gen, te_dir, header, names):
    for name in names:
        if name not in STAGES:
            raise RepoError(f"unknown stage model {name!r}; choose from {', '.join(STAGES)}")
        python_model(out, name, gen, te_dir if name == TEXT_ENCODER_MODEL else None,
                      name == GENERATOR_MODEL, header)


STAGES = (TEXT_ENCODER_MODEL, LATENTS_MODEL, GENERATOR_MODEL, POSTPROCESS_MODEL)
Variant = Callable[[Path, GeneratorArtifact, Path, str, tuple], None]
VARIANTS: dict[str, Variant] = {
    "python-ort": _variant_python_ort,
    "python-ensemble": _variant_python_ensemble,
}


def _native(variant: str) -> Variant:
    """onnxruntime / tensorrt: native backends for NVIDIA's Triton (export/repo_native.py)."""
    def build(out, gen, te_dir, header, extra_models):
        repo_native.build_native(variant, out, gen, te_dir, header, extra_models)
    return build


VARIANTS.update({"onnxruntime": _native("onnxruntime"), "tensorrt": _native("tensorrt")})


def gpu_present() -> bool:
    """An NVIDIA GPU is visible here (nvidia-smi -L lists one)."""
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


# Python models whose onnxruntime sessions run on a GPU instance's device (adgen.serving.runtime.providers)
ORT_PYTHON_MODELS = (PUBLIC_MODEL, PUBLIC_MODEL_256, TEXT_ENCODER_MODEL, GENERATOR_MODEL)


def place_on_gpu(folder: Path) -> list[str]:
    """KIND_GPU instances for every model that runs onnxruntime/TensorRT; returns their names.

    Native onnxruntime/TensorRT models and the python models that hold onnxruntime sessions
    move to the GPU; tokenizer, latents and postprocess are CPU work and stay KIND_CPU."""
    moved = []
    for path in sorted(folder.glob("*/config.pbtxt")):
        text = path.read_text()
        header = text.splitlines()[0] if text.startswith("#") else ""
        config = parse_config(text)
        native = config.platform in ("onnxruntime_onnx", "tensorrt_plan")
        if not (native or (config.backend == "python" and config.name in ORT_PYTHON_MODELS)):
            continue
        if not config.instance_group:
            config.instance_group.add().count = 1
        for group in config.instance_group:
            group.kind = model_config_pb2.ModelInstanceGroup.KIND_GPU
        write_config(config, path, header.lstrip("# "))
        moved.append(config.name)
    return moved


def build_repository(out: str | Path, variant: str = "python-ort", model=None,
                     force: bool = False, extra_models: tuple[str, ...] = (),
                     text_encoder: str | Path | None = None, progress: bool = True,
                     gpu: bool | None = None,
                     upsampler: str | Path | bool | None = None,
                     precision: str = "auto", served: str | ServedConfig = "auto") -> Path:
    """Builds a Triton model repository at `out`; returns it. See the module docstring.

    precision: auto (int8 where export/precision.py's rule allows it on this host, else
    fp32), fp32, or int8 (opt-in); the choice is logged and written to
    adgen_repository.json.

    upsampler: an upsampler checkpoint or export folder for `adgen_256`; None: the release
    upsampler when it exists (else no adgen_256, one log line); False: no adgen_256.

    gpu: KIND_GPU instances for the models that can use one (place_on_gpu); None: when this
    machine has an NVIDIA GPU (build the repository where it will be served, like engines).

    served: the fused models' instances, threads and dynamic batching (export/served_config.py):
    auto (this host's cached `--tune` for this generator, else the rule for its cores), rule,
    tune (measure now, seconds; CPU only), or a ServedConfig; written to
    adgen_repository.json with where it came from."""
    if variant not in VARIANTS:
        raise RepoError(f"unknown variant {variant!r}; choose one of {', '.join(VARIANTS)}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RepoError(f"{out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise RepoError(f"{out} exists and is not empty (use --force to replace it)")
    gen, choice = served_generator(model, precision, progress)
    # an ONNX with the wrong I/O: one line, no repository
    check_onnx_io(gen.folder / "generator.onnx", generator_spec(gen.z_dim))
    up = None
    if variant in UPSAMPLED_VARIANTS:
        up = resolve_upsampler(upsampler, progress=progress, precision=precision)
    elif upsampler:
        log.warning("adgen_256 is built by the %s variants only; not built for %s",
                    " and ".join(UPSAMPLED_VARIANTS), variant)
    te_dir = resolve_text_encoder(text_encoder)
    on_gpu_host = gpu_present() if gpu is None else gpu
    if served == "tune" and (on_gpu_host or variant != "python-ort"):
        raise RepoError("--tune calibrates the fused python model on CPU instances: use it "
                        "with --variant python-ort --cpu")
    try:
        if on_gpu_host and served == "auto":  # measured for CPU instances only
            served_cfg = from_proto(load_config(PUBLIC_MODEL))
            served_note = "the committed config (GPU instances are not tuned)"
        else:
            served_cfg, served_note = resolve_served(served, gen.sha256, te_dir, gen.folder)
    except ServedConfigError as exc:
        raise RepoError(str(exc)) from None
    log.info("served config: %s (%s)", served_cfg.label, served_note)
    header = f"built by `adgen repo build --variant {variant}` from triton_models/"
    with atomic_dir(out) as tmp:
        VARIANTS[variant](tmp, gen, te_dir, header, tuple(extra_models))
        if up is not None:
            _upsampled_model(tmp, gen, te_dir, up, header)
        served_models = apply_served(tmp, served_cfg, gen.z_dim)
        on_gpu = place_on_gpu(tmp) if on_gpu_host else []
        info = {"variant": variant, "generator": {"name": gen.name, "sha256": gen.sha256,
                                                  "z_dim": gen.z_dim},
                "precision": {"served": choice.precision, "reason": choice.reason},
                "upsampler": {"name": up.name, "sha256": up.sha256,
                              "precision": up.precision, "reason": up.reason,
                              "checkpoint_sha256": (read_upsampler_info(up.folder).get(
                                  "checkpoint") or {}).get("sha256")} if up else None,
                "gpu_instances": on_gpu,
                "served": {**served_cfg.to_json(), "models": served_models,
                           "from": served_note},
                "models": sorted(p.name for p in tmp.iterdir() if p.is_dir())}
        # Not a model folder (Triton ignores plain files at the top level).
        atomic_write_json(tmp / "adgen_repository.json", info)
    return out


def check_against_contract(config, z_dim: int | None = None) -> list[str]:
    """Differences between a ModelConfig's I/O and adgen.contract (empty = matches)."""
    specs = all_specs(z_dim) if z_dim else all_specs()
    name = PUBLIC_MODEL if config.name in (PUBLIC_MODEL, ENSEMBLE_SOURCE) else config.name
    spec = specs.get(name)
    if spec is None:
        return [f"{config.name}: not in the contract"]
    problems = []
    if config.max_batch_size != spec.max_batch_size:
        problems.append(f"{config.name}: max_batch_size {config.max_batch_size} "
                        f"!= {spec.max_batch_size}")
    for kind, have, want in (("input", config.input, spec.inputs),
                             ("output", config.output, spec.outputs)):
        got = {t.name: (model_config_pb2.DataType.Name(t.data_type), tuple(t.dims)) for t in have}
        exp = {t.name: (t.triton_dtype, t.dims) for t in want}
        if z_dim is None:  # committed configs: Z is rewritten at build time
            got = {k: v for k, v in got.items() if k != "Z"}
            exp = {k: v for k, v in exp.items() if k != "Z"}
        if got != exp:
            problems.append(f"{config.name} {kind}s {got} != contract {exp}")
    return problems
