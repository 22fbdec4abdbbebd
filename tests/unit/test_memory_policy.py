"""memory_policy: objects alive at the freeze are skipped by later collections, cycles made
afterwards are still collected; with reuse_freed_memory, blocks a thread frees are reused without
new page faults."""

from __future__ import annotations

import gc
import os
import platform
import subprocess
import sys
import textwrap
import weakref
from pathlib import Path

import pytest

from alloylm.memory_policy import freeze_what_imports_built


class _Node:
    pass


def _cycle() -> weakref.ref:
    node = _Node()
    node.self = node
    return weakref.ref(node)


def test_objects_alive_at_the_call_are_frozen_and_new_cycles_still_collected():
    gc.disable()  # no collection between making the cycle and freezing it
    try:
        before = _cycle()  # unreachable but uncollected: a freeze keeps it
        frozen_before = gc.get_freeze_count()
        freeze_what_imports_built(["json.decoder"])
        assert gc.isenabled() is False  # the caller's setting is left as it was
        gc.enable()
        assert gc.get_freeze_count() > frozen_before
        gc.collect()
        assert before() is not None
        after = _cycle()
        gc.collect()
        assert after() is None
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()


# A worker thread allocates, touches and frees five blocks of 1-4 MiB, twelve times (the pattern
# of a merge's worker: inputs, float32 copies, results); prints the page faults of the last ten.
FAULTS_OF_REPEATED_BLOCKS = textwrap.dedent(
    """
    import ctypes, resource, sys, threading
    from alloylm.memory_policy import reuse_freed_memory
    if sys.argv[1] == "on":
        assert reuse_freed_memory(), "mallopt refused the setting"
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    sizes = [n << 20 for n in (3, 2, 3, 1, 4)]
    counts = []
    def work():
        for round in range(12):
            if round == 2:
                counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
            blocks = [libc.malloc(size) for size in sizes]
            for block, size in zip(blocks, sizes):
                libc.memset(block, 1, size)
            for block in blocks:
                libc.free(block)
        counts.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
    print(counts[1] - counts[0])
    """
)


def _faults(setting: str) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MALLOC_", "GLIBC_TUNABLES"))}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2] / "src")
    out = subprocess.run(
        [sys.executable, "-c", FAULTS_OF_REPEATED_BLOCKS, setting],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return int(out.stdout.strip())


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's mallopt")
@pytest.mark.timeout(120)
def test_freed_blocks_are_reused_without_new_page_faults():
    blocks_pages = (13 << 20) // 4096  # what one round touches
    assert _faults("off") > 5 * blocks_pages  # glibc's default: memory handed back, faulted again
    assert _faults("on") < blocks_pages // 4
