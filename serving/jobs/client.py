"""Async gRPC client for the public `adgen` model, with several servers, failover and retries.

    async with AdgenClient(ClientConfig(urls=("127.0.0.1:8001",))) as client:
        images = await client.infer(["a red apple, flat sticker style"], [42])  # uint8[1,64,64,3]

Many `infer` calls may be in flight at once (asyncio); each picks the next healthy URL in
round-robin order. UNAVAILABLE and DEADLINE_EXCEEDED (server down, overloaded, timed out)
are retried with exponential backoff + jitter on the other URLs, and so is a server that is
shutting down (NOT_FOUND "has no available versions"); a URL that failed is rested for the
backoff time. Anything else (INVALID_ARGUMENT, ...) is the request's own
fault and raised at once as RequestError with the server's message.
"""
from __future__ import annotations

import asyncio
import random
import time
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as aio
from tritonclient.utils import InferenceServerException

from pathlib import Path

from adgen.contract import (IMAGE, LARGE_IMAGE_SIZE, PROMPT, PUBLIC_MODEL, PUBLIC_MODEL_256,
                            SEED, all_specs)
from adgen.errors import AdgenError
from adgen.serving.jobs.served import ServedConfig, ServedConfigError, from_pbtxt

RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED")


class ClientError(AdgenError):
    """No server could answer (after retries and failover)."""


class RequestError(AdgenError):
    """The server rejected the request itself (e.g. INVALID_ARGUMENT)."""

    def __init__(self, message: str, status: str = ""):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class ClientConfig:
    urls: tuple[str, ...] = ("127.0.0.1:8001",)
    model: str = PUBLIC_MODEL
    timeout_s: float = 120.0  # per request
    retries: int = 6  # attempts after the first
    backoff_s: float = 0.25  # first backoff; doubles each retry
    backoff_max_s: float = 8.0


def status_name(exc) -> str:
    """'StatusCode.UNAVAILABLE' / 'UNAVAILABLE' / None -> 'UNAVAILABLE' / ''."""
    status = exc.status() if hasattr(exc, "status") else None
    return str(status or "").rsplit(".", 1)[-1]


def make_inputs(prompts: list[str], seeds) -> list:
    """PROMPT BYTES[B,1], SEED INT64[B,1] as tritonclient gRPC inputs."""
    b = len(prompts)
    p = grpcclient.InferInput(PROMPT.name, [b, 1], PROMPT.client_dtype)
    p.set_data_from_numpy(np.array([t.encode("utf-8") for t in prompts],
                                   dtype=np.object_).reshape(b, 1))
    s = grpcclient.InferInput(SEED.name, [b, 1], SEED.client_dtype)
    s.set_data_from_numpy(np.asarray(seeds, dtype=np.int64).reshape(b, 1))
    return [p, s]


class AdgenClient:
    def __init__(self, config: ClientConfig):
        if not config.urls:
            raise ClientError("no server URL given")
        self.config = config
        self._clients: dict = {}
        self._down_until = {u: 0.0 for u in config.urls}
        self._next = 0
        self.calls = {u: 0 for u in config.urls}
        self.retried = 0

    async def __aenter__(self) -> "AdgenClient":
        for url in self.config.urls:
            self._clients[url] = aio.InferenceServerClient(url)
        return self

    async def __aexit__(self, *exc) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()

    def _pick(self) -> str:
        """Next URL in round-robin order, preferring ones not resting after a failure."""
        urls = self.config.urls
        now = time.monotonic()
        for i in range(len(urls)):
            url = urls[(self._next + i) % len(urls)]
            if self._down_until[url] <= now:
                self._next = (self._next + i + 1) % len(urls)
                return url
        url = min(urls, key=self._down_until.get)  # all resting: the one back soonest
        return url

    async def _call(self, fn):
        """Runs `await fn(client)` with failover and retries; returns (result, url)."""
        cfg = self.config
        delay = cfg.backoff_s
        last = ""
        for attempt in range(cfg.retries + 1):
            url = self._pick()
            try:
                self.calls[url] += 1
                return await fn(self._clients[url]), url
            except InferenceServerException as exc:
                status = status_name(exc)
                if status not in RETRYABLE and not _looks_unavailable(exc):
                    raise RequestError(exc.message() or str(exc), status) from None
                last = f"{url}: {status or 'UNAVAILABLE'}: {exc.message() or exc}"
            except (OSError, asyncio.TimeoutError) as exc:
                last = f"{url}: {type(exc).__name__}: {exc}"
            self._down_until[url] = time.monotonic() + delay
            if attempt == cfg.retries:
                break
            self.retried += 1
            await asyncio.sleep(delay * (0.5 + random.random() / 2))
            delay = min(delay * 2, cfg.backoff_max_s)
        raise ClientError(f"no server answered after {cfg.retries + 1} attempts; last: {last}")

    async def infer(self, prompts: list[str], seeds) -> tuple[np.ndarray, str]:
        """list[str], int[B] -> (IMAGE uint8[B,64,64,3] (adgen_256: [B,256,256,3]), url)."""
        cfg = self.config

        async def run(client):
            result = await client.infer(cfg.model, make_inputs(prompts, seeds),
                                        client_timeout=cfg.timeout_s)
            return result.as_numpy(IMAGE.name)

        images, url = await self._call(run)
        spec = all_specs().get(cfg.model)  # a model outside the contract: the 64 px IMAGE
        dims = spec.output(IMAGE.name).dims if spec and spec.outputs[0].name == IMAGE.name \
            else IMAGE.dims
        if images is None or images.shape != (len(prompts), *dims):
            raise RequestError(f"server returned IMAGE of shape "
                               f"{None if images is None else images.shape}")
        return images, url

    async def model_info(self) -> dict:
        """name/version/sha256/z_dim of the served model, from its config parameters."""
        wait = min(30.0, self.config.timeout_s)  # a hung URL costs one request timeout

        async def run(client):
            return await client.get_model_config(self.config.model, as_json=True,
                                                 client_timeout=wait)

        async def meta(client):
            return await client.get_model_metadata(self.config.model, as_json=True,
                                                   client_timeout=wait)
        cfg, _ = await self._call(run)
        versions = (await self._call(meta))[0].get("versions") or ["1"]
        params = {k: v.get("string_value", "") for k, v in
                  (cfg.get("config", {}).get("parameters") or {}).items()}
        info = {"name": params.get("model_name") or self.config.model,
                "version": max(versions, key=lambda v: int(v) if v.isdigit() else 0),
                "sha256": params.get("generator_sha256", ""),
                "z_dim": int(params.get("z_dim") or 0), "served_as": self.config.model}
        if params.get("upsampler_sha256"):  # adgen_256 (adgen.export.repo._upsampled_model)
            info["upsampler"] = {"name": params.get("upsampler_name", ""),
                                 "sha256": params["upsampler_sha256"]}
        return info

    async def wait_ready(self, timeout_s: float = 60.0, grace_s: float = 0.5) -> list[str]:
        """URLs whose model is ready; ClientError if none within timeout.

        Every URL is asked at once; once one answers ready, the others get `grace_s` more,
        and the ones still silent or not ready rest for backoff_max_s (then they get calls
        again, with failover) so the first requests go to the ready ones: a hung host among
        several --urls costs the job grace_s at start, not a probe timeout per URL."""
        deadline = time.monotonic() + timeout_s

        async def ready(url: str) -> bool:
            try:
                return bool(await self._clients[url].is_model_ready(self.config.model,
                                                                    client_timeout=5))
            except Exception:  # noqa: BLE001  (any failure means not ready yet)
                return False
        while True:
            probes = {asyncio.ensure_future(ready(u)): u for u in self._clients}
            pending, found = set(probes), []
            try:
                while pending:
                    done, pending = await asyncio.wait(
                        pending, timeout=grace_s if found else None,
                        return_when=asyncio.FIRST_COMPLETED)
                    if not done:  # the grace after the first ready URL is over
                        break
                    found += [probes[f] for f in done if f.result()]
            finally:
                for f in pending:
                    f.cancel()
            if found:
                rest = time.monotonic() + self.config.backoff_max_s
                for url in self._clients:
                    if url not in found:
                        self._down_until[url] = max(self._down_until[url], rest)
                return [u for u in self.config.urls if u in found]
            if time.monotonic() > deadline:
                raise ClientError(f"model {self.config.model!r} not ready on any of "
                                  f"{', '.join(self.config.urls)}")
            await asyncio.sleep(0.5)


def served_defaults(urls, model: str = PUBLIC_MODEL,
                    timeout_s: float = 3.0) -> tuple[ServedConfig, str]:
    """(the served config of the first server in `urls` that returns `model`'s config, where
    it came from); this host's rule when none answers (the job then reports the servers)."""
    for url in urls:
        client = grpcclient.InferenceServerClient(url)
        try:
            cfg = client.get_model_config(model, as_json=True, client_timeout=timeout_s)
            return ServedConfig.from_model_config(cfg), f"{model} on {url}"
        except (InferenceServerException, ServedConfigError, OSError, ValueError):
            continue  # down, no such model, or a config this cannot read: the next one
        finally:
            client.close()
    return ServedConfig.for_host(), "the rule for this host (no server gave its config)"


def served_for_job(engine: str, urls, model, model_name: str = PUBLIC_MODEL,
                   size: int = 64) -> tuple[ServedConfig, str]:
    """The served config a job's defaults follow: the server's (triton), the repository's
    (local, `model` a repository), else this host's rule; (ServedConfig, where from).
    A repository config this cannot read is a ServedConfigError."""
    name = PUBLIC_MODEL_256 if size == LARGE_IMAGE_SIZE and model_name == PUBLIC_MODEL \
        else model_name
    if engine == "triton":
        return served_defaults(tuple(urls), name)
    path = Path(model or "") / name / "config.pbtxt"
    if model and path.is_file():
        return from_pbtxt(path), str(path)
    return ServedConfig.for_host(), "the rule for this host"


DRAINING = ("has no available versions", "is not ready", "server is stopping")


def _looks_unavailable(exc) -> bool:
    """A dead channel reported without a status code, or a server that is shutting down:
    while it drains, Triton unloads models and answers NOT_FOUND "has no available
    versions" - the model exists, this server just cannot serve it now, so fail over."""
    text = str(exc).lower()
    return ("unavailable" in text or "failed to connect" in text or "deadline" in text
            or any(d in text for d in DRAINING))
