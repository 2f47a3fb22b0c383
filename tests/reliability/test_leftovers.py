"""Nothing left behind: a hard-killed server tree leaves no python-backend stub
and no shared memory, and a server started after a crash frees what an earlier one left -
and nothing else. Real processes: `adgen serve`, tritonserver, its stubs, a running job."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from reliability_helpers import (_alive, check_output, cli_env, manifest_lines, popen_cli,
                                 rss_bytes, serve_cli, session_pids, sigkill_server,
                                 start_server, wait_for, write_prompts)
from adgen.serving.jobs import reaper
SHM = Path("/dev/shm")
pytestmark = [pytest.mark.triton,
              pytest.mark.skipif(not reaper.supported(), reason="Linux /proc and pidfds")]


def _child(pid: int, name: str) -> int | None:
    """The child of `pid` whose executable is `name` (tritonserver) or that runs `name`."""
    for p in reaper.pids():
        st = reaper._stat(p)
        if st and int(st[1]) == pid and (os.path.basename(reaper.exe(p) or "") == name
                                          or any(name in a for a in reaper.cmdline(p))):
            return p
    return None


def _busy_job(url: str, tmp_path: Path, tag: str):
    """A job that keeps the stubs busy (an idle stub notices a dead server by itself)."""
    prompts = write_prompts(tmp_path / f"{tag}.txt", 200, tag=tag)
    out = tmp_path / f"{tag}-out"
    job = popen_cli("generate", prompts, "-o", out, "-n", 4, "--url", url, "--batch-size", 8,
                    "--concurrency", 4, "--retries", 0, "--timeout", 20)
    wait_for(lambda: len(manifest_lines(out)) >= 16, 180, "the job to make progress")
    return job, out


def _end(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


@pytest.mark.parametrize("victims", ["both", "serve", "tritonserver"])
def test_sigkill_of_adgen_serve_and_tritonserver_mid_job_leaves_nothing(lean_repo, tmp_path,
                                                                        victims):
    """kill -9 mid-job of `adgen serve` and its tritonserver at once (the OOM killer, an
    operator), or of either alone: within 10 s no stub of that server is alive and none of
    its shared-memory segments remains. Before the watcher, after kill -9 of both the busy
    stubs lived on for hours (~300 MiB each) and their segments stayed in /dev/shm."""
    serve, (grpc, _, _) = serve_cli(lean_repo, tmp_path / "server.log")
    job = None
    try:
        server = _child(serve.pid, "tritonserver")
        assert server, "no tritonserver child of adgen serve"
        watcher = _child(serve.pid, "reaper.py")
        job, out = _busy_job(f"127.0.0.1:{grpc}", tmp_path, "together")
        stubs = [p for p in session_pids(server) if p != server and _alive(p)]
        segments = reaper.segments_mapped_by(server)
        assert stubs and segments
        held = rss_bytes(stubs)
        if victims in ("both", "serve"):
            os.kill(serve.pid, signal.SIGKILL)
        if victims in ("both", "tritonserver"):
            os.kill(server, signal.SIGKILL)
        t0 = time.monotonic()
        serve.communicate(timeout=30)  # alone, adgen serve notices and exits with an error
        assert serve.returncode == (-signal.SIGKILL if victims != "tritonserver" else 2)

        def clean():
            return not any(_alive(p) for p in stubs) and \
                not any((SHM / s).exists() for s in segments)
        wait_for(clean, 10, "the stubs and shared memory of the killed server to go")
        took = time.monotonic() - t0
        wait_for(lambda: not watcher or not _alive(watcher), 10, "the watcher to exit")
        print(f"[kill -9 {victims}] {len(stubs)} stubs ({held / 2**20:.0f} MiB) and "
              f"{len(segments)} segments gone {took:.2f}s after the kill")
        assert job.wait(120) == 1  # --retries 0: the rest is reported, resumable
        check_output(out)
    finally:
        if job is not None:
            _end(job)
        _end(serve)


def _plant_crash(repo, tmp_path, env) -> tuple[list[int], set[str]]:
    """What a crash leaves when no watcher ran (killed too, or an older adgen): a server
    SIGKILLed mid-job and stubs that did not notice, orphaned with their segments. An idle
    stub notices a dead server within a second; which ones are stuck busy is chance, so
    the stubs are SIGSTOPped first: they stay, as a stuck busy stub does."""
    server = start_server(repo, tmp_path / "crashed.log", env=env)
    job = None
    try:
        job, _ = _busy_job(server.grpc_url, tmp_path, "crash")
        pid = server.process.pid
        stubs = [p for p in session_pids(pid) if p != pid]
        segments = reaper.segments_mapped_by(pid)
        watcher = getattr(server, "watcher", None)
        if watcher is not None:
            os.kill(watcher.pid, signal.SIGKILL)  # the watcher dies first
            watcher.wait()
        for p in stubs:
            os.kill(p, signal.SIGSTOP)
        sigkill_server(server)
        time.sleep(1)
        return [p for p in stubs if _alive(p)], {s for s in segments if (SHM / s).exists()}
    finally:
        if job is not None:
            _end(job)
        server.process = server.watcher = None  # leave the wreck as it is


def _fake_stub(tmp_path: Path) -> subprocess.Popen:
    """A process named like a stub but not run from adgen's backend folder."""
    fake = tmp_path / "elsewhere" / reaper.STUB
    fake.parent.mkdir()
    shutil.copy(shutil.which("sleep"), fake)
    return subprocess.Popen([str(fake), "300"])


def _mapped_segment(name: str) -> subprocess.Popen:
    """A python-backend-named segment that a live process maps (as a live server does)."""
    code = ("import mmap, os, sys, time\n"
            f"fd = os.open('/dev/shm/{name}', os.O_RDWR | os.O_CREAT, 0o600)\n"
            "os.ftruncate(fd, 1 << 20)\nm = mmap.mmap(fd, 1 << 20)\n"
            "print('mapped', flush=True)\ntime.sleep(300)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "mapped"
    return proc


def test_a_second_adgen_serve_frees_what_a_crash_left_and_nothing_else(lean_repo, triton,
                                                                         tmp_path):
    """After a planted crash, `adgen serve` kills the orphaned stubs of adgen's backend
    folder and unlinks unmapped python-backend segments, saying how much in one line - and
    leaves alone a live server, a stub-named process elsewhere and a segment a live process
    maps. A private ADGEN_ARTIFACTS (so a private backend folder) keeps other test sessions
    on this machine, whose servers sweep at their start too, off the planted stubs."""
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    env = cli_env(ADGEN_ARTIFACTS=str(artifacts))
    left, segments = _plant_crash(lean_repo, tmp_path, env)
    tag = uuid.uuid4().hex[:12]
    orphan_segment = f"{reaper.SHM_PREFIX}adgen-test-{tag}-orphan"
    (SHM / orphan_segment).write_bytes(b"\0" * (1 << 20))  # nobody maps it
    live_segment = f"{reaper.SHM_PREFIX}adgen-test-{tag}-live"
    keep = [_fake_stub(tmp_path), _mapped_segment(live_segment)]
    session = triton.process.pid  # a live server: its stubs and segments are not leftovers
    session_stubs = [p for p in session_pids(session) if p != session]
    session_segments = reaper.segments_mapped_by(session)
    serve = None
    try:
        assert left and segments, "the planted crash left no busy stub"
        held = rss_bytes(left)
        serve, _ = serve_cli(lean_repo, tmp_path / "server.log", env)
        serve.send_signal(signal.SIGTERM)
        _, err = serve.communicate(timeout=60)
        assert serve.returncode == 0, err[-2000:]
        said = [ln for ln in err.splitlines() if ln.startswith("freed ")]
        assert len(said) == 1, err[-2000:]
        m = re.search(r"(\d+) python-backend stub\(s\) \((\d+) MiB resident\), (\d+) "
                      r"shared-memory segment\(s\) \(([\d.]+) MiB\)", said[0])
        # (the unmapped planted segment may go to another session's sweep first)
        assert m and int(m[1]) == len(left) and int(m[3]) >= len(segments), said[0]
        print(f"[restart after a crash] planted {len(left)} stubs ({held / 2**20:.0f} MiB), "
              f"{len(segments)} + 1 segments; adgen serve said: {said[0]}")
        assert not any(_alive(p) for p in left)
        assert not any((SHM / s).exists() for s in segments | {orphan_segment})
        # ... and nothing that is not a leftover of adgen's:
        assert keep[0].poll() is None, "a stub-named process outside adgen's backend folder"
        assert (SHM / live_segment).exists(), "a segment a live process maps"
        assert all(_alive(p) for p in session_stubs) and triton.is_running()
        assert all((SHM / s).exists() for s in session_segments)
    finally:
        for p in keep:
            _end(p)
        for p in left:  # if the sweep failed: they are leftovers of this test's server
            if _alive(p):
                os.kill(p, signal.SIGKILL)
        for name in (orphan_segment, live_segment, *segments):
            try:
                (SHM / name).unlink()
            except FileNotFoundError:
                pass
        if serve is not None:
            _end(serve)
