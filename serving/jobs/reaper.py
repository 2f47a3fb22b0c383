"""Nothing left behind: python-backend stubs and shared memory of dead Triton servers.

A busy `triton_python_backend_stub` does not notice that its tritonserver died (SIGKILL,
OOM killer) and lives on, re-parented to init, holding 200-500 MiB; SIGKILLed itself, it
leaves its `/dev/shm/triton_python_backend_shm_region_*` segment (>= 1 MiB). Two defences:

- `watch` (the watcher): TritonServer.start() launches this file as a small stdlib-only
  process in its own session, next to the server. It holds pidfds of the owner (the process
  that started the server: `adgen serve`, a test) and of the server. When the server exits,
  or the owner dies and the server has not shut down within `grace_s` of its
  PR_SET_PDEATHSIG SIGTERM, it SIGKILLs the server's process group (the server runs in its
  own session, and its stubs inherit that group), then unlinks the segments it saw that
  group map, once no live process maps them. Its own session keeps it out of the group and
  out of a terminal's Ctrl-C, so it survives `kill -9` of adgen and tritonserver together.
- `clean_leftovers` (startup): for what an earlier crash left while no watcher ran (the
  watcher itself killed, a server started by an older adgen): SIGKILLs stubs whose exe lies
  in adgen's backend folder and whose parent is no longer a tritonserver, then unlinks
  python-backend segments that no live process maps (checked twice, 0.2 s apart, so a server
  between creating and mapping a segment is never hit). A live server maps every segment of
  its stubs, so nothing of a live server - adgen's or anyone's - is touched.

Linux only (pidfds, /proc); elsewhere both do nothing. Stdlib only: the watcher starts with
`python -I -S` in ~20 ms and ~10 MiB.
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

STUB = "triton_python_backend_stub"
SERVER = "tritonserver"
SHM_DIR = Path("/dev/shm")
SHM_PREFIX = "triton_python_backend_shm_region_"
_SHM_NEEDLE = str(SHM_DIR / SHM_PREFIX).encode()


def supported() -> bool:
    return sys.platform.startswith("linux") and hasattr(os, "pidfd_open") \
        and Path("/proc/self/stat").exists()


# ----------------------------------------------------------------------------- /proc

def pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def _stat(pid: int) -> list[str] | None:
    """Fields after the command name: [0] state, [1] ppid, [2] pgrp, ... [19] start time."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].decode().split()
    except (OSError, IndexError):
        return None


def start_time(pid: int) -> int | None:
    """Clock ticks after boot: with the pid, a process identity that survives pid reuse."""
    st = _stat(pid)
    return int(st[19]) if st else None


def alive(pid: int) -> bool:
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def exe(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/exe").removesuffix(" (deleted)")
    except OSError:
        return None


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0")[:-1]]
    except OSError:
        return []


def group(pgid: int) -> list[int]:
    """Live processes of process group `pgid`."""
    out = []
    for pid in pids():
        st = _stat(pid)
        if st and int(st[2]) == pgid and st[0] not in ("Z", "X"):
            out.append(pid)
    return out


def rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def segments_mapped_by(pid: int) -> set[str]:
    """Names of python-backend segments that process `pid` maps."""
    try:
        with open(f"/proc/{pid}/maps", "rb") as f:
            data = f.read()
    except OSError:
        return set()
    names, at = set(), data.find(_SHM_NEEDLE)
    while at >= 0:
        end = data.find(b"\n", at)
        path = data[at:end if end >= 0 else len(data)].decode(errors="replace")
        names.add(Path(path.removesuffix(" (deleted)")).name)
        at = data.find(_SHM_NEEDLE, at + 1 if end < 0 else end)
    return names


def mapped_segments() -> set[str]:
    names: set[str] = set()
    for pid in pids():
        names |= segments_mapped_by(pid)
    return names


def stub_segment(pid: int) -> str | None:
    """A stub's own region, from its command line (argv[2]) - it maps it too."""
    args = cmdline(pid)
    return args[2] if len(args) > 2 and args[2].startswith(SHM_PREFIX) else None


def segment_bytes(name: str) -> int:
    try:
        return (SHM_DIR / name).stat().st_blocks * 512  # memory held, not the sparse size
    except OSError:
        return 0


def unlink_unmapped(names, settle_s: float = 0.2) -> tuple[int, int]:
    """Unlinks the segments among `names` that no live process maps, in two scans `settle_s`
    apart (a server maps a segment right after creating it). Returns (count, bytes)."""
    names = {n for n in names if n.startswith(SHM_PREFIX) and "/" not in n
             and (SHM_DIR / n).is_file()}
    if not names:
        return 0, 0
    candidates = names - mapped_segments()
    if candidates and settle_s:
        time.sleep(settle_s)
        candidates -= mapped_segments()
    count = freed = 0
    for name in sorted(candidates):
        size = segment_bytes(name)
        try:
            os.unlink(SHM_DIR / name)
        except OSError:
            continue
        count, freed = count + 1, freed + size
    return count, freed


# ----------------------------------------------------------------------------- startup

@dataclass(frozen=True)
class Freed:
    stubs: int = 0
    stub_bytes: int = 0
    segments: int = 0
    segment_bytes: int = 0

    def __bool__(self) -> bool:
        return bool(self.stubs or self.segments)

    def line(self) -> str:
        return (f"freed what crashed Triton servers left behind: {self.stubs} python-backend "
                f"stub(s) ({self.stub_bytes / 2**20:.0f} MiB resident), {self.segments} "
                f"shared-memory segment(s) ({self.segment_bytes / 2**20:.1f} MiB)")


def orphan_stubs(backend_root: str | Path) -> list[int]:
    """Stubs run from under `backend_root` whose parent is not a live tritonserver."""
    root = os.path.realpath(backend_root) + os.sep
    found = []
    for pid in pids():
        path = exe(pid)
        if not path or os.path.basename(path) != STUB or not path.startswith(root):
            continue
        st = _stat(pid)
        if st is None or st[0] in ("Z", "X"):
            continue
        parent = int(st[1])
        if os.path.basename(exe(parent) or "") == SERVER and alive(parent):
            continue  # a live server's stub
        found.append(pid)
    return found


def _kill(pid: int, started: int | None) -> bool:
    """SIGKILL through a pidfd, after checking the pid still names the same process."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return False
    try:
        if start_time(pid) != started:
            return False
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def clean_leftovers(backend_root: str | Path, wait_s: float = 5.0) -> Freed:
    """Startup sweep (see the module doc); never raises."""
    if not supported():
        return Freed()
    try:
        stubs = {pid: (start_time(pid), rss(pid), stub_segment(pid))
                 for pid in orphan_stubs(backend_root)}
        killed = [pid for pid, (started, _, _) in stubs.items() if _kill(pid, started)]
        deadline = time.monotonic() + wait_s
        while any(alive(p) and start_time(p) == stubs[p][0] for p in killed) \
                and time.monotonic() < deadline:
            time.sleep(0.05)
        names = [n.name for n in SHM_DIR.glob(SHM_PREFIX + "*")] if SHM_DIR.is_dir() else []
        count, freed = unlink_unmapped(names)
        return Freed(len(killed), sum(stubs[p][1] for p in killed), count, freed)
    except OSError:
        return Freed()


# ----------------------------------------------------------------------------- watcher

def watcher_command(owner: int, server: int, grace_s: float = 5.0) -> list[str]:
    return [sys.executable, "-I", "-S", str(Path(__file__).resolve()), "watch",
            "--owner", str(owner), "--owner-start", str(start_time(owner)),
            "--server", str(server), "--server-start", str(start_time(server)),
            "--grace", str(grace_s)]


def _pidfd(pid: int, started: int) -> int | None:
    """A pidfd for (pid, start time), or None when that process is already gone."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    if start_time(pid) != started:
        os.close(fd)
        return None
    return fd


def _exited(fd: int | None, timeout_s: float) -> bool:
    if fd is None:
        return True
    return bool(select.select([fd], [], [], timeout_s)[0])


def watch(owner: int, owner_start: int, server: int, server_start: int, grace_s: float,
          scan_s: float = 2.0) -> str:
    """Runs until the server is gone (see the module doc); returns what it did."""
    owner_fd, server_fd = _pidfd(owner, owner_start), _pidfd(server, server_start)
    seen: set[str] = set()
    while server_fd is not None:
        seen |= segments_mapped_by(server)
        ready = select.select([fd for fd in (owner_fd, server_fd) if fd is not None], [], [],
                              scan_s)[0]
        if server_fd in ready:
            break
        if owner_fd is None or owner_fd in ready:  # owner gone: the server got SIGTERM
            _exited(server_fd, grace_s)
            break
    # Stubs still alive name their segments; then the whole group goes at once.
    stubs = [p for p in group(server) if p != server]
    seen |= {s for p in stubs for s in segments_mapped_by(p) | {stub_segment(p)} if s}
    freed_rss = sum(rss(p) for p in stubs)
    deadline = time.monotonic() + 10.0
    while time.monotonic() < deadline:
        try:
            os.killpg(server, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            break
        if not group(server):
            break
        time.sleep(0.05)
    count, freed = unlink_unmapped(seen)
    if not stubs and not count:
        return ""  # a clean shutdown: the server stopped its stubs and unlinked their memory
    return (f"adgen watcher: tritonserver {server} gone; SIGKILLed its group "
            f"({len(stubs)} stub(s), {freed_rss / 2**20:.0f} MiB), unlinked {count} "
            f"shared-memory segment(s) ({freed / 2**20:.1f} MiB)")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="reaper.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("watch")
    for name in ("--owner", "--owner-start", "--server", "--server-start"):
        w.add_argument(name, type=int, required=True)
    w.add_argument("--grace", type=float, default=5.0)
    c = sub.add_parser("clean")
    c.add_argument("backend_root")
    args = ap.parse_args(argv)
    if args.cmd == "clean":
        freed = clean_leftovers(args.backend_root)
        print(freed.line() if freed else "nothing to free")
        return 0
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is the owner's job
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    if not supported():
        return 0
    said = watch(args.owner, args.owner_start, args.server, args.server_start, args.grace)
    if said:
        print(said, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
