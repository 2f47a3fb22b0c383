"""`adgen serve` as a user runs it: ready banner, SIGINT/SIGTERM -> clean stop, clear errors."""
import signal
import subprocess
import sys
import time

import pytest

pytestmark = pytest.mark.triton


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_serve_prints_endpoints_and_stops_cleanly_on_signal(lean_repo, sig):
    from adgen.serving.jobs.triton_server import free_port, port_in_use
    ports = [free_port() for _ in range(3)]
    proc = subprocess.Popen(
        [sys.executable, "-m", "adgen", "serve", "--repository", str(lean_repo),
         "--no-build", "--grpc-port", str(ports[0]), "--http-port", str(ports[1]),
         "--metrics-port", str(ports[2])],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(line)
        if "Ctrl-C stops the server" in line:
            break
    text = "".join(lines)
    assert f"gRPC     127.0.0.1:{ports[0]}" in text, text
    assert f"http://127.0.0.1:{ports[1]}" in text and f"127.0.0.1:{ports[2]}/metrics" in text
    assert port_in_use("127.0.0.1", ports[0])
    proc.send_signal(sig)
    rest, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, rest
    assert "tritonserver stopped (exit code 0)" in rest
    assert not any(port_in_use("127.0.0.1", p) for p in ports)


def test_missing_binary_is_one_clear_error(monkeypatch, tmp_path):
    import adgen.serving.jobs.triton_server as ts
    monkeypatch.setattr(ts, "pytriton_dir", lambda: tmp_path)
    with pytest.raises(ts.ServerError, match="tritonserver binary missing"):
        ts.server_binary()


def test_serve_dry_run_shows_loopback_binding(capsys):
    from adgen.cli import main
    assert main(["serve", "--dry-run", "--grpc-port", "9101"]) == 0
    out = capsys.readouterr().out
    assert "--grpc-address=127.0.0.1" in out and "--grpc-port=9101" in out


def test_free_port_never_hands_out_the_same_port_twice(monkeypatch):
    """Three servers' worth of ports in a row must differ even when the kernel repeats one."""
    import socket

    from adgen.serving.jobs import triton_server
    real = socket.socket

    class Repeating(real):  # the kernel handing out 50000 twice, then 50001
        calls = 0

        def getsockname(self):
            Repeating.calls += 1
            return ("127.0.0.1", 50000 if Repeating.calls <= 2 else 50001)

    monkeypatch.setattr(triton_server, "_HANDED_OUT", set())
    monkeypatch.setattr(triton_server.socket, "socket", Repeating)
    assert [triton_server.free_port(), triton_server.free_port()] == [50000, 50001]
