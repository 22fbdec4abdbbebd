"""Memory policy for batch commands (merge, eval): garbage collection and malloc's reuse of memory.

- What the imports built is never garbage. Importing torch (and transformers) creates on the
  order of a million objects that live until the process exits. Python's cyclic collector walks
  every tracked object at each full collection, and a merge creates enough tensors, futures and
  dicts to trigger many: `perf` put the collector at 9% of a sweep of 7 SLERP merges of two 135M
  models. `gc.freeze()` moves the objects alive now to a permanent generation that later
  collections skip; cycles made afterwards are still collected.
- Freed tensor memory is kept for the next tensor. By default glibc hands blocks above a
  threshold (128 KiB, raised to the largest one freed so far) back to the kernel, and trims the
  free top of each thread's heap above twice that. A merge allocates and frees a few MB per tensor
  in every worker thread, so the same memory was unmapped and faulted in, zero-filled, again and
  again: 750k page faults and 3 s of system time for a sweep of 7 merges of two 135M models.
  `reuse_freed_memory` raises both thresholds (https://man7.org/linux/man-pages/man3/mallopt.3.html).
"""

from __future__ import annotations

import ctypes
import gc
import importlib
import os
import sys
from collections.abc import Iterable

M_TRIM_THRESHOLD = -1  # <malloc.h>
M_MMAP_THRESHOLD = -3
# glibc's ceiling for M_MMAP_THRESHOLD on 64-bit (DEFAULT_MMAP_THRESHOLD_MAX): larger blocks, an
# embedding matrix, are always mapped and unmapped.
MMAP_THRESHOLD_MAX = 32 << 20
KEEP_FREE_BYTES = (1 << 31) - 1  # mallopt takes an int: the free top of a heap is never trimmed
USER_MALLOC_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def freeze_what_imports_built(modules: Iterable[str] = ()) -> None:
    """Import `modules` (those the command is about to use), then exempt every object alive now
    from future collections. The imports run with the collector off: what they build lives on."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        for name in modules:
            importlib.import_module(name)
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def reuse_freed_memory() -> bool:
    """Ask glibc's malloc to keep freed blocks of up to 32 MiB for reuse, in every thread's heap,
    rather than return them to the kernel. True when the setting took effect.

    The process's resident size stays at its peak instead of shrinking between tensors, which is
    what a batch command that exits at the end wants. Left alone off glibc (macOS, musl) and where
    the user set malloc's thresholds through the environment.
    """
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if sys.platform != "linux" or "threshold" in tunables:
        return False
    if any(name in os.environ for name in USER_MALLOC_SETTINGS):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX)) and bool(
        mallopt(M_TRIM_THRESHOLD, KEEP_FREE_BYTES)
    )
