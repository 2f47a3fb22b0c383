"""Which onnxruntime execution provider runs adgen's models: TensorRT EP > CUDA EP > CPU.

Every onnxruntime session in serving (the in-process Pipeline, the Triton python models, the
text encoder) is made by `ort_session()` here, so a GPU install (`adgen[gpu]`, i.e.
onnxruntime-gpu) serves on the GPU without further settings and a CPU install is unchanged.

Setting: the ADGEN_ORT_PROVIDERS environment variable (or the `setting` argument):
  auto (default)      the best of TensorRT, CUDA, CPU that this onnxruntime has
  cuda,cpu / cpu ...  exactly these, in this order (aliases tensorrt|trt, cuda, cpu, or full
                      provider names); one that this onnxruntime lacks is a one-line error
The choice is logged, and the provider the session really runs is read back from
`session.get_providers()[0]` (onnxruntime silently drops a provider that fails to load,
e.g. CUDA libraries missing): a fallback is logged as a warning, and callers record it.

TensorRT EP builds its engine when a session meets a new input shape; the optimisation
profile given here (batch 1..MAX_BATCH_SIZE, tokens 1..TEXT_MAX_TOKENS) lets one engine serve
every request. ADGEN_ORT_TRT_CACHE names a folder to keep those engines between restarts.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

from adgen.errors import AdgenError

ENV = "ADGEN_ORT_PROVIDERS"
TRT_CACHE_ENV = "ADGEN_ORT_TRT_CACHE"
CPU_FLAGS_ENV = "ADGEN_CPU_FLAGS"
TENSORRT_EP, CUDA_EP, CPU_EP = ("TensorrtExecutionProvider", "CUDAExecutionProvider",
                                "CPUExecutionProvider")
PREFERENCE = (TENSORRT_EP, CUDA_EP, CPU_EP)
ALIASES = {"tensorrt": TENSORRT_EP, "trt": TENSORRT_EP, "cuda": CUDA_EP, "cpu": CPU_EP}
INSTALL_HINT = "pip install 'adgen[gpu]' (onnxruntime-gpu) on an NVIDIA machine"
log = logging.getLogger("adgen.providers")


class ProviderError(AdgenError):
    """A provider setting this onnxruntime cannot honour."""


def _cpuinfo() -> str | None:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return None


def cpu_flags(cpuinfo: str | None = None) -> frozenset[str]:
    """The instruction-set flags of this CPU (of `cpuinfo`, a /proc/cpuinfo text, when
    given): what decides which precision is fast here (int8 dot products, bf16). Empty
    where the kernel does not say (not Linux).

    ADGEN_CPU_FLAGS (space- or comma-separated /proc/cpuinfo names; empty for none), when
    set, stands for this CPU's list: it makes the choices of another CPU reproducible here
    (e.g. `ADGEN_CPU_FLAGS=avx2,fma` for one without int8 dot-product or bf16 units)."""
    if cpuinfo is None:
        forced = os.environ.get(CPU_FLAGS_ENV)
        if forced is not None:
            return frozenset(forced.replace(",", " ").split())
        cpuinfo = _cpuinfo()
        if cpuinfo is None:
            return frozenset()
    for line in cpuinfo.splitlines():  # the first CPU's; all cores of a host share them
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def cpu_model(cpuinfo: str | None = None) -> str:
    """This CPU's model name (of `cpuinfo` when given), or "unknown CPU"."""
    cpuinfo = _cpuinfo() if cpuinfo is None else cpuinfo
    for line in (cpuinfo or "").splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown CPU"


def import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise ProviderError("onnxruntime is not installed: pip install 'adgen[cpu]' "
                            "(or 'adgen[gpu]' on NVIDIA machines)") from None
    return onnxruntime


def requested(setting: str | None = None) -> tuple[str, ...] | None:
    """The providers asked for by `setting` (else ADGEN_ORT_PROVIDERS); None means auto."""
    text = (setting if setting is not None else os.environ.get(ENV, "")).strip()
    if text.lower() in ("", "auto"):
        return None
    names = []
    for word in (w.strip() for w in text.split(",") if w.strip()):
        name = ALIASES.get(word.lower(), word)
        if name not in PREFERENCE:
            raise ProviderError(f"{ENV}: unknown provider {word!r}; use auto or a list of "
                                f"{', '.join(ALIASES)}")
        names.append(name)
    return tuple(dict.fromkeys(names))


def choose_providers(available=None, setting: str | None = None) -> list[str]:
    """Provider names to ask onnxruntime for, best first (see the module docstring)."""
    if available is None:
        available = import_onnxruntime().get_available_providers()
    want = requested(setting)
    if want is None:
        chosen = [p for p in PREFERENCE if p in available] or [CPU_EP]
        log.info("onnxruntime providers (auto): %s of available %s", chosen, list(available))
        return chosen
    missing = [p for p in want if p not in available]
    if missing:
        raise ProviderError(f"{ENV} asks for {', '.join(missing)}, but this onnxruntime has "
                            f"only {', '.join(available)}"
                            + (f": {INSTALL_HINT}" if CPU_EP not in missing else ""))
    log.info("onnxruntime providers (%s=%s): %s", ENV, ",".join(want), list(want))
    return list(want)


def _shape_text(shapes: dict) -> str:
    return ",".join(f"{n}:{'x'.join(str(d) for d in s)}" for n, s in shapes.items())


def provider_options(providers: list[str], device_id: int = 0,
                     trt_profile=None) -> list[dict]:
    """Options per provider: the GPU to use, and TensorRT EP's one optimisation profile.

    trt_profile: {input: (min, opt, max) shapes}, or a callable returning it (called only
    when TensorRT EP is among the providers, so CPU installs never pay for it)."""
    out = []
    for p in providers:
        if p == TENSORRT_EP:
            opts = {"device_id": str(device_id)}
            if callable(trt_profile):
                trt_profile = trt_profile()
            if trt_profile:
                for i, key in enumerate(("min", "opt", "max")):
                    opts[f"trt_profile_{key}_shapes"] = _shape_text(
                        {n: s[i] for n, s in trt_profile.items()})
            cache = os.environ.get(TRT_CACHE_ENV)
            if cache:
                opts.update(trt_engine_cache_enable="True", trt_engine_cache_path=cache,
                            trt_timing_cache_enable="True", trt_timing_cache_path=cache)
            out.append(opts)
        elif p == CUDA_EP:
            out.append({"device_id": str(device_id)})
        else:
            out.append({})
    return out


def ort_session(path: str | Path, options=None, setting: str | None = None,
                device_id: int = 0, trt_profile=None):
    """An onnxruntime InferenceSession on the chosen providers (used_provider() says which ran)."""
    ort = import_onnxruntime()
    providers = choose_providers(ort.get_available_providers(), setting)
    sess = ort.InferenceSession(str(path), options, providers=providers,
                                provider_options=provider_options(providers, device_id,
                                                                  trt_profile))
    used = used_provider(sess)
    if used != providers[0]:
        log.warning("%s: asked onnxruntime for %s, it runs on %s (fallback; is the CUDA/"
                    "TensorRT runtime installed?)", Path(path).name, providers[0], used)
    else:
        log.info("%s: onnxruntime runs on %s", Path(path).name, used)
    return sess


def used_provider(session) -> str:
    """The provider that runs the session's nodes first: session.get_providers()[0]."""
    got = session.get_providers()
    return got[0] if got else CPU_EP
