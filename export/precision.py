"""Which generator precision a model repository serves on this host, and the rule that lets a
reduced-precision variant be the default.

A variant (today INT8: onnxruntime static quantization, export/quantize.py) is served by
default only when all of these hold, else fp32 is:
  1. it keeps the picture: measured on the eval set (benchmarks/export_variants.py --eval,
     recorded in the variant's manifest.json under measurements.decision), R-precision and
     identity top-1 within 0.01 of the fp32 export and the mean absolute pixel difference from
     the fp32 export at most 2 uint8 levels (KEEP_RULE);
  2. it was exported from the same weights as the model being served (checkpoint sha256);
  3. this CPU has int8 dot-product units (AVX512-VNNI, AVX-VNNI or AMX-INT8): the variant was
     measured faster than fp32 at the served batch only on such CPUs, and onnxruntime's u8s8
     kernels fall back to slower paths without them.
`adgen repo build --precision int8` serves it anyway (opt-in: its measured drift is in its
manifest; on a CPU without those units the reason also says whether the export's 8-bit
weights saturate there, see quantize.weight_range); `--precision fp32` never does. The
choice and its reason are written to the repository's adgen_repository.json and logged in
one line.

The 4x upsampler (`adgen_256`) follows the same rule with its own picture checks
(UPSAMPLER_KEEP_RULE, measured on the base generator's images by
adgen.training.upsampler_quality and recorded by export/upsampler_onnx.export_upsampler_int8):
its 256 px output within 2 uint8 levels of fp32's on average, identity top-1 of the
box-downsampled output within 0.01 of fp32's, and the PSNR gain over bicubic against the
true render within 0.1 dB of fp32's (R-precision needs the matcher and is not measured for
it); faster than fp32 at the served batch; an int8 unit on this CPU
(choose_upsampler_precision).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from adgen.errors import ExportError
from adgen.serving.runtime.providers import cpu_flags

PRECISIONS = ("auto", "fp32", "int8")
# What "keeps the picture" means (the served-variant rule): largest allowed drop of R-precision and
# identity top-1 versus fp32, largest mean |variant - fp32| in uint8 levels.
KEEP_RULE = {"r_precision": 0.01, "identity_top1": 0.01, "mean_abs_levels": 2.0}
INT8_UNITS = ("amx_int8", "avx512_vnni", "avx_vnni")
# A release model folder carries each shipped variant as an ONNX export folder of this name.
VARIANT_FOLDER = {"int8": "int8"}
UPSAMPLER_KEEP_RULE = {"identity_top1": 0.01, "mean_abs_levels": 2.0, "psnr_gain_drop_db": 0.1}


def keeps_picture(fp32: dict, variant: dict) -> dict:
    """KEEP_RULE applied to measured figures: fp32 / variant are {"r_precision",
    "identity_top1"} and variant also has "mean_abs_levels" (vs the fp32 export).
    Returns {"keep": bool, "checks": {name: {...}}, "reason": one line}."""
    checks = {}
    for key in ("r_precision", "identity_top1"):
        drop = float(fp32[key]) - float(variant[key])
        checks[key] = {"fp32": fp32[key], "variant": variant[key], "drop": round(drop, 4),
                       "ok": drop <= KEEP_RULE[key] + 1e-9}
    levels = float(variant["mean_abs_levels"])
    checks["mean_abs_levels"] = {"variant": round(levels, 3),
                                 "ok": levels <= KEEP_RULE["mean_abs_levels"]}
    failed = [k for k, c in checks.items() if not c["ok"]]
    reason = ("keeps the picture: R-precision and identity within 0.01 of fp32, "
              f"mean |Δ| {levels:.2f} uint8 levels (≤ 2)") if not failed else \
        "changes the picture: " + ", ".join(
            f"{k} drop {checks[k]['drop']:.3f} > {KEEP_RULE[k]}" if k != "mean_abs_levels"
            else f"mean |Δ| {levels:.2f} > 2 uint8 levels" for k in failed)
    return {"keep": not failed, "checks": checks, "reason": reason}


def keep_decision(fp32: dict | None, variant: dict | None, fp32_ms, variant_ms) -> dict:
    """What benchmarks/export_variants.py records as a variant's measurements.decision: keep
    (serve by default where the CPU suits it) when it is faster than fp32 at every measured
    served batch AND keeps_picture(fp32, variant); keep None while quality is unmeasured.
    fp32_ms / variant_ms: {batch: p50 latency}."""
    faster_at = {str(b): bool(variant_ms[b] < fp32_ms[b]) for b in fp32_ms}
    base = {"rule": KEEP_RULE, "faster": all(faster_at.values()),
            "faster_at_batches": faster_at}
    if not fp32 or not variant:
        return {"keep": None, **base, "reason": "quality not measured yet (--eval)"}
    picture = keeps_picture(fp32, variant)
    keep = base["faster"] and picture["keep"]
    reason = picture["reason"] if base["faster"] else \
        "not faster than fp32 at every served batch; " + picture["reason"]
    return {"keep": keep, **base, "checks": picture["checks"], "reason": reason}


def upsampler_keep_decision(picture: dict | None, fp32_ms: dict, int8_ms: dict) -> dict:
    """measurements.decision of an upsampler int8 export: UPSAMPLER_KEEP_RULE on `picture`
    ({"mean_abs_levels", "identity_top1": {"fp32", "int8"}, "psnr_gain_db": {"fp32",
    "int8"}}) and faster than fp32 at every measured batch ({batch: ms per image})."""
    faster_at = {str(b): bool(int8_ms[b] < fp32_ms[b]) for b in fp32_ms}
    base = {"rule": UPSAMPLER_KEEP_RULE, "faster": all(faster_at.values()),
            "faster_at_batches": faster_at}
    if not picture:
        return {"keep": None, **base, "reason": "quality not measured yet"}
    rule = UPSAMPLER_KEEP_RULE
    levels = float(picture["mean_abs_levels"])
    id_drop = float(picture["identity_top1"]["fp32"]) - float(picture["identity_top1"]["int8"])
    gain_drop = float(picture["psnr_gain_db"]["fp32"]) - float(picture["psnr_gain_db"]["int8"])
    checks = {"mean_abs_levels": {"variant": round(levels, 3),
                                  "ok": levels <= rule["mean_abs_levels"]},
              "identity_top1": {"drop": round(id_drop, 4),
                                "ok": id_drop <= rule["identity_top1"] + 1e-9},
              "psnr_gain_drop_db": {"drop": round(gain_drop, 3),
                                    "ok": gain_drop <= rule["psnr_gain_drop_db"] + 1e-9}}
    failed = [k for k, c in checks.items() if not c["ok"]]
    reason = (f"keeps the picture: mean |Δ| {levels:.2f} uint8 levels (≤ 2), identity drop "
              f"{id_drop:.3f} (≤ 0.01), PSNR gain drop {gain_drop:.2f} dB (≤ 0.1)") \
        if not failed else "changes the picture: " + ", ".join(
            f"{k} {checks[k].get('drop', checks[k].get('variant'))} > {rule[k]}"
            for k in failed)
    if not base["faster"]:
        reason = "not faster than fp32 at every measured batch; " + reason
    return {"keep": base["faster"] and not failed, **base, "checks": checks, "reason": reason}


def int8_units(flags: frozenset[str] | None = None) -> list[str]:
    """This CPU's int8 dot-product units, fastest first ([] where it has none)."""
    flags = cpu_flags() if flags is None else flags
    return [f for f in INT8_UNITS if f in flags]


@dataclass(frozen=True)
class PrecisionChoice:
    precision: str        # "fp32" or "int8"
    folder: Path | None   # the variant's export folder (None: the fp32 export)
    reason: str           # one line, for the log and adgen_repository.json


def _manifest(folder: Path) -> dict | None:
    """A variant folder's manifest.json, None when missing or unreadable."""
    try:
        return json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _decision(manifest: dict) -> dict:
    """measurements.decision of a variant's manifest ({} when not measured)."""
    return (manifest.get("measurements") or {}).get("decision") or {}


def choose_precision(requested: str, model_dir: Path | None, checkpoint_sha: str | None,
                     flags: frozenset[str] | None = None) -> PrecisionChoice:
    """The precision to serve for the model in `model_dir` (a checkpoint folder that may
    hold variant folders) whose weights have sha256 `checkpoint_sha`. See the module
    docstring for the rule; `requested` is auto, fp32 or int8."""
    return _choose(requested, model_dir, checkpoint_sha, flags, "generator.onnx", KEEP_RULE,
                   "make one with `adgen export onnx {model} -o {folder} --precision int8`")


def choose_upsampler_precision(requested: str, model_dir: Path | None,
                               checkpoint_sha: str | None,
                               flags: frozenset[str] | None = None) -> PrecisionChoice:
    """choose_precision for the 4x upsampler checkpoint in `model_dir` (its int8/ export
    holds upsampler.onnx) under UPSAMPLER_KEEP_RULE."""
    return _choose(requested, model_dir, checkpoint_sha, flags, "upsampler.onnx",
                   UPSAMPLER_KEEP_RULE, "make one with `python -m adgen.export.upsampler_onnx "
                   "{model} -o {folder} --int8`")


def _choose(requested: str, model_dir: Path | None, checkpoint_sha: str | None,
            flags: frozenset[str] | None, onnx_name: str, rule: dict,
            how: str) -> PrecisionChoice:
    if requested not in PRECISIONS:
        raise ExportError(f"unknown precision {requested!r}; choose {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return PrecisionChoice("fp32", None, "fp32 requested")
    folder = model_dir / VARIANT_FOLDER["int8"] if model_dir is not None else None
    have = folder is not None and (folder / onnx_name).is_file()
    manifest = _manifest(folder) if have else None
    recorded = ((manifest or {}).get("checkpoint") or {}).get("sha256")
    same = have and checkpoint_sha is not None and recorded == checkpoint_sha
    if requested == "int8":
        if not have:
            raise ExportError(f"no int8 export in {model_dir}: "
                              + how.format(model=model_dir, folder=folder))
        if recorded is None:
            raise ExportError(f"{folder / 'manifest.json'} is missing or unreadable; "
                              "export the int8 variant again")
        if not same:
            raise ExportError(f"{folder} was exported from other weights than "
                              f"{model_dir}; export it again")
        decision = _decision(manifest)
        drift = decision.get("reason") or "its drift from fp32 was not measured"
        if not int8_units(flags):
            seven_bit = (manifest.get("quantization") or {}).get("reduce_range") is True
            drift += "; this CPU has no int8 dot-product units: " + (
                "the export's 7-bit weights compute as measured, only slower" if seven_bit
                else "its u8s8 kernels saturate on the export's 8-bit weights, expect more "
                     "drift than measured")
        return PrecisionChoice("int8", folder, f"int8 requested ({drift})")
    if not have:
        return PrecisionChoice("fp32", None, "fp32: the model ships no int8 export")
    if recorded is None:
        return PrecisionChoice("fp32", None, "fp32: the int8 export's manifest.json is "
                               "missing or unreadable")
    if not same:
        return PrecisionChoice("fp32", None, "fp32: the int8 export is of other weights")
    decision = _decision(manifest)
    if decision.get("keep") is not True or decision.get("rule") != rule:
        why = decision.get("reason") or "not measured against the keep-the-picture rule"
        return PrecisionChoice("fp32", None, f"fp32: int8 is opt-in here ({why})")
    units = int8_units(flags)
    if not units:
        return PrecisionChoice("fp32", None, "fp32: this CPU has no int8 dot-product units "
                               "(AVX512-VNNI, AVX-VNNI, AMX), where int8 was measured faster")
    return PrecisionChoice("int8", folder, f"int8 ({', '.join(units)} on this CPU; "
                           f"{decision['reason']})")
