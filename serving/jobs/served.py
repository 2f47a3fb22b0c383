"""The served config: how the fused `adgen` model is batched and how many of it run, and the
client batch and concurrency that keep it busy. One value, read where it is needed:

    ServedConfig.for_host()                       # the rule for this host's cores
    ServedConfig.from_model_config(config_json)   # what a repository / a server serves
    served.client_defaults() -> (batch, concurrency)

`adgen repo build` writes it into the repository's config.pbtxt (adgen.export.served_config:
the rule, or a calibration measured on this host with `--tune` and cached); `adgen generate`
and the benchmarks read it back from the repository or the server, so the client sends what
the server was configured for.

Why these numbers (docs/design.md §8): on a 2-core host two single-threaded instances beat
one instance with both threads, but only when the dynamic batcher does not merge the
requests in flight into one large batch for one instance while the other idles; a preferred
batch size equal to the client's request batch keeps one request per instance.
"""
from __future__ import annotations

import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2

from adgen.contract import MAX_BATCH_SIZE
from adgen.errors import AdgenError

# Images per client request: the in-process Pipeline's rate flattens from batch 32 on this
# model (benchmarks/results/<machine>/serving.md), and larger requests only add latency.
DEFAULT_BATCH = 32
# Queue delay 0: Triton then sends a preferred-size batch as soon as an instance is free and
# never merges queued requests past it; with any delay, requests that waited longer than it
# (both instances busy) go out merged into one large batch for one instance while the other
# idles (measured: mean executed batch 38-48 instead of 32 at 500-2000 µs, and 2 x 32 -> 64
# without a preferred size; docs/design.md §8).
DEFAULT_DELAY_US = 0
# Instances on one host: one per core up to this many, then more threads per instance (not
# measured past 2 cores: `adgen repo build --tune` measures a larger host).
MAX_INSTANCES = 8
SOURCES = ("rule", "tune", "config")


class ServedConfigError(AdgenError):
    """A served config that cannot be used (malformed cache, bad option); one line."""


def host_cores() -> int:
    """Cores this process may run on (the affinity mask, else the CPU count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


@dataclass(frozen=True)
class ServedConfig:
    instances: int = 2  # Triton instances of the fused model (processes)
    threads: int = 1  # onnxruntime intra-op threads per instance (0 = every core)
    max_batch_size: int = MAX_BATCH_SIZE  # the contract's per-request limit, never lowered
    preferred: tuple[int, ...] = (DEFAULT_BATCH,)  # dynamic batcher's preferred sizes
    delay_us: int = DEFAULT_DELAY_US  # max_queue_delay_microseconds
    batch: int = DEFAULT_BATCH  # images per client request
    concurrency: int = 4  # client requests in flight
    source: str = "rule"  # rule | tune | config (read back from a model config)

    @classmethod
    def for_host(cls, cores: int | None = None) -> "ServedConfig":
        """The untuned rule: one single-threaded instance per core (at most MAX_INSTANCES,
        then the cores shared out as threads), requests of DEFAULT_BATCH, two requests in
        flight per instance (one computing, one queued, so no instance waits on the
        network)."""
        cores = host_cores() if cores is None else int(cores)
        if cores < 1:
            raise ServedConfigError(f"cores must be >= 1, got {cores}")
        instances = min(cores, MAX_INSTANCES)
        threads = 1 if cores <= MAX_INSTANCES else cores // MAX_INSTANCES
        return cls(instances=instances, threads=threads, concurrency=2 * instances).checked()

    def checked(self) -> "ServedConfig":
        """self, or ServedConfigError naming the first value out of range."""
        for name in ("instances", "batch", "concurrency", "max_batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ServedConfigError(f"{name} must be an integer >= 1, got {v!r}")
        for name in ("threads", "delay_us"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ServedConfigError(f"{name} must be an integer >= 0, got {v!r}")
        if self.max_batch_size != MAX_BATCH_SIZE:
            raise ServedConfigError(f"max_batch_size must be the contract's {MAX_BATCH_SIZE} "
                                    f"(clients may send that many), got {self.max_batch_size}")
        if self.batch > self.max_batch_size:
            raise ServedConfigError(f"batch {self.batch} > max_batch_size {self.max_batch_size}")
        if not isinstance(self.preferred, tuple) or any(
                not isinstance(p, int) or isinstance(p, bool) or not 1 <= p <= self.max_batch_size
                for p in self.preferred):
            raise ServedConfigError(f"preferred batch sizes must be integers in "
                                    f"[1, {self.max_batch_size}], got {self.preferred!r}")
        if self.delay_us > 1_000_000:
            raise ServedConfigError(f"delay_us {self.delay_us} is over a second")
        if self.source not in SOURCES:
            raise ServedConfigError(f"source must be one of {', '.join(SOURCES)}, "
                                    f"got {self.source!r}")
        return self

    def client_defaults(self) -> tuple[int, int]:
        """(images per request, requests in flight) for `adgen generate`."""
        return self.batch, self.concurrency

    @property
    def label(self) -> str:
        pref = f", preferred {list(self.preferred)}" if self.preferred else ""
        return (f"{self.instances} inst x {self.threads or 'all'} thr, delay {self.delay_us} µs"
                f"{pref}")

    def to_json(self) -> dict:
        return {**asdict(self), "preferred": list(self.preferred)}

    @classmethod
    def from_json(cls, data, where: str = "served config") -> "ServedConfig":
        """The inverse of to_json; ServedConfigError (one line, naming `where`) otherwise."""
        if not isinstance(data, dict):
            raise ServedConfigError(f"{where}: expected a JSON object, got "
                                    f"{type(data).__name__}")
        known = {f.name for f in fields(cls)}
        extra = sorted(set(data) - known)
        if extra:
            raise ServedConfigError(f"{where}: unknown keys {', '.join(extra)}")
        missing = sorted(known - set(data) - {"source"})
        if missing:
            raise ServedConfigError(f"{where}: missing keys {', '.join(missing)}")
        pref = data["preferred"]
        if not isinstance(pref, list):
            raise ServedConfigError(f"{where}: preferred must be a list, got {pref!r}")
        try:
            return cls(**{**data, "preferred": tuple(pref)}).checked()
        except ServedConfigError as exc:
            raise ServedConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_model_config(cls, config: dict) -> "ServedConfig":
        """A Triton model config in JSON form (get_model_config(as_json=True), with or
        without its {"config": ...} wrapper) -> what it serves; the client batch is the
        largest preferred batch size (DEFAULT_BATCH without one), the concurrency two
        requests per instance. ServedConfigError for values out of range."""
        config = config.get("config", config) if isinstance(config, dict) else {}
        if not config:
            raise ServedConfigError("not a Triton model config (empty)")
        groups = config.get("instance_group") or [{}]
        instances = sum(int(g.get("count") or 1) for g in groups)
        params = config.get("parameters") or {}
        raw = (params.get("intra_op_threads") or {}).get("string_value") or "0"
        db = config.get("dynamic_batching")
        preferred = tuple(int(x) for x in (db or {}).get("preferred_batch_size") or ())
        delay = int((db or {}).get("max_queue_delay_microseconds") or 0)
        try:
            threads = int(raw)
        except ValueError:
            raise ServedConfigError(f"intra_op_threads {raw!r} is not an integer") from None
        batch = max(preferred) if preferred else DEFAULT_BATCH
        return cls(instances=instances, threads=threads,
                   max_batch_size=int(config.get("max_batch_size") or 0), preferred=preferred,
                   delay_us=delay, batch=batch, concurrency=2 * instances,
                   source="config").checked()


def from_pbtxt(path: Path) -> ServedConfig:
    """A config.pbtxt file (a built repository's) -> ServedConfig; ServedConfigError (one
    line, naming the file) when it cannot be read or parsed."""
    try:
        config = text_format.Parse(Path(path).read_text(), model_config_pb2.ModelConfig())
    except (OSError, UnicodeDecodeError, text_format.ParseError) as exc:
        raise ServedConfigError(f"{path}: not a readable model config "
                                f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})"
                                ) from None
    try:
        return from_proto(config)
    except ServedConfigError as exc:
        raise ServedConfigError(f"{path}: {exc}") from None


def from_proto(config) -> ServedConfig:
    """A ModelConfig protobuf -> ServedConfig (ServedConfig.from_model_config)."""
    return ServedConfig.from_model_config(json_format.MessageToDict(
        config, preserving_proto_field_name=True))
