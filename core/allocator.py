"""The memory allocator a CPU trainer process starts with: tcmalloc where it is installed, glibc's malloc otherwise.

A training step frees and allocates the same large tensors again and again (activations, gradients). glibc hands
blocks above its mmap threshold (32 MiB at most) back to the kernel at each free, so each step maps them again and
pays a page fault per 4 KiB page; tcmalloc keeps them for reuse. PyTorch's CPU performance guides recommend it, and
on this project's 2-core machine it made a MiniLM-L6 step about 7 % faster (`bench/train_throughput.py`). It is a
Debian package (`libtcmalloc-minimal4`); without it a run starts with the system allocator and its log says so.
"""

from __future__ import annotations

import ctypes.util
import os
from collections.abc import Mapping
from pathlib import Path

ALLOCATOR_ENV = "WORKBENCH_ALLOCATOR"  # "system" keeps glibc's malloc for every run
TCMALLOC_NAMES = ("tcmalloc_minimal", "tcmalloc")
# tcmalloc prints a line for each allocation above 1 GiB by default; a model's weights can be that large.
QUIET_LARGE_ALLOCATIONS = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}


def tcmalloc_library() -> str | None:
    """tcmalloc's shared library name as the dynamic loader finds it ("libtcmalloc_minimal.so.4"), or None."""
    for name in TCMALLOC_NAMES:
        if found := ctypes.util.find_library(name):
            return found
    return None


def allocator_environment(device: str, current: Mapping[str, str] = os.environ) -> dict[str, str]:
    """What to add to a trainer process's environment so that it allocates with tcmalloc (CPU runs only: a GPU run's
    tensors live in CUDA's own caching allocator)."""
    preloaded = current.get("LD_PRELOAD", "")
    if device != "cpu" or current.get(ALLOCATOR_ENV) == "system" or "tcmalloc" in preloaded:
        return {}
    library = tcmalloc_library()
    if library is None:
        return {}
    return {"LD_PRELOAD": " ".join(filter(None, [library, preloaded])), **QUIET_LARGE_ALLOCATIONS}


def allocator_in_use() -> str:
    """The allocator this process runs with, in words, for its log and summary: whether tcmalloc is mapped into it (a
    preload the loader could not find is skipped with a warning, so the environment alone does not tell)."""
    try:
        maps = Path("/proc/self/maps").read_text()
    except OSError:
        maps = os.environ.get("LD_PRELOAD", "")  # no /proc (not Linux): what was asked for
    return "tcmalloc" if "tcmalloc" in maps else "system malloc"


def allocator_sentence(allocator: str) -> str:
    """The CPU trainer's log line about its allocator; without tcmalloc it names the package that brings it."""
    if allocator == "tcmalloc":
        return "Memory allocator: tcmalloc (fewer page faults per step than the system malloc)."
    return (
        "Memory allocator: the system malloc. Install tcmalloc (Debian/Ubuntu: apt-get install libtcmalloc-minimal4) "
        "and later CPU runs start with it: about 7 % faster steps here."
    )
