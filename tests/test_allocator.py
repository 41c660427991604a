"""trainers/allocator.py: memory a step frees stays in the heap for the next step."""

import ctypes
import ctypes.util
import subprocess
import sys

import pytest

# In a fresh interpreter: free a 16 MiB tensor, then report the heap's free bytes (glibc's mallinfo2).
FREED_IN_HEAP = """
import ctypes, sys, torch
from trainers import allocator
class MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL("libc.so.6")
libc.mallinfo2.restype = MallInfo2
if sys.argv[1] == "keep":
    assert allocator.keep_freed_memory()
block = torch.ones(4 * 2**20)  # 16 MiB, touched
del block
print(libc.mallinfo2().fordblks)
"""


def glibc_has_mallinfo2() -> bool:
    try:
        return hasattr(ctypes.CDLL(ctypes.util.find_library("c")), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not glibc_has_mallinfo2(), reason="glibc (2.33 or later) only")
def test_freed_activations_stay_in_the_heap_only_when_kept():
    def free_bytes(mode: str) -> int:
        done = subprocess.run([sys.executable, "-c", FREED_IN_HEAP, mode], capture_output=True, text=True, check=True)
        return int(done.stdout.split()[-1])

    block = 16 * 2**20
    assert free_bytes("default") < block, "by default glibc unmaps a freed 16 MiB block at once"
    assert free_bytes("keep") >= block, "kept: the freed block stays in the heap, ready for the next step"

