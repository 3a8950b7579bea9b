"""Allocator settings that make the large, short-lived tensors of SAM inference cheap on Linux."""

import ctypes
import ctypes.util
import os
import sys

# glibc mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
RETAINED_BYTES = 256 << 20
_tuned = False


def tune_allocator() -> bool:
    """Let glibc keep up to 256 MiB of freed memory for reuse. Returns whether it applied.

    By default glibc serves blocks over 32 MiB with fresh pages from the kernel and hands the
    top of its heap back on free, so every image-sized tensor of the mask decoder and mask
    upscaling starts with a page fault per 4 KiB: 64 prompts took 26 ms per prompt instead of
    15. Raising the mmap and trim thresholds (mallopt) keeps those pages in the process.
    A no-op off glibc, after the first call, or when SEGANY_TUNE_MALLOC=0.
    """
    global _tuned
    if _tuned or not sys.platform.startswith("linux") or os.environ.get("SEGANY_TUNE_MALLOC") == "0":
        return _tuned
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return False
    _tuned = bool(mallopt(_M_MMAP_THRESHOLD, RETAINED_BYTES)) and bool(mallopt(_M_TRIM_THRESHOLD, RETAINED_BYTES))
    return _tuned
