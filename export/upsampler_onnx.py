"""Upsampler checkpoint -> ONNX through the tensor contract, with parity against PyTorch.

    export_upsampler("models/adgen-up256", "artifacts/upsampler")  ->  artifacts/upsampler/
        upsampler.onnx   RAW_IMAGE fp32[batch,3,64,64] -> RAW_IMAGE_256 fp32[batch,3,256,256]
        manifest.json    spec, scale, checkpoint sha256, opset, versions, parity, FLOPs

Same rules as the generator's export (adgen.export.onnx_export): names and dims from
adgen.contract.upsampler_spec(), dynamic "batch" axis, checker + strict shape inference,
parity <= 1e-4 at batches 1/16/64, assembled in a temp folder and renamed into place.

    export_upsampler_int8("models/adgen-up256", "models/adgen-up256/int8", calib, pairs, data64)
        the same contract (fp32 in and out) in int8 QDQ (adgen.export.quantize.quantize_int8:
        per-channel int8 weights, uint8 activations calibrated on the base generator's 64 px
        images), its parity against fp32, and measurements: the picture on generated inputs
        (adgen.training.upsampler_quality) and ms per image beside fp32, interleaved, with
        the keep decision of adgen.export.precision.upsampler_keep_decision. A checkpoint
        folder's int8/ is what `choose_upsampler_precision` serves where the rule allows.
    python -m adgen.export.upsampler_onnx models/adgen-up256 -o models/adgen-up256/int8 --int8

No bf16 variant: onnxruntime's CPU provider has no bf16 convolution kernel (AVX512-BF16 is
used by PyTorch only), so a bf16 graph would run its convolutions through casts to fp32.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from adgen.atomic import atomic_dir, atomic_write_json
from adgen.export.onnx_export import (BATCH_AXIS, FP32_TOLERANCE, MIN_OPSET, ExportError,
                                      _pin_io_shapes, check_out_dir, diff_stats, ort_session,
                                      validate_onnx, versions)
from adgen.contract import upsampler_spec
from adgen.errors import AdgenError
from adgen.export.onnx_files import ort_session as cpu_session
from adgen.export.precision import upsampler_keep_decision
from adgen.export.quantize import quantize_int8
from adgen.paths import sha256_file
from adgen.serving.runtime.backend import to_uint8
from adgen.training.upsampler import load_upsampler
from adgen.training.upsampler_quality import (GeneratedPairs, calibration_images,
                                              generated_pairs, identity_top1, psnr_gain)

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


# ----------------------------------------------------------------------------- int8

TIMING_BATCH = 32  # `adgen generate`'s requests at 256 px (benchmarks.job256)
INT8_CALIBRATION = ("the base generator's 64 px images of captions of the upsampler's "
                    "training concepts (adgen.training.upsampler_quality.calibration_images)")


def to_raw(images_u8: np.ndarray) -> np.ndarray:
    """uint8 [N, 64, 64, 3] -> RAW_IMAGE fp32 [N, 3, 64, 64] in [-1, 1]."""
    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.ndim != 4 or images_u8.shape[1:] != (64, 64, 3):
        raise ExportError(f"expected uint8 images [N,64,64,3], got {images_u8.dtype} "
                          f"{list(images_u8.shape)}")
    return np.ascontiguousarray(images_u8.transpose(0, 3, 1, 2), dtype=np.float32) / 127.5 - 1


def upsample_u8(session, images_u8: np.ndarray, batch: int = TIMING_BATCH) -> np.ndarray:
    """uint8 [N, 64, 64, 3] -> uint8 [N, 256, 256, 3] through an upsampler session."""
    spec = upsampler_spec()
    name_in, name_out = spec.inputs[0].name, spec.outputs[0].name
    return np.concatenate([to_uint8(session.run([name_out], {name_in: to_raw(
        images_u8[i:i + batch])})[0]) for i in range(0, len(images_u8), batch)])


def ms_per_image(sessions: dict, batch: int = TIMING_BATCH, rounds: int = 5,
                 seconds: float = 0.6) -> dict[str, float]:
    """Median ms per image of each session at `batch`, interleaved rounds (load hits all)."""
    x = parity_images(batch)
    name_in = upsampler_spec().inputs[0].name
    times: dict[str, list[float]] = {k: [] for k in sessions}
    for s in sessions.values():
        s.run(None, {name_in: x})  # warm-up
    for _ in range(rounds):
        for key, s in sessions.items():
            n, t0 = 0, time.perf_counter()
            while n == 0 or time.perf_counter() - t0 < seconds:
                s.run(None, {name_in: x})
                n += 1
            times[key].append((time.perf_counter() - t0) * 1000 / (n * batch))
    return {k: round(statistics.median(v), 3) for k, v in times.items()}


def picture_checks(fp32, int8, pairs: GeneratedPairs, data64) -> dict:
    """The int8 export's picture beside fp32's on generated inputs (UPSAMPLER_KEEP_RULE)."""
    up32, up8 = upsample_u8(fp32, pairs.x64), upsample_u8(int8, pairs.x64)
    gains = {"fp32": psnr_gain(up32, pairs), "int8": psnr_gain(up8, pairs)}
    return {"mean_abs_levels": round(float(np.abs(up8.astype(np.float32) - up32).mean()), 4),
            "identity_top1": {"fp32": identity_top1(up32, pairs, data64),
                              "int8": identity_top1(up8, pairs, data64)},
            "psnr_gain_db": {k: g["gain_db"] for k, g in gains.items()},
            "psnr": gains, "base_model_sha256": pairs.base_sha256,
            "images": int(len(pairs.x64))}


def export_upsampler_int8(ckpt_path: str | Path, out_dir: str | Path,
                          calibration_u8: np.ndarray, pairs: GeneratedPairs | None = None,
                          data64: str | Path | None = None, force: bool = False,
                          reduce_range: bool | None = None, threads: int = 1,
                          timing_rounds: int = 5) -> Path:
    """The int8 QDQ export of an upsampler checkpoint (see the module docstring); picture
    measured when `pairs` (and `data64`, the 64 px dataset they came from) are given,
    speed always (`threads` onnxruntime threads, interleaved with fp32)."""
    calibration_u8 = np.asarray(calibration_u8)
    feeds = [{upsampler_spec().inputs[0].name: to_raw(calibration_u8[i:i + TIMING_BATCH])}
             for i in range(0, len(calibration_u8), TIMING_BATCH)]
    if not feeds:
        raise ExportError("int8 calibration needs at least one 64 px image")
    if pairs is not None and data64 is None:
        raise ExportError("the picture checks need data64, the dataset of the pairs")
    out_dir = check_out_dir(out_dir, force)
    with tempfile.TemporaryDirectory(prefix="adgen-up-fp32-") as scratch:
        fp32_dir = export_upsampler(ckpt_path, Path(scratch) / "fp32")
        manifest = json.loads((fp32_dir / MANIFEST).read_text(encoding="utf-8"))
        with atomic_dir(out_dir) as tmp:
            path = tmp / UPSAMPLER_ONNX
            quant = quantize_int8(fp32_dir / UPSAMPLER_ONNX, path, feeds, reduce_range,
                                  inputs=INT8_CALIBRATION)
            validate_onnx(path, upsampler_spec())
            fp32, int8 = (cpu_session(p, threads, spin=False)
                          for p in (fp32_dir / UPSAMPLER_ONNX, path))
            name_in, name_out = manifest["spec"]["inputs"][0], manifest["spec"]["outputs"][0]
            x = parity_images(16)
            parity = diff_stats(int8.run([name_out], {name_in: x})[0],
                                fp32.run([name_out], {name_in: x})[0])
            picture = picture_checks(fp32, int8, pairs, data64) if pairs is not None else None
            speed = ms_per_image({"fp32": fp32, "int8": int8}, rounds=timing_rounds,
                                 seconds=0.6 if timing_rounds > 1 else 0.0)
            decision = upsampler_keep_decision(picture, {TIMING_BATCH: speed["fp32"]},
                                               {TIMING_BATCH: speed["int8"]})
            manifest.update({
                "model_name": f"{manifest['checkpoint']['name']}-int8",  # read_upsampler_info
                "precision": "int8", "quantization": quant,
                "files": {UPSAMPLER_ONNX: {"sha256": sha256_file(path)}},
                "parity": {"reference": "this checkpoint's fp32 ONNX export",
                           "inputs": "parity_images(16)", "tolerance": None, **parity},
                "measurements": {"picture": picture, "decision": decision,
                                 "speed": {"batch": TIMING_BATCH, "threads": threads,
                                           "ms_per_image": speed}}})
            atomic_write_json(tmp / MANIFEST, manifest)
    return out_dir


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("checkpoint", help="upsampler checkpoint folder")
    ap.add_argument("-o", "--out", required=True, help="export folder")
    ap.add_argument("--int8", action="store_true", help="the int8 QDQ export (else fp32)")
    ap.add_argument("--data64", default="data/twemoji64", help="64 px dataset (int8)")
    ap.add_argument("--data256", default="data/twemoji256", help="256 px SVG renders (int8)")
    ap.add_argument("--base-model", default=None, help="base generator (default: release)")
    ap.add_argument("--calibration-size", type=int, default=512)
    ap.add_argument("--force", action="store_true")
    args = ap.parse_args(argv)
    try:
        if not args.int8:
            out = export_upsampler(args.checkpoint, args.out, force=args.force)
        else:
            calib = calibration_images(args.data64, args.calibration_size, args.base_model)
            pairs = generated_pairs(args.data64, args.data256, args.base_model)
            out = export_upsampler_int8(args.checkpoint, args.out, calib, pairs, args.data64,
                                        force=args.force)
    except (AdgenError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    m = json.loads((Path(out) / MANIFEST).read_text(encoding="utf-8"))
    decision = (m.get("measurements") or {}).get("decision")
    print(f"wrote {out}" + (f"; {decision['reason']}" if decision else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
