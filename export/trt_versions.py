"""Which TensorRT adgen builds with, which one its Triton image runs, and what an engine is tied to.

The one place these numbers live; pyproject.toml's `tensorrt` extra, deploy/k8s/triton.yaml
and deploy/README.md are checked against them by tests/export/test_trt_versions.py.

- SUPPORTED_TENSORRT: [10, 12). 10 is the floor for INT64 network inputs (the text encoder's
  token ids) and always-explicit batch. 11 removed weak typing (BuilderFlag.FP16): FP16 there
  comes from an FP16 ONNX built as a strongly typed network (export/fp16_onnx.py). A 12 has
  not been seen, so it is refused rather than guessed at.
- TRITON_IMAGE_TAG / TRITON_TENSORRT: the Triton container the manifests deploy and the
  TensorRT inside it. A serialized engine loads only in the TensorRT version that built it, so
  engines for that deployment must be built with TRITON_TENSORRT (`pip install
  'tensorrt==<TRITON_TENSORRT>.*'`); `adgen repo build --variant tensorrt` warns otherwise.
"""
from __future__ import annotations

import hashlib
import subprocess

SUPPORTED_TENSORRT = ((10, 0), (12, 0))  # [min, max): major.minor
TRITON_IMAGE_TAG = "24.10-py3"  # Triton 2.51, the release of the pinned tritonclient wheel
TRITON_TENSORRT = "10.5"  # TensorRT in that container (NVIDIA's frameworks support matrix)


def parse_version(text: str) -> tuple[int, int]:
    """'10.5.0.18' -> (10, 5); anything unparseable -> (0, 0) (then refused as too old)."""
    parts = []
    for piece in str(text).split(".")[:2]:
        digits = "".join(c for c in piece if c.isdigit()) if piece[:1].isdigit() else ""
        parts.append(int(digits) if digits else 0)
    return (parts + [0, 0])[0], (parts + [0, 0])[1]


def supported_range_text() -> str:
    (lo_major, lo_minor), (hi_major, hi_minor) = SUPPORTED_TENSORRT
    return f">= {lo_major}.{lo_minor}, < {hi_major}.{hi_minor}"


def unsupported_reason(version: str) -> str | None:
    """None when `version` is in SUPPORTED_TENSORRT, else why not (one line)."""
    v = parse_version(version)
    lo, hi = SUPPORTED_TENSORRT
    if v < lo:
        return f"TensorRT {version} is too old; adgen needs {supported_range_text()}"
    if v >= hi:
        return (f"TensorRT {version} is newer than adgen supports ({supported_range_text()}); "
                "install a supported one")
    return None


def fp16_mode(trt) -> str:
    """How FP16 is asked for: 'builder-flag' (TensorRT 10) or 'strongly-typed' (11: no flag)."""
    return "builder-flag" if hasattr(trt.BuilderFlag, "FP16") else "strongly-typed"


def nvidia_smi_query(field: str) -> str | None:
    """nvidia-smi's `field` (--query-gpu) for the first visible NVIDIA GPU; None where there
    is no nvidia-smi, or it fails or prints nothing."""
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = out.stdout.strip().splitlines() if out.returncode == 0 else []
    return lines[0].strip() if lines else None


def compute_capability() -> str | None:
    """'9.0' for the first visible NVIDIA GPU, None where nvidia-smi cannot tell."""
    cap = nvidia_smi_query("compute_cap")
    return cap if cap and cap[:1].isdigit() else None


def engine_cache_key(onnx_sha256: str, tensorrt_version: str, capability: str | None,
                     fp16: bool = True) -> str:
    """Folder-name-safe key of everything an engine is only valid for.

    An engine deserializes only in the TensorRT version that built it and runs only on GPUs of
    the compute capability it was tuned on; the ONNX hash covers the model itself.
    """
    cc = (capability or "unknown").replace(".", "")
    trt = "".join(c if c.isalnum() or c == "." else "-" for c in str(tensorrt_version))
    precision = "fp16" if fp16 else "fp32"
    digest = hashlib.sha256(f"{onnx_sha256}|{tensorrt_version}|{capability}|{precision}"
                            .encode()).hexdigest()[:8]
    return f"{onnx_sha256[:12]}-trt{trt}-sm{cc}-{precision}-{digest}"


def deploy_mismatch(tensorrt_version: str) -> str | None:
    """Why engines built with `tensorrt_version` will not load in the deployed Triton, or None."""
    if parse_version(tensorrt_version) == parse_version(TRITON_TENSORRT):
        return None
    return (f"engines built with TensorRT {tensorrt_version} will not load in the Triton "
            f"{TRITON_IMAGE_TAG} image of deploy/k8s (TensorRT {TRITON_TENSORRT}); build them "
            f"with pip install 'tensorrt=={TRITON_TENSORRT}.*' or change the image")
