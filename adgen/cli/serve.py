"""adgen serve: a local Triton server (the nvidia-pytriton wheel's tritonserver) on 127.0.0.1.

Usage:
  adgen serve                                   # builds model_repository/ if missing
  adgen serve --model-repository model_repository --grpc-port 9001 --http-port 9000 --metrics-port 9002
  adgen serve --host 0.0.0.0                    # expose beyond this machine (think twice)
  adgen serve --dry-run

Waits until every model is ready, prints the endpoints, and runs until SIGINT/SIGTERM,
which it forwards to the server as a clean shutdown.
"""
from __future__ import annotations

import ipaddress
import json
import signal
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import click

from adgen.errors import AdgenError
from adgen.export.repo import build_repository
from adgen.serving.jobs.triton_server import ServerConfig, TritonServer

EPILOG = """Examples:

  adgen serve

  adgen serve --model-repository model_repository --grpc-port 9001 --http-port 9000 --metrics-port 9002

  adgen serve --model path/to/checkpoint_or_onnx_export --dry-run
"""
DEFAULT_REPOSITORY = "model_repository"


@dataclass(frozen=True)
class ServeConfig:
    server: ServerConfig
    model: str | None  # what to build the repository from when it is missing
    build: bool


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 and localhost bind only this machine; anything else is reachable."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to a public address


def ensure_repository(repository: str, model: str | None) -> Path:
    """The repository, built from `model` (default: the release model) when missing."""
    repo = Path(repository)
    if repo.is_dir() and any(p.name != "adgen_repository.json" for p in repo.iterdir()):
        return repo
    click.echo(f"building model repository {repo} ...", err=True)
    try:
        return build_repository(repo, model=model, force=True)
    except ImportError as exc:  # exporting a checkpoint needs the train extra
        raise AdgenError(f"cannot build {repo}: {exc} (pip install 'adgen[train]')") from None


def serve_forever(cfg: ServeConfig) -> int:
    if cfg.build:
        ensure_repository(cfg.server.repository, cfg.model)
    server = TritonServer(cfg.server)
    stop = threading.Event()

    def on_signal(signum, _frame):
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        click.echo("starting tritonserver ...", err=True)
        server.start()
        click.echo(f"Triton ready (log: {server.log_path})\n"
                   f"  gRPC     {server.grpc_url}\n"
                   f"  HTTP     http://{server.http_url}\n"
                   f"  metrics  {server.metrics_url}\n"
                   f"try: adgen generate examples/prompts.txt -o out/ --url {server.grpc_url}\n"
                   "Ctrl-C stops the server.")
        while not stop.wait(0.5):
            if not server.is_running():
                raise AdgenError(f"tritonserver exited unexpectedly: {server.failure_reason()} "
                                 f"(log: {server.log_path})")
        click.echo("stopping tritonserver ...", err=True)
    finally:
        code = server.stop()
        for s, handler in old.items():
            signal.signal(s, handler)
    click.echo(f"tritonserver stopped (exit code {code})", err=True)
    return 0


@click.command("serve", epilog=EPILOG)
@click.option("--model-repository", "--repository", "repository", default=DEFAULT_REPOSITORY,
              show_default=True,
              help="Model repository (Triton's spelling; --repository also works); built from "
                   "--model when missing.")
@click.option("--model", default=None,
              help="Checkpoint or ONNX export to build from (default: the release model).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option("--grpc-port", default=8001, show_default=True, type=int)
@click.option("--http-port", default=8000, show_default=True, type=int)
@click.option("--metrics-port", default=8002, show_default=True, type=int)
@click.option("--log-file", default=None, help="Server log (default: a temp file).")
@click.option("--log-verbose", default=0, type=int, help="Triton --log-verbose level.")
@click.option("--startup-timeout", default=180.0, show_default=True, type=float,
              help="Seconds to wait for readiness.")
@click.option("--no-build", is_flag=True, help="Never build the repository; fail if missing.")
@click.option("--dry-run", is_flag=True, help="Print the resolved config and the command.")
def serve(repository, model, host, grpc_port, http_port, metrics_port, log_file, log_verbose,
          startup_timeout, no_build, dry_run):
    """Run a local Triton server on a model repository until interrupted."""
    cfg = ServeConfig(ServerConfig(repository=repository, host=host, grpc_port=grpc_port,
                                   http_port=http_port, metrics_port=metrics_port,
                                   log_file=log_file, log_verbose=log_verbose,
                                   startup_timeout_s=startup_timeout),
                      model=model, build=not no_build)
    if not is_loopback(host):
        click.echo(f"warning: --host {host} exposes Triton (gRPC, HTTP, metrics) beyond this "
                   "machine without authentication; put it behind a firewall or a proxy",
                   err=True)
    if dry_run:
        click.echo(json.dumps({**asdict(cfg), "command": TritonServer(cfg.server).command()},
                              indent=2))
        return
    serve_forever(cfg)
