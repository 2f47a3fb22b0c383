"""adgen.memory: a freed large buffer is reused instead of faulted in again."""
from __future__ import annotations

import subprocess
import sys

# Ten times: 8 buffers of 6 MB (a 256 px response of 32 images each, as a job holds several
# in flight) alive at once, every page written, then all freed; prints the minor page faults
# of the last ten rounds. With `keep` the allocator setting is applied first.
PROBE = """
import resource, sys
import numpy as np
from adgen.memory import keep_freed_memory
applied = keep_freed_memory() if sys.argv[1] == "keep" else None
def rounds():
    for _ in range(10):
        bufs = [np.ones(6 << 20, np.uint8) for _ in range(8)]
        del bufs
rounds()  # the first ones fault in either way
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
rounds()
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults(mode: str) -> tuple[str, int]:
    out = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True,
                         check=True).stdout.split()
    return out[0], int(out[1])


def test_keep_freed_memory_stops_refaulting_a_reused_buffer():
    applied, kept = _faults("keep")
    _, default = _faults("default")
    if applied == "False":  # not glibc: nothing was changed, and the function says so
        assert kept > 0
        return
    assert applied == "True"
    # default: the heap's free top (48 MB) is past glibc's adapted trim threshold and goes
    # back to the system each round, and every buffer faults in again (~500 faults each
    # here with 4 KiB pages; a few with transparent huge pages); kept: the same memory
    assert default >= 10 * 8
    assert kept < default / 20
