"""Which served config a repository build writes: the host rule, a cached calibration, or a
calibration measured now (`adgen repo build --tune`).

    resolve_served("auto", gen_sha, te_dir, gen_dir)  # cached tune for this host+model, else rule
    resolve_served("tune", ...)                       # measure now (seconds), cache, use
    resolve_served("rule", ...)                       # ServedConfig.for_host(), no cache read

The calibration runs the fused model's own Pipeline in this process: for every split of the
cores into instances x intra-op threads, `instances` threads each drive their own Pipeline
(onnxruntime releases the GIL, so they run as Triton's instance processes do) at each
candidate request batch; the best split wins, at the rule's batch unless another is clearly
faster there (pick_tuned). Cached per host (CPU model, core count, ISA flags) and generator sha256 under
<artifacts>/served/, so a default build on the same host and model reuses it for free.
"""
from __future__ import annotations

import hashlib
import json
import logging
import statistics
import threading
import time
from pathlib import Path

from adgen.atomic import atomic_write_json
from adgen.errors import AdgenError
from adgen.paths import artifacts_dir
from adgen.serving.jobs.served import DEFAULT_BATCH, DEFAULT_DELAY_US, ServedConfig, \
    ServedConfigError, host_cores
from adgen.serving.runtime.backend import Pipeline
from adgen.serving.runtime.providers import cpu_flags, cpu_model

log = logging.getLogger("adgen.export")

MODES = ("auto", "rule", "tune")
TUNE_BATCHES = (16, 32, 64)
TUNE_SECONDS = 1.5  # per (split, batch) and round
TUNE_ROUNDS = 3  # alternate orders: drift on a shared host hits all alike; median
MARGIN = 1.15  # another batch must beat DEFAULT_BATCH by this much to replace it


def host_key(cores: int | None = None) -> dict:
    """What a calibration depends on besides the model: CPU model, cores, ISA flags."""
    cores = host_cores() if cores is None else cores
    flags = " ".join(sorted(cpu_flags()))
    ident = f"{cpu_model()}|{cores}|{flags}"
    return {"cpu": cpu_model(), "cores": cores,
            "flags_sha256": hashlib.sha256(flags.encode()).hexdigest()[:12],
            "key": hashlib.sha256(ident.encode()).hexdigest()[:12]}


def cache_path(generator_sha256: str, cores: int | None = None) -> Path:
    return artifacts_dir() / "served" / f"{host_key(cores)['key']}-{generator_sha256[:12]}.json"


def read_cache(path: Path) -> ServedConfig | None:
    """The cached calibration, None when there is none; ServedConfigError (one line) when
    the file is not one."""
    if not path.is_file():
        return None
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ServedConfigError(f"tune cache {path}: not JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict) or "served" not in data:
        raise ServedConfigError(f"tune cache {path}: no \"served\" object")
    return ServedConfig.from_json(data["served"], f"tune cache {path}")


def resolve_served(mode, generator_sha256: str, te_dir: Path, gen_dir: Path,
                   cores: int | None = None) -> tuple[ServedConfig, str]:
    """(the ServedConfig to write, a one-line note saying where it came from)."""
    if isinstance(mode, ServedConfig):
        return mode.checked(), "given"
    if mode not in MODES:
        raise ServedConfigError(f"served config {mode!r}: choose one of {', '.join(MODES)} "
                                "(or pass a ServedConfig)")
    if mode == "rule":
        return ServedConfig.for_host(cores), "rule for this host's cores"
    path = cache_path(generator_sha256, cores)
    if mode == "auto":
        try:
            cached = read_cache(path)
        except ServedConfigError as exc:
            log.warning("%s; using the rule for this host (rerun with --tune)", exc)
            cached = None
        if cached is not None:
            return cached, f"tune cached at {path}"
        return ServedConfig.for_host(cores), "rule for this host's cores"
    served, rows = calibrate(te_dir, gen_dir, cores)
    atomic_write_json(path, {"host": host_key(cores), "generator_sha256": generator_sha256,
                             "served": served.to_json(), "rows": rows,
                             "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    return served, f"tuned now, cached at {path}"


def splits(cores: int) -> list[tuple[int, int]]:
    """(instances, threads) using every core: (1, cores) ... (cores, 1), at most 8 instances."""
    return [(i, cores // i) for i in range(1, min(cores, 8) + 1) if cores % i == 0]


def _prompts(k: int, batch: int) -> tuple[list[str], list[int]]:
    """Fresh prompts (4 images each, as `adgen generate -n 4` sends) and distinct seeds."""
    return ([f"calibration object {k}-{j // 4}, flat sticker style" for j in range(batch)],
            [k * 1000 + j for j in range(batch)])


def run_split(pipes: list, next_batch, seconds: float) -> dict:
    """The served split in-process: one thread per Pipeline (one per instance, each with the
    instance's intra-op threads; onnxruntime releases the GIL), each running
    pipe.run(*next_batch()) until `seconds` have passed (at least once).
    -> {"images", "wall_s", "times"}: images made, wall seconds, seconds per call."""
    lock, done, times = threading.Lock(), [0], []
    t0 = time.perf_counter()

    def work(pipe):
        while True:
            with lock:
                prompts, seeds = next_batch()
            t = time.perf_counter()
            pipe.run(prompts, seeds)
            with lock:
                times.append(time.perf_counter() - t)
                done[0] += len(prompts)
            if time.perf_counter() - t0 >= seconds:
                return
    workers = [threading.Thread(target=work, args=(p,)) for p in pipes]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return {"images": done[0], "wall_s": time.perf_counter() - t0, "times": times}


def _rate(pipes: list, batch: int, seconds: float, start: int) -> float:
    """images/s of the split at `batch` on fresh calibration prompts."""
    counter = iter(range(start + 1, 1 << 62))
    out = run_split(pipes, lambda: _prompts(next(counter), batch), seconds)
    return out["images"] / out["wall_s"]


def calibrate(te_dir: Path, gen_dir: Path, cores: int | None = None, batches=None,
              seconds: float | None = None,
              rounds: int | None = None) -> tuple[ServedConfig, list[dict]]:
    """Measures every split x batch in-process (None: TUNE_BATCHES, TUNE_SECONDS,
    TUNE_ROUNDS); returns (the pick, the measured rows)."""
    cores = host_cores() if cores is None else cores
    batches = TUNE_BATCHES if batches is None else tuple(batches)
    seconds = TUNE_SECONDS if seconds is None else seconds
    rounds = TUNE_ROUNDS if rounds is None else rounds
    cells = [(s, b) for s in splits(cores) for b in batches]
    rates: dict = {c: [] for c in cells}
    try:
        pipes = {s: [Pipeline(te_dir, gen_dir, threads=s[1]) for _ in range(s[0])]
                 for s in splits(cores)}
    except AdgenError as exc:
        raise ServedConfigError(f"cannot calibrate: {exc}") from None
    for s, ps in pipes.items():  # warm-up: first runs allocate
        _rate(ps, min(batches), 0.0, 10_000_000)
    for r in range(rounds):
        for n, (s, b) in enumerate(cells if r % 2 == 0 else cells[::-1]):
            rates[(s, b)].append(_rate(pipes[s], b, seconds, (r * len(cells) + n) * 1000))
    rows = [{"instances": s[0], "threads": s[1], "batch": b,
             "images_per_s": statistics.median(v), "rounds": v} for (s, b), v in rates.items()]
    served = pick_tuned(rows)
    log.info("served config tuned: %s, batch %d", served.label, served.batch)
    return served, rows


def pick_tuned(rows: list[dict]) -> ServedConfig:
    """The split (instances x threads) with the best rate, at DEFAULT_BATCH unless another
    batch beats it there by more than MARGIN: the calibration runs in-process, without
    Triton's per-request costs (gRPC, the python backend's hop), which favour fewer, larger
    requests, and the rate is flat past batch 16 on the model measured."""
    good = [x for x in rows if x.get("images_per_s", 0) > 0]
    if not good:
        raise ServedConfigError("calibration measured nothing (every rate was 0)")
    best = max(good, key=lambda x: x["images_per_s"])
    same = {x["batch"]: x for x in good if (x["instances"], x["threads"]) ==
            (best["instances"], best["threads"])}
    default = same.get(DEFAULT_BATCH)
    pick = default if default and best["images_per_s"] <= MARGIN * default["images_per_s"] \
        else best
    return ServedConfig(instances=pick["instances"], threads=pick["threads"],
                        preferred=(pick["batch"],), delay_us=DEFAULT_DELAY_US,
                        batch=pick["batch"], concurrency=2 * pick["instances"],
                        source="tune").checked()
