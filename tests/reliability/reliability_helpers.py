"""Helpers for the reliability tests: the real `adgen` CLI in a subprocess, servers a test
may SIGKILL, output-folder consistency checks and process memory (RSS) from /proc."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CLI = [sys.executable, "-m", "adgen"]


def cli_env(**extra) -> dict:
    return {**os.environ, "TQDM_DISABLE": "1", **extra}


def run_cli(*args, env=None, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, args)], capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout, **kw)


def run_clis(*commands, env=None, timeout=300, **kw) -> list[subprocess.CompletedProcess]:
    """run_cli of each argument list in `commands`, as many at a time as there are CPUs
    (each is mostly a single-threaded Python start-up); results in the order given."""
    with ThreadPoolExecutor(max_workers=max(1, min(len(commands), os.cpu_count() or 1))) as ex:
        return list(ex.map(lambda args: run_cli(*args, env=env, timeout=timeout, **kw),
                           commands))


def popen_cli(*args, env=None, **kw) -> subprocess.Popen:
    return subprocess.Popen([*CLI, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env or cli_env(), **kw)


def manifest_lines(out: Path) -> list[str]:
    path = Path(out) / "manifest.jsonl"
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def manifest(out: Path) -> list[dict]:
    rows = []
    for line in manifest_lines(out):
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def wait_for(predicate, timeout_s: float, what: str, poll_s: float = 0.05):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def check_output(out: Path, expected_ids=None, allow_torn: bool = False,
                 killed: bool = False) -> dict[str, dict]:
    """The §5 promises of one output folder; returns custom_id -> manifest entry.

    - no temp files anywhere (atomic writes); killed: a run SIGKILLed mid-write may leave
      its hidden `.<name>.<random>.tmp` (never a file under a real name); the next run
      deletes them;
    - every manifest line parses (allow_torn: a line cut by a kill is tolerated) and
      names each custom_id once; every listed file exists with the recorded sha256;
    - every PNG lies inside out/images/<id>/; a finished job (expected_ids given) has
      exactly those custom_ids and no PNG the manifest does not list. An interrupted one may
      hold a complete PNG of its in-flight batch that is not listed yet (the rerun rewrites
      it with the same bytes), but never a partial one."""
    out = Path(out).resolve()
    tmp = [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    if killed:
        tmp = [p for p in tmp if not p.name.startswith(".")]
    assert not tmp, f"temp files left behind: {tmp[:5]}"
    entries: dict[str, dict] = {}
    for n, line in enumerate(manifest_lines(out), 1):
        try:
            rec = json.loads(line)
        except ValueError:
            assert allow_torn, f"manifest line {n} does not parse: {line[:80]!r}"
            continue
        cid = rec["custom_id"]
        assert cid not in entries, f"{cid} is in the manifest twice"
        entries[cid] = rec
        f = (out / rec["path"]).resolve()
        assert f.is_relative_to(out / "images" / rec["id"]), f"{f} escapes {out}"
        assert f.is_file(), f"manifest lists {rec['path']} but it does not exist"
        assert hashlib.sha256(f.read_bytes()).hexdigest() == rec["sha256"], \
            f"{rec['path']} does not match its manifest sha256"
    listed = {(out / e["path"]).resolve() for e in entries.values()}
    on_disk = {p.resolve() for p in (out / "images").rglob("*.png")} \
        if (out / "images").is_dir() else set()
    assert listed <= on_disk
    if expected_ids is None:
        from adgen.serving.jobs.images import read_png
        for extra in on_disk - listed:
            assert extra.is_relative_to(out / "images")
            assert read_png(extra)[0].shape == (64, 64, 3)  # complete, decodable
    else:
        assert on_disk == listed, f"PNGs not in the manifest: {sorted(on_disk - listed)[:5]}"
        missing, extra = set(expected_ids) - set(entries), set(entries) - set(expected_ids)
        assert not missing and not extra, f"missing {sorted(missing)[:5]}, extra {sorted(extra)[:5]}"
    return entries


def write_prompts(path: Path, count: int, tag: str = "p") -> Path:
    """count distinct prompts, one a line (ids line-1..line-count)."""
    colours = ["red", "blue", "green", "yellow", "purple", "orange", "teal", "pink"]
    things = ["apple", "car", "sneaker", "gift box", "rocket", "guitar", "pizza", "umbrella"]
    path.write_text("".join(
        f"a {colours[i % 8]} {things[(i // 8) % 8]} number {i} ({tag}), flat sticker style\n"
        for i in range(count)))
    return path


# ----------------------------------------------------------------------------- servers

def start_server(repo: Path, log: Path, ports: tuple[int, int, int] | None = None, env=None):
    """A tritonserver this test owns, on free 127.0.0.1 ports (or the given ones)."""
    from adgen.serving.jobs.triton_server import ServerConfig, TritonServer, free_port
    grpc, http, metrics = ports or (free_port(), free_port(), free_port())
    server = TritonServer(ServerConfig(str(repo), grpc_port=grpc, http_port=http,
                                       metrics_port=metrics, log_file=str(log)))
    if env is None:
        return server.start()
    old = dict(os.environ)
    os.environ.update(env)  # server_env() copies os.environ at start
    try:
        return server.start()
    finally:
        os.environ.clear()
        os.environ.update(old)


def http_ready(http_port: int) -> bool:
    """Whether the server on 127.0.0.1:http_port says it is ready (all models loaded)."""
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/v2/health/ready",
                                    timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def serve_cli(model_repo: Path, log: Path, env=None):
    """`adgen serve --no-build` on free ports, once ready -> (process, (grpc, http, metrics));
    fails with its stderr if it exits first."""
    from adgen.serving.jobs.triton_server import free_port
    ports = free_port(), free_port(), free_port()
    proc = popen_cli("serve", "--repository", model_repo, "--no-build", "--grpc-port", ports[0],
                     "--http-port", ports[1], "--metrics-port", ports[2], "--log-file", log,
                     env=env)
    try:
        wait_for(lambda: http_ready(ports[1]) or proc.poll() is not None, 180,
                 "adgen serve to be ready", poll_s=0.25)
    except AssertionError:
        proc.kill()  # its watcher takes the server down, as when adgen dies any other way
        proc.communicate()
        raise
    assert proc.poll() is None, proc.communicate()[1][-2000:]
    return proc, ports


def server_ports(server) -> tuple[int, int, int]:
    c = server.config
    return c.grpc_port, c.http_port, c.metrics_port


def session_pids(pid: int) -> list[int]:
    """Processes in the session of `pid` (tritonserver runs in its own: server + stubs)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            if os.getsid(int(d.name)) == pid:
                pids.append(int(d.name))
        except (ProcessLookupError, PermissionError):
            continue
    return pids


def sigkill_server(server) -> int:
    """SIGKILL the tritonserver process itself (not a clean stop); returns -9 once it is
    gone. Its python-backend stubs are left to notice the dead parent: reap_stubs later."""
    pid = server.process.pid
    server.killed_pid = pid
    os.kill(pid, signal.SIGKILL)
    return server.process.wait(10)


def reap_stubs(server, wait_s: float = 10.0) -> list[tuple[int, str]]:
    """After sigkill_server: TritonServer.stop() must reap the dead server's python-backend
    stubs (one can otherwise run on for minutes). Returns any still alive `wait_s` later -
    those are then SIGKILLed here (they are in the session this test started)."""
    pid = server.killed_pid
    server.stop()
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and any(_alive(p) for p in session_pids(pid)):
        time.sleep(0.1)
    left = [(p, _cmd(p)) for p in session_pids(pid) if _alive(p)]
    if left:
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return left


def _cmd(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120]
    except OSError:
        return "?"


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def rss_bytes(pids) -> int:
    total = 0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            continue
    return total
