"""The board-side TVM helpers that are not covered through artifacts (``test_artifact``, ``test_runner``)."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import tvm.runtime  # registers runtime.NumThreads (thread_count(None) imports nothing)
import tvm_ffi
from edgevit.runtime.tvm_runtime import thread_count
with thread_count(None):
    pass
threads = tvm_ffi.get_global_func("runtime.NumThreads")
before = int(threads())
with thread_count(1):
    inside = int(threads())
print(before, inside, int(threads()))
"""


def test_thread_count_sets_and_restores_the_pool():
    # A process of its own: the pool cannot grow past the TVM_NUM_THREADS it started with (tests pin 1).
    out = subprocess.run([sys.executable, "-c", SCRIPT], env={**os.environ, "TVM_NUM_THREADS": "2"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["2", "1", "2"]
