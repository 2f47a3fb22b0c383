"""Shared pieces of the serving and job benchmarks: a local Triton, prompts, metrics, CPU.

    with LocalTriton(model, work_dir) as triton:      # builds the repository, loads models
        triton.grpc_url, triton.metrics.snapshot(), triton.reload("adgen", overrides)

Not a CLI: `benchmarks/serving.py`, `benchmarks/job.py` and `adgen bench` use it.

Prompts: `PromptPool` hands out prompts never used before in the run (so text-encoder
caches behave as in a real job, where each prompt is new), each repeated `n` times in a
row, the pattern `adgen generate -n 4` sends.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from adgen.errors import AdgenError
from adgen.memory import keep_freed_memory
from benchmarks.prompt_pool import PromptPool

class BenchError(AdgenError):
    """A benchmark that cannot run here (missing tool, server failed); one line."""


# ----------------------------------------------------------------------------- metrics

_LINE = re.compile(r'^(\w+)\{([^}]*)\}\s+([0-9.eE+-]+)$')
COUNTERS = {
    "requests": "nv_inference_request_success",
    "failures": "nv_inference_request_failure",
    "inferences": "nv_inference_count",
    "executions": "nv_inference_exec_count",
    "request_us": "nv_inference_request_duration_us",
    "queue_us": "nv_inference_queue_duration_us",
    "compute_input_us": "nv_inference_compute_input_duration_us",
    "compute_infer_us": "nv_inference_compute_infer_duration_us",
    "compute_output_us": "nv_inference_compute_output_duration_us",
}


class Metrics:
    """Triton's Prometheus endpoint: counters per model, differenced around a measurement."""

    def __init__(self, url: str):
        self.url = url

    def snapshot(self, settle_s: float = 0.0) -> dict[tuple[str, str], float]:
        """Counters now; settle_s > 0 first lets the server book the last responses sent."""
        if settle_s:
            time.sleep(settle_s)
        with urllib.request.urlopen(self.url, timeout=10) as resp:
            text = resp.read().decode()
        out: dict[tuple[str, str], float] = {}
        for line in text.splitlines():
            m = _LINE.match(line.strip())
            if not m:
                continue
            labels = dict(kv.split("=", 1) for kv in m.group(2).split(",") if "=" in kv)
            model = labels.get("model", "").strip('"')
            key = (m.group(1), model)
            out[key] = out.get(key, 0.0) + float(m.group(3))  # failures: summed over reasons
        return out

    @staticmethod
    def diff(before: dict, after: dict, model: str) -> dict:
        """Per-request server times (µs) and the mean executed batch over the interval."""
        d = {k: after.get((name, model), 0.0) - before.get((name, model), 0.0)
             for k, name in COUNTERS.items()}
        req = d["requests"] or float("nan")
        return {"requests": int(d["requests"]), "failures": int(d["failures"]),
                "inferences": int(d["inferences"]), "executions": int(d["executions"]),
                "mean_batch": d["inferences"] / d["executions"] if d["executions"] else None,
                "queue_us_per_request": d["queue_us"] / req,
                "compute_infer_us_per_request": d["compute_infer_us"] / req,
                "compute_io_us_per_request": (d["compute_input_us"] + d["compute_output_us"]) / req,
                "request_us_per_request": d["request_us"] / req}


# ----------------------------------------------------------------------------- CPU time

def _clock_ticks() -> float:
    return float(os.sysconf("SC_CLK_TCK")) if hasattr(os, "sysconf") else 100.0


def tree_cpu_seconds(pid: int) -> float:
    """user+system CPU seconds of a process and its descendants, live or reaped (/proc)."""
    children: dict[int, list[int]] = {}
    stats: dict[int, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        rest = raw[raw.rfind(")") + 2:].split()  # fields after "(comm)"
        # utime, stime, and cutime, cstime: children already reaped (e.g. python-backend
        # stubs of an unloaded model) stay counted, so the total never goes down
        ppid, cpu = int(rest[1]), sum(int(x) for x in rest[11:15])
        children.setdefault(ppid, []).append(int(entry.name))
        stats[int(entry.name)] = cpu / _clock_ticks()
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += stats.get(p, 0.0)
        todo += children.get(p, [])
    return total


# ----------------------------------------------------------------------------- server

@dataclass(frozen=True)
class BatchSetting:
    """One row of the dynamic-batching sweep (delay_us None = dynamic batching off)."""
    instances: int = 1
    threads: int = 0  # onnxruntime intra-op threads per instance (0 = every core)
    delay_us: int | None = 2000
    preferred: tuple[int, ...] = ()

    @property
    def label(self) -> str:
        db = "no dynamic batching" if self.delay_us is None else (
            f"delay {self.delay_us} µs" + (f", preferred {list(self.preferred)}"
                                           if self.preferred else ""))
        return f"{self.instances} inst x {self.threads or 'all'} thr, {db}"

    def apply(self, config: dict) -> dict:
        """A Triton model config (JSON form) with this setting applied."""
        c = copy.deepcopy(config)
        group = dict((c.get("instance_group") or [{}])[0])
        group.update({"count": self.instances, "kind": "KIND_CPU"})
        group.pop("name", None)
        c["instance_group"] = [group]
        c.setdefault("parameters", {})["intra_op_threads"] = {"string_value": str(self.threads)}
        if self.delay_us is None:
            c.pop("dynamic_batching", None)
        else:
            c["dynamic_batching"] = {"max_queue_delay_microseconds": self.delay_us,
                                     "preferred_batch_size": list(self.preferred)}
        return c


# Measured beside the served and the tuned config (benchmarks/batching.py). The full 9-setting
# sweep of 2cpu-amd-epyc (one instance x all threads or two x one, delays 0/2000/10000 µs,
# with and without preferred [16, 32]) left these undominated: the best batch-1 latency, the
# best batch-1 concurrency-16 rate, the best job-shaped client rate. Dropped: no dynamic
# batching and one instance with a delay or preferred sizes (below these on every load),
# two instances at 10000 µs without preferred sizes (below 2000 µs on every load).
SWEEP = (
    BatchSetting(1, 0, 0),
    BatchSetting(2, 1, 2000),
    BatchSetting(2, 1, 10000, (16, 32)),
)


def served_setting(served) -> BatchSetting:
    """An adgen.serving.jobs.served.ServedConfig as a sweep row."""
    return BatchSetting(served.instances, served.threads, served.delay_us,
                        tuple(served.preferred))


def committed_setting(model: str = "adgen") -> BatchSetting:
    """What triton_models/<model>/config.pbtxt commits (read with Triton's own proto)."""
    from adgen.export.repo import load_config
    return setting_of(load_config(model))


def setting_of(cfg) -> BatchSetting:
    """A ModelConfig protobuf's instances, threads and dynamic batching as a BatchSetting."""
    threads = int(cfg.parameters["intra_op_threads"].string_value or 0) \
        if "intra_op_threads" in cfg.parameters else 0
    count = cfg.instance_group[0].count if cfg.instance_group else 1
    if not cfg.HasField("dynamic_batching"):
        return BatchSetting(count, threads, None)
    db = cfg.dynamic_batching
    return BatchSetting(count, threads, int(db.max_queue_delay_microseconds),
                        tuple(int(x) for x in db.preferred_batch_size))


def apply_pick(serving_json: Path, config_path: Path) -> BatchSetting:
    """Writes the sweep's pick into a config.pbtxt (instance count, intra_op_threads, dynamic
    batching), keeping its comments and everything else; checked by parsing it back."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from adgen.export.repo import check_against_contract
    payload = json.loads(Path(serving_json).read_text())
    sweep = payload["dynamic_batching"]
    row = next((r for r in sweep["rows"] if r["label"] == sweep["pick"]), None)
    if row is None:
        raise BenchError(f"{serving_json} records no pick (every sweep setting failed)")
    pick = BatchSetting(**{**row["setting"], "preferred": tuple(row["setting"]["preferred"])})
    text = Path(config_path).read_text()
    subs = [(r"instance_group\s*\[\s*\{[^}]*\}\s*\]",
             f"instance_group [ {{ count: {pick.instances} kind: KIND_CPU }} ]"),
            (r'(key:\s*"intra_op_threads"\s*value:\s*\{\s*string_value:\s*")\d+(")',
             rf"\g<1>{pick.threads}\g<2>")]
    block = "" if pick.delay_us is None else (
        "dynamic_batching {\n" f"  max_queue_delay_microseconds: {pick.delay_us}\n"
        + (f"  preferred_batch_size: [ {', '.join(map(str, pick.preferred))} ]\n"
           if pick.preferred else "") + "}")
    if re.search(r"dynamic_batching\s*\{", text):
        subs.append((r"dynamic_batching\s*\{[^}]*\}\n?", block + ("\n" if block else "")))
    elif block:
        subs.append((r"(instance_group[^\n]*\n)", rf"\g<1>{block}\n"))
    for pattern, repl in subs:
        text, count = re.subn(pattern, repl, text, count=1)
        if count != 1:
            raise BenchError(f"{config_path}: cannot find {pattern!r} to rewrite")
    config = text_format.Parse(text, model_config_pb2.ModelConfig())
    problems = check_against_contract(config)
    if setting_of(config) != pick or problems:
        raise BenchError(f"rewritten {config_path} does not hold the pick: {problems}")
    tmp = Path(config_path).with_suffix(".pbtxt.tmp")
    tmp.write_text(text)
    os.replace(tmp, config_path)
    return pick


class LocalTriton:
    """Builds a model repository (fused `adgen` + `generator`, and `adgen_256` when given an
    upsampler) and serves it on 127.0.0.1.

    Explicit model control, so the sweep can reload `adgen` with another config in seconds
    instead of restarting the server. `adgen_256` is built but loaded only on `load()`
    (the job256 part), so it takes no memory or CPU while the other parts run.
    upsampler: an upsampler export or checkpoint folder; False (default): no adgen_256.
    precision: the generator precision `adgen repo build` is asked for (auto: this host's
    default, export/precision.py)."""

    MODELS = ("adgen", "generator")

    def __init__(self, model: str | Path | None, work: Path, log=print,
                 upsampler: str | Path | bool = False, precision: str = "auto"):
        self.model, self.work, self.log = model, Path(work), log
        self.upsampler, self.precision = upsampler, precision
        self.server = None
        self.repo: Path | None = None
        self._http = None
        self.committed: dict[str, dict] = {}

    def __enter__(self) -> "LocalTriton":
        from adgen.export.repo import build_repository
        from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
        keep_freed_memory()  # the bench's own clients as `adgen generate` runs (adgen.memory)
        self.log("building the model repository (fused adgen + generator"
                 + (" + adgen_256)" if self.upsampler else ")"))
        self.repo = build_repository(self.work / "model_repository", model=self.model,
                                     extra_models=("generator",), progress=False,
                                     upsampler=self.upsampler or False,
                                     precision=self.precision)
        cfg = ServerConfig(str(self.repo), grpc_port=free_port(), http_port=free_port(),
                           metrics_port=free_port(), model_control="explicit",
                           log_file=str(self.work / "tritonserver.log"))
        self.server = TritonServer(cfg)
        self.log(f"starting tritonserver on 127.0.0.1:{cfg.grpc_port}")
        self.server.start()
        try:
            import tritonclient.http as httpclient
            self._http = httpclient.InferenceServerClient(self.server.http_url,
                                                          network_timeout=300.0)
            for name in self.MODELS:
                self._http.load_model(name)
                self.committed[name] = self._http.get_model_config(name)
        except BaseException:
            self.server.stop()
            raise
        self.metrics = Metrics(self.server.metrics_url)
        return self

    def __exit__(self, *exc) -> None:
        if self._http is not None:
            self._http.close()
        if self.server is not None:
            self.server.stop()

    @property
    def grpc_url(self) -> str:
        return self.server.grpc_url

    @property
    def pid(self) -> int:
        return self.server.process.pid

    @property
    def generator_dir(self) -> Path:
        return self.repo / "adgen" / "1" / "generator"

    @property
    def text_encoder_dir(self) -> Path:
        return self.repo / "adgen" / "1" / "text_encoder"

    def has_model(self, name: str) -> bool:
        """Whether the built repository holds `name` (e.g. adgen_256)."""
        return self.repo is not None and (self.repo / name / "config.pbtxt").is_file()

    def load(self, name: str) -> float:
        """Loads a built model not loaded at start (committed config); returns seconds."""
        if name in self.committed:
            return 0.0
        t0 = time.perf_counter()
        from tritonclient.utils import InferenceServerException
        try:
            self._http.load_model(name)
        except InferenceServerException as exc:
            raise BenchError(f"tritonserver could not load {name}: {exc.message()}") from None
        self.committed[name] = self._http.get_model_config(name)
        return time.perf_counter() - t0

    def reload(self, name: str, config: dict | None = None) -> float:
        """Loads `name` with a config override (None: the committed one); returns seconds."""
        from tritonclient.utils import InferenceServerException
        t0 = time.perf_counter()
        body = config if config is not None else self.committed[name]
        try:
            self._http.load_model(name, config=json.dumps(body))
        except InferenceServerException as exc:
            raise BenchError(f"tritonserver could not load {name} with that config: "
                             f"{exc.message()}") from None
        return time.perf_counter() - t0

    def config(self, name: str) -> dict:
        return self._http.get_model_config(name)


def work_dir(prefix: str) -> Path:
    return Path(tempfile.mkdtemp(prefix=prefix))


@contextmanager
def scratch_triton(model: str | Path | None, prefix: str, log=print, **kw):
    """A LocalTriton in a fresh temp work folder (`prefix`), removed with everything the
    run put there once the server has stopped."""
    work = work_dir(prefix)
    try:
        with LocalTriton(model, work, log, **kw) as triton:
            yield triton
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- jobs

@dataclass(frozen=True)
class JobLoad:
    """What a job part sends: `prompts` fresh prompts x `n` images each, `batch` images a
    request, `concurrency` requests in flight, in each of `rounds` rounds."""
    model: str | None = None  # generator checkpoint or ONNX export; None = release model
    prompts: int = 500
    n: int = 4
    batch: int = 32
    concurrency: int = 4
    rounds: int = 2


def client_alone(triton: "LocalTriton", pool: PromptPool, model: str, load: JobLoad) -> dict:
    """adgen's client alone against `model` on one job's worth of fresh images, no files:
    what Triton delivers to a client, with the server's CPU and metrics meanwhile."""
    prompts, seeds = pool.images(load.prompts * load.n, load.n)
    # settled: responses of the previous run booked before the window opens
    before, cpu0 = triton.metrics.snapshot(0.2), tree_cpu_seconds(triton.pid)
    rate = client_rate(triton.grpc_url, model, prompts, seeds, load.batch, load.concurrency)
    server_cpu = tree_cpu_seconds(triton.pid) - cpu0
    return {"model": model, "images": len(prompts), "images_per_s": rate,
            "server_cpu_s": server_cpu,
            "server_cpu_ms_per_image": server_cpu * 1000 / len(prompts),
            "metrics": triton.metrics.diff(before, triton.metrics.snapshot(0.2), model)}


def adgen_command() -> list[str]:
    """This environment's `adgen` (the console script, else `python -m adgen`)."""
    import sys
    script = Path(sys.executable).parent / "adgen"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "adgen"]


def run_generate(triton: "LocalTriton", args: list[str], out: Path, model: str,
                 expected: int, timeout_s: float = 1800, env: dict | None = None) -> dict:
    """`adgen generate ARGS -o OUT --url <triton> --no-progress` in a subprocess, measured:
    its summary.json figures, client CPU (rusage of children), server CPU (the server's
    process tree) and Triton's metrics for `model`. BenchError (one line) when it fails or
    does not make `expected` images. env: variables set for it on top of this process's;
    without ADGEN_GROUNDING_CACHE there, the job gets an empty grounding cache of its own
    beside OUT, so no job finds subjects an earlier one of the run grounded (cold)."""
    import resource
    import shlex
    import subprocess
    cmd = adgen_command() + ["generate", *args, "-o", str(out), "--url", triton.grpc_url,
                             "--no-progress"]
    shown = " ".join(["adgen"] + [shlex.quote(c) for c in cmd[len(adgen_command()):]])
    # settled: responses of the previous run booked before the window opens
    before, cpu0 = triton.metrics.snapshot(0.2), tree_cpu_seconds(triton.pid)
    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    env = {"ADGEN_GROUNDING_CACHE": str(out.parent / f"{out.name}-grounding.sqlite"),
           **(env or {})}
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s,
                          env={**os.environ, **env})
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = tree_cpu_seconds(triton.pid) - cpu0
    metrics = triton.metrics.diff(before, triton.metrics.snapshot(0.2), model)
    if proc.returncode != 0:
        raise BenchError(f"{shown} exited {proc.returncode}: "
                         f"{(proc.stderr.strip().splitlines() or ['no output'])[-1]}")
    summary = json.loads((out / "summary.json").read_text())
    if summary["images_generated"] != expected:
        raise BenchError(f"{shown} made {summary['images_generated']} images, "
                         f"expected {expected}")
    return {"images": expected, "images_per_s": summary["images_per_s"],
            "job_wall_s": summary["wall_s"], "process_wall_s": wall,
            "latency_ms": summary.get("latency_ms"),
            "client_cpu_s": (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime),
            "server_cpu_s": server_cpu, "metrics": metrics, "command": shown}


def client_rate(url: str, model: str, prompts: list[str], seeds: list[int], batch: int,
                concurrency: int) -> float:
    """images/s of adgen's own client alone (no files) sending `prompts` in batches of
    `batch`, `concurrency` requests in flight."""
    import asyncio

    from adgen.serving.jobs.client import AdgenClient, ClientConfig

    async def go() -> float:
        async with AdgenClient(ClientConfig(urls=(url,), model=model)) as client:
            sem = asyncio.Semaphore(concurrency)

            async def one(lo):
                async with sem:
                    await client.infer(prompts[lo:lo + batch], seeds[lo:lo + batch])
            t0 = time.perf_counter()
            await asyncio.gather(*(one(lo) for lo in range(0, len(prompts), batch)))
            return len(prompts) / (time.perf_counter() - t0)
    return asyncio.run(go())
