"""Generator checkpoint -> ONNX through the tensor contract, with parity against PyTorch.

    export_onnx("models/adgen-emoji64", "artifacts/generator")  ->  artifacts/generator/
        generator.onnx       EMBEDDING fp32[batch,384], Z fp32[batch,z_dim] -> RAW_IMAGE fp32[batch,3,64,64]
        generator.opt.onnx   the same graph after onnxruntime's offline (extended) optimisation
        manifest.json        spec, checkpoint sha256, opset, versions, precision, parity figures

Names, dtypes and dims come from adgen.contract.generator_spec(z_dim); the batch axis is
dynamic and named "batch". The folder is assembled in a temporary sibling and renamed
(adgen.atomic.atomic_dir), so a failed or killed export leaves nothing half-written. What
reads these files without torch (I/O checks, parity inputs, sessions, the manifest) is in
adgen.export.onnx_files; this module imports torch, so the repository builder and the CLI
import it only when they export.
"""
from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime
import torch
from tqdm import tqdm

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.contract import DEFAULT_Z_DIM, ModelSpec, generator_spec
from adgen.errors import ExportError
from adgen.export import quantize
from adgen.export.onnx_files import (BATCH_AXIS, GENERATOR_ONNX, MANIFEST, MANIFEST_KIND,
                                     OPTIMIZED_ONNX, check_onnx_io, check_out_dir, diff_stats,
                                     ort_session, parity_inputs, spec_to_json)
from adgen.paths import sha256_file
from adgen.training.checkpoint import load_generator

MANIFEST_VERSION = 1
PARITY_BATCHES = (1, 64, 256)
# fp32 ONNX vs PyTorch eager: same arithmetic up to kernel summation order.
FP32_TOLERANCE = 1e-4
# Reduced precision is judged by `adgen eval` (R-precision), not by |Δ|; this bound only
# catches a broken variant (0.1 in [-1, 1] is ~13 uint8 levels on average). INT8 measured
# 0.026 on held-out captions for a release-size checkpoint at step 1000, 0.055 at step 4902.
REDUCED_SANITY_MEAN_ABS = 0.1
MIN_OPSET = 17
PRECISIONS = ("fp32", "int8")


@dataclass(frozen=True)
class OnnxExportConfig:
    """What `adgen export onnx` resolved from its options."""
    checkpoint: str
    out: str
    precision: str = "fp32"
    force: bool = False
    opset: int = MIN_OPSET
    parity_batches: tuple[int, ...] = PARITY_BATCHES
    calibration_size: int = 512  # int8 only: caption embeddings used to calibrate
    calibration_data: str | None = None  # int8 only: dataset folder (default data/twemoji64)


def versions() -> dict[str, str]:
    return {"torch": torch.__version__, "onnx": onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


# ----------------------------------------------------------------------------- parity

def torch_reference(module, feeds: dict[str, np.ndarray]) -> np.ndarray:
    with torch.inference_mode():
        out = module(torch.from_numpy(feeds["EMBEDDING"]), torch.from_numpy(feeds["Z"]))
    return out.float().numpy()


def measure_parity(module, onnx_paths: dict[str, Path], z_dim: int,
                   batches=PARITY_BATCHES) -> dict:
    """max/mean |Δ| of each ONNX file against PyTorch eager at each batch size."""
    sessions = {name: ort_session(p) for name, p in onnx_paths.items()}
    result = {name: {} for name in onnx_paths}
    for b in batches:
        feeds = parity_inputs(b, z_dim)
        ref = torch_reference(module, feeds)
        for name, sess in sessions.items():
            out = sess.run(["RAW_IMAGE"], feeds)[0]
            if out.shape != ref.shape:
                raise ExportError(f"{name} returned shape {out.shape}, PyTorch {ref.shape}")
            result[name][str(b)] = diff_stats(out, ref)
    return result


# ----------------------------------------------------------------------------- export

def load_checkpoint(ckpt_path: str | Path):
    """adgen.training.checkpoint.load_generator in eval mode (CheckpointError, one line)."""
    loaded = load_generator(ckpt_path)  # CheckpointError (an AdgenError) on bad input
    loaded.module.eval()
    return loaded


def _torch_export(module, z_dim: int, path: Path, opset: int) -> None:
    spec = generator_spec(z_dim)
    names_in = [t.name for t in spec.inputs]  # EMBEDDING, Z (the module's argument order)
    names_out = [t.name for t in spec.outputs]
    dummy = tuple(torch.from_numpy(v) for v in parity_inputs(2, z_dim).values())
    axes = {n: {0: BATCH_AXIS} for n in names_in + names_out}
    # dynamo=False: the TorchScript exporter is the one verified for these graphs (docs/design.md §10);
    # its deprecation notice is noise for a CLI user.
    with torch.no_grad(), warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        torch.onnx.export(module, dummy, str(path), input_names=names_in,
                          output_names=names_out, dynamic_axes=axes, opset_version=opset,
                          dynamo=False, do_constant_folding=True)
    _pin_io_shapes(path, spec)


def _pin_io_shapes(path: Path, spec: ModelSpec) -> None:
    """Writes the contract's shapes onto the graph I/O: [batch, *dims].

    The TorchScript exporter leaves axes downstream of dynamic Upsample/Reshape symbolic
    (e.g. 'TanhRAW_IMAGE_dim_2'); the contract's dims are static, and strict shape inference
    in validate_onnx() then proves the graph agrees with them.
    """
    model = onnx.load(str(path))
    tensors = {t.name: t for t in spec.inputs + spec.outputs}
    for value in list(model.graph.input) + list(model.graph.output):
        if value.name not in tensors:
            continue
        dims = value.type.tensor_type.shape.dim
        want = tensors[value.name].dims
        if len(dims) != len(want) + 1:
            raise ExportError(f"the generator's {value.name} has rank {len(dims)}, "
                              f"expected {len(want) + 1}")
        dims[0].Clear()
        dims[0].dim_param = BATCH_AXIS
        for d, n in zip(list(dims)[1:], want):
            d.Clear()
            d.dim_value = n
    onnx.save(model, str(path))


def validate_onnx(path: Path, spec: ModelSpec) -> None:
    """onnx.checker (full) + strict shape inference + the contract's I/O."""
    try:
        onnx.checker.check_model(str(path), full_check=True)
        onnx.shape_inference.infer_shapes_path(str(path), str(path) + ".inferred",
                                               strict_mode=True, check_type=True)
    except Exception as exc:
        raise ExportError(f"{path.name} fails the ONNX checker: {str(exc).splitlines()[0]}") \
            from None
    finally:
        Path(str(path) + ".inferred").unlink(missing_ok=True)
    check_onnx_io(path, spec)


def optimize_offline(src: Path, dst: Path) -> str:
    """onnxruntime's offline graph optimisation (constant folding, Conv+BN/activation fusion).

    'extended' rather than 'all': level-3 layout rewrites (NCHWc) are tied to the CPU that
    ran them, while extended fusions stay valid for any onnxruntime CPU deployment.
    """
    opts = onnxruntime.SessionOptions()
    opts.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    opts.optimized_model_filepath = str(dst)
    opts.log_severity_level = 3
    onnxruntime.InferenceSession(str(src), opts, providers=["CPUExecutionProvider"])
    return "extended"


def export_onnx(ckpt_path: str | Path, out_dir: str | Path, precision: str = "fp32",
                force: bool = False, opset: int = MIN_OPSET,
                parity_batches=PARITY_BATCHES, calibration_size: int = 512,
                calibration_data: str | Path | None = None, progress: bool = True) -> Path:
    """Exports a generator checkpoint; returns out_dir (see the module docstring).

    Raises ExportError / CheckpointError (AdgenError, one line) for bad input or a parity
    failure; in that case out_dir is untouched.
    """
    if precision not in PRECISIONS:
        raise ExportError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if opset < MIN_OPSET:
        raise ExportError(f"opset {opset} is too old; adgen exports opset >= {MIN_OPSET}")
    out_dir = check_out_dir(out_dir, force)
    loaded = load_checkpoint(ckpt_path)
    z_dim = int(getattr(loaded, "z_dim", None) or DEFAULT_Z_DIM)
    spec = generator_spec(z_dim)
    with tqdm(total=4, desc="export onnx", unit="step", disable=not progress) as steps, \
            atomic_dir(out_dir) as tmp:
        fp32_path = tmp / GENERATOR_ONNX
        steps.set_postfix_str("torch.onnx.export")
        _torch_export(loaded.module, z_dim, fp32_path, opset)
        validate_onnx(fp32_path, spec)
        steps.update()
        extra: dict = {}
        if precision != "fp32":
            steps.set_postfix_str(f"{precision} variant")
            fp32_copy = tmp / ".generator.fp32.onnx"
            os.replace(fp32_path, fp32_copy)
            extra = quantize.make_variant(precision, fp32_copy, fp32_path, z_dim=z_dim,
                                 calibration_size=calibration_size,
                                 dataset_dir=calibration_data)
            validate_onnx(fp32_path, spec)
        steps.update()
        steps.set_postfix_str("onnxruntime optimisation")
        level = optimize_offline(fp32_path, tmp / OPTIMIZED_ONNX)
        check_onnx_io(tmp / OPTIMIZED_ONNX, spec)
        steps.update()
        steps.set_postfix_str("parity")
        paths = {GENERATOR_ONNX: fp32_path, OPTIMIZED_ONNX: tmp / OPTIMIZED_ONNX}
        if precision != "fp32":
            paths["fp32_reference"] = tmp / ".generator.fp32.onnx"
        parity = measure_parity(loaded.module, paths, z_dim, parity_batches)
        steps.update()
        # np.max, not max(): a NaN anywhere must propagate (max() may skip it by order)
        worst = float(np.max([v["max_abs"] for name in (GENERATOR_ONNX, OPTIMIZED_ONNX)
                              for v in parity[name].values()]))
        if precision == "fp32" and not worst <= FP32_TOLERANCE:  # NaN fails too
            raise ExportError(f"parity failed: max |ONNX - PyTorch| = {worst:.3g} "
                              f"> {FP32_TOLERANCE:g}")
        if precision != "fp32":
            # Random unit vectors are far outside the caption distribution the variant was
            # calibrated on; judge it on held-out real captions too.
            held = extra.pop("heldout_feeds")
            ref = torch_reference(loaded.module, held)
            out = ort_session(fp32_path).run(["RAW_IMAGE"], held)[0]
            extra["heldout_captions_vs_pytorch"] = {
                **diff_stats(out, ref), "samples": int(len(ref)),
                "within_one_uint8_level": float((np.abs(out - ref) <= 2 / 255).mean())}
            mean = extra["heldout_captions_vs_pytorch"]["mean_abs"]
            if not mean <= REDUCED_SANITY_MEAN_ABS:
                raise ExportError(f"the {precision} variant is broken: mean |Δ| vs PyTorch on "
                                  f"captions = {mean:.3g} > {REDUCED_SANITY_MEAN_ABS:g}")
        reference = parity.pop("fp32_reference", None)
        (tmp / ".generator.fp32.onnx").unlink(missing_ok=True)
        manifest = build_manifest(loaded, spec, z_dim, opset, precision, level, parity,
                                  reference, worst, tmp, extra)
        atomic_write_json(tmp / MANIFEST, manifest)
    return out_dir


def build_manifest(loaded, spec, z_dim, opset, precision, level, parity, reference, worst,
                   folder: Path, extra: dict) -> dict:
    config = dict(getattr(loaded, "config", {}) or {})
    files = {}
    for name in (GENERATOR_ONNX, OPTIMIZED_ONNX):
        files[name] = {"sha256": sha256_file(folder / name),
                       "size_bytes": (folder / name).stat().st_size}
    return {
        "kind": MANIFEST_KIND,
        "format_version": MANIFEST_VERSION,
        "model": GENERATOR_ONNX,
        "optimized_model": OPTIMIZED_ONNX,
        "optimization_level": level,
        "spec": spec_to_json(spec),
        "batch_axis": BATCH_AXIS,
        "z_dim": z_dim,
        "arch": config.get("arch"),
        # basename only: a manifest may be committed, and paths are machine-specific
        "checkpoint": {"name": Path(str(loaded.path)).name, "sha256": loaded.sha256},
        "opset": opset,
        "precision": precision,
        "versions": versions(),
        "files": files,
        "parity": {
            "reference": "PyTorch eager fp32 (EMA generator)",
            "inputs": "unit-norm random EMBEDDING, seed-derived Z (adgen.latents)",
            "tolerance": FP32_TOLERANCE if precision == "fp32" else None,
            "max_abs": worst,
            "batches": parity,
            **({"fp32_onnx_vs_pytorch": reference} if reference else {}),
        },
        **extra,
    }

