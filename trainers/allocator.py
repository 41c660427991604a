"""Host memory for training on a CPU: keep what a step frees for the next step.

glibc's malloc serves a large request (above a threshold that starts at 128 KiB) with a
fresh mapping and hands it back to the kernel on free, and it trims the heap's free top
as soon as it passes 128 KiB. A training step allocates and frees the same activations,
gradients and logits every time, so on a CPU each step faults all of those pages in
again. That costs system time in proportion to what is alive at once: the twin's own
autograd graph (input encoder, Q-Former) is alive through the frozen LLM's forward and
backward, so without this the LLM's part of a twin step runs slower than the same
forward and backward alone (bench/train_throughput.py: its `llm_only` variant).

`keep_freed_memory()` serves requests up to MMAP_THRESHOLD from the heap and keeps up to
TRIM_THRESHOLD of freed memory there for reuse. The process's peak memory is the same;
memory it freed is not returned to the system until it exits or the free part passes
TRIM_THRESHOLD. Only glibc has these settings: elsewhere this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts on 64-bit systems
TRIM_THRESHOLD = 2**30


def keep_freed_memory() -> bool:
    """-> True when glibc took both settings (for this whole process), False where there is no glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        mallopt, _ = libc.mallopt, libc.gnu_get_libc_version  # glibc's; musl has a mallopt that ignores it
    except (OSError, AttributeError, TypeError):
        return False
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
