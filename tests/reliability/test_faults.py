"""Faults with real processes (docs/design.md §9): a tritonserver SIGKILLed mid-job
and restarted, the client SIGKILLed mid-job, one of two --url servers killed, the LLM
endpoint down or hanging, and a full disk. Every case ends with the output-folder check
of reliability_helpers.check_output: each image exactly once, no temp files, every
manifest line's file present with its sha256 - nothing lost, nothing written twice."""
from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from reliability_helpers import (_alive, check_output, cli_env, manifest, manifest_lines,
                                 popen_cli, reap_stubs, run_cli, serve_cli, server_ports,
                                 session_pids, sigkill_server, start_server, wait_for,
                                 write_prompts)


def ids_for(count: int, n: int) -> set[str]:
    return {f"line-{i}-{k}" for i in range(1, count + 1) for k in range(n)}


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        raise AssertionError(f"job still running after {timeout:.0f}s: {err[-2000:]}")
    return proc.returncode, out, err


def summary(out: Path) -> dict:
    return json.loads((out / "summary.json").read_text())


# ----------------------------------------------------------------------------- server

def started_and_paused(procs: list[subprocess.Popen], outs: tuple[Path, ...], lines: int) -> None:
    """Waits until every job has `lines` manifest lines, pausing (SIGSTOP) each one as it
    gets there: a job would otherwise finish all its images before the fault (with two,
    the first to start did, while the other was still loading; seen under load). The
    caller sends SIGCONT."""
    def ready() -> bool:
        done = True
        for p, out in zip(procs, outs):
            assert p.poll() is None, f"a job ended before the kill: {p.args}"
            if len(manifest_lines(out)) >= lines:
                os.kill(p.pid, signal.SIGSTOP)  # stopping a stopped process is a no-op
            else:
                done = False
        return done
    wait_for(ready, 180, f"every job to write {lines} images")


@pytest.mark.triton
def test_server_sigkill_mid_job_then_restart(lean_repo, tmp_path):
    """Two jobs share a server that is SIGKILLed part-way: the patient one (--retries 40)
    rides through the restart; the impatient one (--retries 0) fails its remaining images
    cleanly and its rerun completes. Both end with every image exactly once, and the same
    pixels for the same custom_id."""
    count, n = 60, 3
    prompts = write_prompts(tmp_path / "p.txt", count)
    server = start_server(lean_repo, tmp_path / "server-1.log")
    restarted = None
    procs = []
    try:
        common = ["-n", n, "--url", server.grpc_url, "--batch-size", 2, "--concurrency", 2,
                  "--timeout", 20]
        out_a, out_b = tmp_path / "patient", tmp_path / "impatient"
        procs.append(popen_cli("generate", prompts, "-o", out_a, *common, "--retries", 40))
        procs.append(popen_cli("generate", prompts, "-o", out_b, *common, "--retries", 0))
        started_and_paused(procs[:2], (out_a, out_b), 8)
        assert sigkill_server(server) == -signal.SIGKILL
        for p in procs:
            os.kill(p.pid, signal.SIGCONT)
        at_kill = len(manifest_lines(out_a))
        assert at_kill < count * n and procs[0].poll() is None, "killed after the job ended"

        rc_b, _, err_b = finish(procs[1], 180)  # gives up while the server is down
        assert rc_b == 1, err_b
        partial = check_output(out_b)
        errors = [json.loads(x) for x in (out_b / "errors.jsonl").read_text().splitlines()]
        failed = {e["custom_id"] for e in errors if e["kind"] == "image"}
        assert failed and not failed & set(partial)
        assert set(partial) | failed == ids_for(count, n)  # each image: done or reported
        print(f"[server kill] {at_kill}/{count * n} done at the kill; --retries 0 job: "
              f"{len(partial)} written, {len(failed)} reported failed, exit {rc_b}")
        assert all("no server answered" in e["reason"] or e["status"] for e in errors)

        # A busy python-backend stub outlives its SIGKILLed server (seen: > 120 s, ~490 MiB)
        # unless TritonServer.stop() reaps the server's process group.
        assert reap_stubs(server) == []
        restarted = start_server(lean_repo, tmp_path / "server-2.log",
                                 ports=server_ports(server))
        # the rerun of the impatient job runs beside the patient one's rest
        procs.append(popen_cli("generate", prompts, "-o", out_b, *common, "--retries", 6))
        rc_a, _, err_a = finish(procs[0], 300)
        assert rc_a == 0, err_a
        done_a = check_output(out_a, ids_for(count, n))
        s = summary(out_a)
        assert s["retries"] >= 1 and s["images_failed"] == 0 and s["images_generated"] == count * n
        print(f"[server kill] --retries 40 job: exit 0, {s['retries']} retries, "
              f"{s['images_generated']} images, 0 failed")

        rc_rerun, _, err_rerun = finish(procs[2], 300)
        assert rc_rerun == 0, err_rerun
        done_b = check_output(out_b, ids_for(count, n))
        assert summary(out_b)["images_skipped_resume"] == len(partial)
        for cid, entry in partial.items():  # finished images were kept, not redone
            assert done_b[cid]["sha256"] == entry["sha256"]
        assert {c: e["pixels_sha256"] for c, e in done_a.items()} == \
            {c: e["pixels_sha256"] for c, e in done_b.items()}
        print(f"[server kill] rerun: skipped {len(partial)}, generated "
              f"{count * n - len(partial)}; both folders pixel-identical")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        if getattr(server, "killed_pid", None) and server.process is not None:
            reap_stubs(server, wait_s=0)
        elif server.process is not None:
            server.stop()
        if restarted is not None:
            assert restarted.stop() == 0


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
        except OSError:
            continue
    return kids


@pytest.mark.triton
def test_a_sigkilled_adgen_serve_takes_its_tritonserver_down(lean_repo, tmp_path):
    """`adgen serve` runs tritonserver in its own session (so Ctrl-C reaches only adgen,
    which forwards it). If adgen itself is SIGKILLed, the server must not live on as an
    orphan holding the ports and ~0.5 GiB."""
    from adgen.serving.jobs.triton_server import port_in_use
    proc, ports = serve_cli(lean_repo, tmp_path / "server.log")
    server_pid = None
    try:
        (server_pid,) = [p for p in _children(proc.pid)  # not the watcher (reaper.py)
                         if os.path.basename(os.readlink(f"/proc/{p}/exe")) == "tritonserver"]
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        wait_for(lambda: not any(_alive(p) for p in session_pids(server_pid)), 60,
                 "tritonserver and its stubs to exit after adgen serve was SIGKILLed")
        assert not any(port_in_use("127.0.0.1", p) for p in ports)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        if server_pid and any(_alive(p) for p in session_pids(server_pid)):
            os.killpg(server_pid, signal.SIGKILL)  # the session this test started


# ----------------------------------------------------------------------------- client

@pytest.mark.triton
def test_client_sigkill_twice_then_rerun_has_no_duplicates(triton, tmp_path):
    """The job is SIGKILLed twice (and a torn manifest line, as a kill mid-write would
    leave, is appended); the third run completes with every image exactly once and
    rewrites none of the images finished before."""
    count, n = 40, 4
    prompts = write_prompts(tmp_path / "p.txt", count, tag="client")
    out = tmp_path / "out"
    args = ["generate", prompts, "-o", out, "-n", n, "--url", triton.grpc_url,
            "--batch-size", 4, "--concurrency", 4]
    seen = 0
    for _ in range(2):
        proc = popen_cli(*args)
        target = seen + 6
        wait_for(lambda: len(manifest_lines(out)) >= target, 120, "the job to make progress")
        proc.send_signal(signal.SIGKILL)
        proc.communicate()
        seen = len(manifest_lines(out))
        assert seen < count * n, "the job was not killed part-way"
        check_output(out, allow_torn=True, killed=True)
    with open(out / "manifest.jsonl", "a", encoding="utf-8") as f:
        f.write('{"custom_id": "line-1-0", "id": "line-1", "pa')  # cut mid-line, no newline
    stale = out / "images" / "line-1" / ".line-1-0-s1.png.k1ll3d.tmp"  # cut mid-PNG
    stale.parent.mkdir(parents=True, exist_ok=True)
    stale.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)
    before = check_output(out, allow_torn=True, killed=True)
    stamps = {cid: os.stat(out / e["path"]).st_mtime_ns for cid, e in before.items()}

    r = run_cli(*args)
    assert r.returncode == 0, r.stderr
    done = check_output(out, ids_for(count, n), allow_torn=True)  # stale temp files gone
    assert not stale.exists()
    torn = [x for x in manifest_lines(out) if not x.startswith("{") or not x.endswith("}")]
    assert '{"custom_id": "line-1-0", "id": "line-1", "pa' in torn  # kept on its own line
    for cid, stamp in stamps.items():
        assert os.stat(out / done[cid]["path"]).st_mtime_ns == stamp, f"{cid} rewritten"
    s = summary(out)
    assert s["images_skipped_resume"] == len(before)
    assert s["images_generated"] == count * n - len(before)
    print(f"[client kill] killed at {seen} manifest lines; rerun skipped {len(before)}, "
          f"generated {s['images_generated']}")
    r = run_cli(*args)
    assert r.returncode == 0 and f"0 images generated, {count * n} already done" in r.stdout


# ----------------------------------------------------------------------------- failover

@pytest.mark.triton
def test_two_urls_one_sigkilled_mid_job_finishes_on_the_other(triton, lean_repo, tmp_path):
    count, n = 80, 4
    prompts = write_prompts(tmp_path / "p.txt", count, tag="failover")
    victim = start_server(lean_repo, tmp_path / "victim.log")
    out = tmp_path / "out"
    proc = None
    try:
        proc = popen_cli("generate", prompts, "-o", out, "-n", n, "--url", victim.grpc_url,
                         "--url", triton.grpc_url, "--batch-size", 2, "--concurrency", 4,
                         "--retries", 10, "--timeout", 20)
        wait_for(lambda: sum(e["url"] == victim.grpc_url for e in manifest(out)) >= 4, 180,
                 "the victim server to answer some requests")
        sigkill_server(victim)
        killed_at = time.time()
        at_kill = len(manifest_lines(out))
        assert at_kill < count * n and proc.poll() is None, "killed after the job ended"
        rc, _, err = finish(proc, 300)
        assert rc == 0, err
        entries = check_output(out, ids_for(count, n))
        by_url = {}
        for e in entries.values():
            by_url[e["url"]] = by_url.get(e["url"], 0) + 1
        assert set(by_url) == {victim.grpc_url, triton.grpc_url}
        from datetime import datetime
        late = [e for e in entries.values()
                if datetime.fromisoformat(e["created_at"]).timestamp() > killed_at + 0.5]
        assert late and all(e["url"] == triton.grpc_url for e in late)
        s = summary(out)
        assert s["images_failed"] == 0 and s["calls_per_url"][victim.grpc_url] >= 1
        print(f"[failover] {at_kill}/{count * n} done at the kill; images per url {by_url}; "
              f"calls {s['calls_per_url']}, retries {s['retries']}")
    finally:
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()
        if getattr(victim, "killed_pid", None):
            assert reap_stubs(victim) == []
        else:
            victim.stop()


@pytest.mark.triton
def test_a_hanging_url_is_set_aside_at_start(triton, tmp_path):
    """A --url whose socket accepts connections and never answers (a frozen host or a
    black-holed route) beside a live one: the readiness probe asks both at once and rests
    the silent one, so the job starts within the probe's grace and never waits on it."""
    count, n = 20, 2
    prompts = write_prompts(tmp_path / "p.txt", count, tag="hang")
    hang = socket.socket()
    hang.bind(("127.0.0.1", 0))
    hang.listen(64)  # the kernel completes handshakes; nobody ever reads or replies
    hung = f"127.0.0.1:{hang.getsockname()[1]}"
    out = tmp_path / "out"
    try:
        t0 = time.monotonic()
        r = run_cli("generate", prompts, "-o", out, "-n", n, "--url", hung, "--url",
                    triton.grpc_url, "--batch-size", 4, "--concurrency", 2, "--timeout", 20,
                    "--retries", 6, timeout=240)
        took = time.monotonic() - t0
    finally:
        hang.close()
    assert r.returncode == 0, r.stderr
    entries = check_output(out, ids_for(count, n))
    assert {e["url"] for e in entries.values()} == {triton.grpc_url}
    s = summary(out)
    assert s["images_failed"] == 0 and s["calls_per_url"][hung] == 0
    assert took < 20, f"{took:.1f}s: the job waited on the hung URL"  # < one --timeout
    print(f"[hanging url] {count * n} images, all from the live server, {took:.1f}s")


def test_a_server_that_freezes_mid_job_times_out_and_the_retries_finish(triton, tmp_path):
    """The server stops answering part-way (SIGSTOP: a frozen host): requests in flight hit
    --timeout, are retried with backoff and succeed once it answers again; every image
    exactly once. The job itself is paused at the freeze so it cannot finish first."""
    count, n = 20, 2
    prompts = write_prompts(tmp_path / "p.txt", count, tag="freeze")
    out = tmp_path / "out"
    proc = popen_cli("generate", prompts, "-o", out, "-n", n, "--url", triton.grpc_url,
                     "--batch-size", 2, "--concurrency", 2, "--timeout", 1.5, "--retries", 8)
    frozen = False
    try:
        started_and_paused([proc], (out,), 4)  # the job stops itself at 4 images (SIGSTOP)
        os.kill(triton.process.pid, signal.SIGSTOP)
        frozen = True
        os.kill(proc.pid, signal.SIGCONT)
        time.sleep(3.5)  # > 2 timeouts: the job's requests in flight give up and retry
        os.kill(triton.process.pid, signal.SIGCONT)
        frozen = False
        rc, _, err = finish(proc, 120)
    finally:
        if frozen:
            os.kill(triton.process.pid, signal.SIGCONT)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert rc == 0, err
    check_output(out, ids_for(count, n))
    s = summary(out)
    assert s["retries"] >= 1 and s["images_failed"] == 0
    print(f"[frozen server] {count * n} images, {s['retries']} retries")


# ----------------------------------------------------------------------------- LLM

@pytest.mark.parametrize("mode", ["down", "hanging"])
def test_llm_endpoint_down_or_hanging_falls_back_and_says_so(expand_env, tmp_path, mode):
    """Connection refused, or a socket that accepts and never answers: expansion falls back
    to the offline expander within the timeout and says so per prompt and in the summary."""
    from adgen.serving.jobs.triton_server import free_port
    briefs, concepts, env = expand_env
    hang = None
    if mode == "hanging":
        hang = socket.socket()
        hang.bind(("127.0.0.1", 0))
        hang.listen(16)  # the kernel completes handshakes; nobody ever reads or replies
        port = hang.getsockname()[1]
    else:
        port = free_port()
    out = tmp_path / "prompts.jsonl"
    try:
        t0 = time.monotonic()
        r = run_cli("expand", briefs, "-o", out, "--llm", "openai", "--model", "m",
                    "--base-url", f"http://127.0.0.1:{port}/v1", "--concepts", concepts,
                    "--timeout", 1, "--max-retries", 1, "--backoff", 0.05, "-q", env=env,
                    timeout=120)
        took = time.monotonic() - t0
    finally:
        if hang is not None:
            hang.close()
    assert r.returncode == 0, r.stderr
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    reason = "timeout" if mode == "hanging" else "connection"
    assert rows and {row["expansion"] for row in rows} == {f"fallback:{reason}"}
    assert {row["brief"] for row in rows} == set(briefs.read_text().split("\n")[:3])
    assert f"{len(rows)} fallback" in r.stdout  # the summary line says so (the rows say why)
    assert took < 60, f"fallback took {took:.0f}s"
    print(f"[llm {mode}] {len(rows)} prompts, all fallback:{reason}, {took:.1f}s, exit 0")


# ----------------------------------------------------------------------------- disk full

def _disk_full_job(model_repo, prompts, out, preexec=None):
    return subprocess.run(
        [sys.executable, "-m", "adgen", "generate", str(prompts), "-o", str(out), "-n", "2",
         "--engine", "local", "--model", str(model_repo), "--batch-size", "4", "--threads", "1",
         "--no-progress"],
        capture_output=True, text=True, env=cli_env(), timeout=300, preexec_fn=preexec)


def _check_disk_full_error(r, out):
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: writing to {out} failed: "), lines
    assert "rerun the same command to resume" in lines[0] and "Traceback" not in r.stderr


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 1 MiB tmpfs (we run as root here); skipped where mounting is not permitted - the
    RLIMIT_FSIZE test below covers the same code path without privileges."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0755", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()}); see the RLIMIT test")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_on_a_small_tmpfs_is_one_clear_error_and_resumes(model_repo, small_tmpfs,
                                                                     tmp_path):
    count, n = 120, 2  # ~240 PNGs of ~10 KB: far more than 1 MiB
    prompts = write_prompts(tmp_path / "p.txt", count, tag="disk")
    out = small_tmpfs / "out"
    r = _disk_full_job(model_repo, prompts, out)
    _check_disk_full_error(r, out)
    assert "No space left on device" in r.stderr
    partial = check_output(out)
    assert 0 < len(partial) < count * n
    print(f"[tmpfs full] {len(partial)}/{count * n} written before ENOSPC: {r.stderr.strip()}")
    # free space (grow the tmpfs) and rerun: completes, nothing written twice
    subprocess.run(["mount", "-o", "remount,size=64m", str(small_tmpfs)], check=True)
    r = _disk_full_job(model_repo, prompts, out)
    assert r.returncode == 0, r.stderr
    done = check_output(out, ids_for(count, n))
    assert all(done[c]["sha256"] == e["sha256"] for c, e in partial.items())
    assert summary(out)["images_skipped_resume"] == len(partial)


def test_file_size_limit_mid_job_is_one_clear_error_and_resumes(model_repo, tmp_path):
    """Without privileges: RLIMIT_FSIZE in the child caps every file it writes, so the
    manifest append fails part-way (EFBIG, Python ignores SIGXFSZ) like a full disk."""
    count, n = 60, 2
    prompts = write_prompts(tmp_path / "p.txt", count, tag="fsize")
    out = tmp_path / "out"
    limit = 40_000  # the manifest reaches this after ~40 lines; PNGs stay far below it

    def cap():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    r = _disk_full_job(model_repo, prompts, out, preexec=cap)
    _check_disk_full_error(r, out)
    assert "File too large" in r.stderr
    partial = check_output(out)  # the failed append was cut back: no torn line
    assert 0 < len(partial) < count * n
    print(f"[RLIMIT_FSIZE] {len(partial)}/{count * n} written before EFBIG: {r.stderr.strip()}")
    assert (out / "manifest.jsonl").read_bytes().endswith(b"\n")
    r = _disk_full_job(model_repo, prompts, out)
    assert r.returncode == 0, r.stderr
    check_output(out, ids_for(count, n))
    assert summary(out)["images_skipped_resume"] == len(partial)
