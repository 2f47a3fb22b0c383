"""Upsampler checkpoint -> ONNX through the tensor contract, with parity against PyTorch.

    export_upsampler("models/adgen-up256", "artifacts/upsampler")  ->  artifacts/upsampler/
        upsampler.onnx   RAW_IMAGE fp32[batch,3,64,64] -> RAW_IMAGE_256 fp32[batch,3,256,256]
        manifest.json    spec, scale, checkpoint sha256, opset, versions, parity, FLOPs

Same rules as the generator's export (adgen.export.onnx_export): names and dims from
adgen.contract.upsampler_spec(), dynamic "batch" axis, checker + strict shape inference,
parity <= 1e-4 at batches 1/16/64, assembled in a temp folder and renamed into place.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.export.onnx_export import (BATCH_AXIS, FP32_TOLERANCE, MIN_OPSET, ExportError,
                                      _pin_io_shapes, check_out_dir, diff_stats, ort_session,
                                      validate_onnx, versions)
from adgen.contract import upsampler_spec
from adgen.paths import sha256_file
from adgen.training.upsampler import load_upsampler

UPSAMPLER_ONNX = "upsampler.onnx"
MANIFEST = "manifest.json"
MANIFEST_KIND = "adgen-upsampler-onnx"
MANIFEST_VERSION = 1
PARITY_BATCHES = (1, 16, 64)


def parity_images(batch: int, seed: int = 0) -> np.ndarray:
    """RAW_IMAGE-like inputs: flat colour blocks with hard edges plus noise, in [-1, 1]."""
    rng = np.random.default_rng(seed + batch)
    x = np.repeat(np.repeat(rng.uniform(-1, 1, (batch, 3, 8, 8)), 8, axis=2), 8, axis=3)
    x += rng.normal(0, 0.05, x.shape)
    return np.clip(x, -1, 1).astype(np.float32)


def export_upsampler(ckpt_path: str | Path, out_dir: str | Path, force: bool = False,
                     opset: int = MIN_OPSET, parity_batches=PARITY_BATCHES) -> Path:
    """Exports, validates and checks parity; returns out_dir. ExportError on any failure."""
    out_dir = check_out_dir(out_dir, force)
    loaded = load_upsampler(ckpt_path)  # CheckpointError (one line) on a bad checkpoint
    spec = upsampler_spec()
    with atomic_dir(out_dir) as tmp:
        path = tmp / UPSAMPLER_ONNX
        names_in, names_out = [t.name for t in spec.inputs], [t.name for t in spec.outputs]
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore")  # TorchScript exporter deprecation notice
            torch.onnx.export(loaded.module, (torch.from_numpy(parity_images(2)),), str(path),
                              input_names=names_in, output_names=names_out,
                              dynamic_axes={n: {0: BATCH_AXIS} for n in names_in + names_out},
                              opset_version=opset, dynamo=False, do_constant_folding=True)
        _pin_io_shapes(path, spec)
        validate_onnx(path, spec)
        session = ort_session(path)
        parity = {}
        for b in parity_batches:
            x = parity_images(b)
            with torch.inference_mode():
                ref = loaded.module(torch.from_numpy(x)).numpy()
            out = session.run([names_out[0]], {names_in[0]: x})[0]
            stats = diff_stats(out, ref)
            if not stats["max_abs"] <= FP32_TOLERANCE:  # NaN fails too
                raise ExportError(f"upsampler ONNX differs from PyTorch by {stats['max_abs']:.2e} "
                                  f"at batch {b} (bound {FP32_TOLERANCE:g})")
            parity[str(b)] = stats
        atomic_write_json(tmp / MANIFEST, {
            "kind": MANIFEST_KIND, "format_version": MANIFEST_VERSION,
            "spec": {"inputs": names_in, "outputs": names_out},
            "scale": loaded.config["scale"], "arch": loaded.config["arch"],
            "model": loaded.config["model"], "opset": opset,
            "flops_per_image": loaded.module.flops_per_image(),
            "checkpoint": {"name": loaded.path.name, "sha256": loaded.sha256},
            "files": {UPSAMPLER_ONNX: {"sha256": sha256_file(path)}},
            "parity": {"tolerance": FP32_TOLERANCE, "batches": parity},
            "versions": versions()})
    return out_dir
