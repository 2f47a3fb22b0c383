"""Run the `tritonserver` binary shipped in the nvidia-pytriton wheel on a model repository.

    with TritonServer(ServerConfig(repository="model_repository")) as server:
        print(server.grpc_url)        # 127.0.0.1:8001

The wheel's python backend needs its stub for the running Python beside
`backends/python/`; the wheel keeps stubs elsewhere, so we assemble a writable backend
folder owned by adgen (artifacts/triton/backends/py3.X) with links to the wheel's files and
a copy of the stub. The server runs in its own session (Ctrl-C in a terminal reaches only
us; we forward SIGINT/SIGTERM as a clean shutdown), binds 127.0.0.1 by default and logs to a
file. Triton's "Failed to initialize NVML" / DCGM warnings on CPU machines are harmless.

Nothing is left behind (serving/jobs/reaper.py): start() first frees what crashed servers left
(orphaned stubs of adgen's backend folder, python-backend shared memory nobody maps) and
says so in one stderr line, then starts a watcher that kills the server's process group
and frees its shared memory when the server or its owner dies - even both by SIGKILL.
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
import ctypes

from adgen.atomic import atomic_dir
from adgen.serving.jobs import reaper
from adgen.errors import AdgenError
from adgen.paths import artifacts_dir


class ServerError(AdgenError):
    """The server cannot start (missing binary, port taken, model failed to load)."""


@dataclass(frozen=True)
class ServerConfig:
    repository: str
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    log_file: str | None = None  # default: a temp file, shown on failure
    log_verbose: int = 0
    startup_timeout_s: float = 180.0
    model_control: str = "none"  # load every model in the repository at start


def pytriton_dir() -> Path:
    try:
        import pytriton
    except ImportError:
        raise ServerError("tritonserver is not installed: pip install 'adgen[server]' "
                          "(package nvidia-pytriton)") from None
    return Path(pytriton.__file__).resolve().parent


def server_binary() -> Path:
    binary = pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not binary.is_file() or not os.access(binary, os.X_OK):
        raise ServerError(f"tritonserver binary missing at {binary}: reinstall nvidia-pytriton")
    return binary


def server_libs() -> Path:
    """The wheel's bundled shared libraries (the relocated stub loses its RPATH to them)."""
    return pytriton_dir().parent / "nvidia_pytriton.libs"


def backend_dir(root: Path | None = None) -> Path:
    """A writable backends/ with python/ = the wheel's backend + the stub for this Python."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    src = pytriton_dir() / "tritonserver"
    stub = src / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no python backend stub for Python {version} in nvidia-pytriton")
    root = Path(root) if root else artifacts_dir() / "triton" / f"backends-py{version}"
    python = root / "python"
    if (python / "triton_python_backend_stub").is_file() and \
            (python / "libtriton_python.so").exists():
        return root
    with atomic_dir(root) as tmp:
        (tmp / "python").mkdir()
        for item in (src / "backends" / "python").iterdir():
            if item.name != "__pycache__":
                (tmp / "python" / item.name).symlink_to(item)
        shutil.copy2(stub, tmp / "python" / "triton_python_backend_stub")
    return root


def port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return True
    return False


_HANDED_OUT: set[int] = set()  # ports free_port() returned in this process


def free_port(host: str = "127.0.0.1") -> int:
    """A port free on host now and never returned before by this process: callers take
    several in a row (gRPC, HTTP, metrics), and the kernel may hand the same ephemeral port
    to consecutive binds once each probe socket is closed."""
    for _ in range(1000):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind((host, 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise ServerError(f"no fresh free port on {host} after 1000 tries")


def server_env() -> dict[str, str]:
    env = os.environ.copy()
    libs = str(server_libs())
    env["LD_LIBRARY_PATH"] = libs + (":" + env["LD_LIBRARY_PATH"] if env.get("LD_LIBRARY_PATH")
                                     else "")
    # The stub embeds libpython and finds its site-packages from the python on PATH.
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.setdefault("OMP_NUM_THREADS", str(os.cpu_count() or 1))
    return env


def _die_with_us():
    """preexec_fn for the server: SIGTERM (Triton's clean shutdown) when the process that
    started it dies, even by SIGKILL - its own session would otherwise leave an orphan
    holding the ports (Linux prctl PR_SET_PDEATHSIG; None elsewhere). libc is loaded here,
    in the parent: the child between fork and exec only makes the call."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec():
        prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the parent died before the call: nobody to wait for
            os._exit(1)
    return preexec


class TritonServer:
    """A tritonserver child process: start() waits for readiness, stop() shuts it down."""

    def __init__(self, config: ServerConfig):
        self.config = config
        self.process: subprocess.Popen | None = None
        self.watcher: subprocess.Popen | None = None  # serving/jobs/reaper.py watch
        self.freed: reaper.Freed | None = None  # what the startup sweep freed
        self._log_handle = None
        self.log_path: Path | None = None

    # Where clients reach this server: host:port for gRPC and HTTP, and the Prometheus page.
    grpc_url = property(lambda self: f"{self.config.host}:{self.config.grpc_port}")
    http_url = property(lambda self: f"{self.config.host}:{self.config.http_port}")
    metrics_url = property(
        lambda self: f"http://{self.config.host}:{self.config.metrics_port}/metrics")

    def command(self) -> list[str]:
        c = self.config
        return [str(server_binary()), f"--model-repository={Path(c.repository).resolve()}",
                f"--backend-directory={backend_dir()}",
                f"--model-control-mode={c.model_control}",
                f"--grpc-address={c.host}", f"--grpc-port={c.grpc_port}",
                f"--http-address={c.host}", f"--http-port={c.http_port}",
                f"--metrics-address={c.host}", f"--metrics-port={c.metrics_port}",
                "--allow-gpu-metrics=false", "--strict-readiness=true",
                "--exit-on-error=true", f"--log-verbose={c.log_verbose}"]

    def check(self) -> None:
        c = self.config
        repo = Path(c.repository)
        if not repo.is_dir():
            raise ServerError(f"model repository {repo} does not exist: run `adgen repo build`")
        ports = {"gRPC": c.grpc_port, "HTTP": c.http_port, "metrics": c.metrics_port}
        if len(set(ports.values())) != len(ports):
            raise ServerError(f"ports must differ: {ports}")
        for what, port in ports.items():
            if not 0 < port < 65536:
                raise ServerError(f"{what} port {port} is out of range")
            if port_in_use(c.host, port):
                raise ServerError(f"{what} port {port} on {c.host} is already in use "
                                  f"(pass --{what.lower()}-port)")

    def start(self) -> "TritonServer":
        self.check()
        cmd = self.command()
        if self.config.log_file:
            self.log_path = Path(self.config.log_file)
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
        else:
            fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        self._log_handle = open(self.log_path, "ab")
        self.freed = reaper.clean_leftovers(artifacts_dir() / "triton")
        if self.freed:
            print(self.freed.line(), file=sys.stderr, flush=True)
        self.process = subprocess.Popen(cmd, stdout=self._log_handle, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=server_env(),
                                        start_new_session=True, preexec_fn=_die_with_us())
        try:
            self._start_watcher()
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_watcher(self) -> None:
        """The watcher gets its own session: a kill of the server's group, or of ours, or a
        terminal's Ctrl-C must not reach it. It writes what it cleaned to the server log."""
        if not reaper.supported() or reaper.start_time(self.process.pid) is None:
            return
        self.watcher = subprocess.Popen(
            reaper.watcher_command(os.getpid(), self.process.pid), stdin=subprocess.DEVNULL,
            stdout=self._log_handle, stderr=subprocess.STDOUT, start_new_session=True,
            close_fds=True)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.config.startup_timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            code = self.process.poll()
            if code is not None:
                raise ServerError(f"tritonserver exited with code {code} while starting: "
                                  f"{self.failure_reason()} (log: {self.log_path})")
            try:
                with urllib.request.urlopen(url, timeout=1) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.25)
        raise ServerError(f"tritonserver not ready after {self.config.startup_timeout_s:.0f}s "
                          f"(log: {self.log_path})")

    def failure_reason(self) -> str:
        """The most telling line of the server log."""
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        keys = ("failed to load", "error:", "Error", "failed", "address already in use")
        for key in keys:
            hits = [ln.strip() for ln in lines if key in ln and "NVML" not in ln
                    and "DCGM" not in ln]
            if hits:
                return hits[-1][:300]
        return lines[-1][:300] if lines else "empty log"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 30.0) -> int | None:
        """SIGTERM (Triton unloads models and stops its stubs), SIGKILL after timeout."""
        proc, self.process = self.process, None
        code = None
        if proc is not None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)  # its own session: only its stubs
                    proc.wait(10)
            code = proc.returncode
            # A server that died (SIGKILL, OOM) can leave a python-backend stub busy with its
            # last batch running for minutes (seen: > 120 s, ~490 MiB); reap its group.
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        self._stop_watcher()
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None
        return code

    def _stop_watcher(self, timeout_s: float = 10.0) -> None:
        """The watcher exits on its own once the server is gone (it may still be unlinking
        the dead server's shared memory); wait for it, kill it only if it hangs."""
        watcher, self.watcher = self.watcher, None
        if watcher is None:
            return
        try:
            watcher.wait(timeout_s)
        except subprocess.TimeoutExpired:
            watcher.kill()
            watcher.wait(5)

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
