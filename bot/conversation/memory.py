"""Giving memory back between bursts of calls.

A call allocates many small objects (frames, queues, tasks). When it ends CPython frees them,
but glibc keeps the freed arenas for reuse, so after a burst of calls the process stays at
its peak RSS (measured: +13 to +67 % over the pre-load level). When the last call ends we
collect the cyclic garbage and ask glibc to return free pages to the system.

glibc also gives each thread that allocates its own arena (up to 8 per core), and the VAD
and worker threads each keep one: capping them at two keeps freed memory in fewer places.

Python's own small-object allocator (pymalloc) is a third place: it returns a 1 MiB arena
only when every object in it is gone, so a few long-lived objects made during a burst keep
many arenas (measured after 50 calls: 58 -> 79 arenas for the same bytes, RSS +14 %). The
server therefore runs with ``PYTHONMALLOC=malloc``, which hands Python's objects to glibc,
whose free pages the trim returns: +5 % after 50 calls, at no CPU cost measured (1.4 % of a
core per call against 1.5 %).
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import os
import sys
import time
from collections.abc import Mapping

from loguru import logger

M_ARENA_MAX = -8  # glibc's mallopt parameter number
MALLOC_ARENAS = 2


def _glibc_function(name: str, argtypes: list, restype=ctypes.c_int):
    """A glibc function, or None (musl, macOS): then the process just keeps its memory."""
    path = ctypes.util.find_library("c")
    try:
        func = getattr(ctypes.CDLL(path), name) if path else None
    except (OSError, AttributeError):
        return None
    if func is not None:
        func.argtypes, func.restype = argtypes, restype
    return func


_malloc_trim = _glibc_function("malloc_trim", [ctypes.c_size_t])
_mallopt = _glibc_function("mallopt", [ctypes.c_int, ctypes.c_int])


def limit_malloc_arenas() -> None:
    """Cap glibc's arenas (call before threads start; like MALLOC_ARENA_MAX=2)."""
    if _mallopt is not None:
        _mallopt(M_ARENA_MAX, MALLOC_ARENAS)


def can_trim() -> bool:
    """Free pages can be handed back (glibc); elsewhere only the collection runs."""
    return _malloc_trim is not None


def system_malloc_argv(environ: Mapping[str, str] = os.environ) -> list[str] | None:
    """The command that runs this process again with ``PYTHONMALLOC=malloc``; None if
    PYTHONMALLOC is set already (whatever its value: the operator's choice) or the trim
    that makes it worth it is not there."""
    if "PYTHONMALLOC" in environ or not can_trim():
        return None
    return [sys.executable, *sys.orig_argv[1:]]


def use_system_malloc() -> None:
    """Re-run the process on glibc's allocator (see the module's docstring). Call it first
    thing: the process is replaced (same pid, same arguments), so nothing done before it
    lasts."""
    argv = system_malloc_argv()
    if argv is not None:
        os.environ["PYTHONMALLOC"] = "malloc"
        os.execv(sys.executable, argv)


# Python's full collection walks every object the calls hold (measured at 50 calls: 70 to
# 130 ms with the event loop stopped, a stutter a caller hears). By default one is due every
# 10 middle-generation collections once the old objects have grown by a quarter, which a
# ramp of new calls does again and again. Every 100 keeps it to a few minutes apart under
# full load, so the cyclic garbage a finished call leaves (~1 400 objects) waits a little
# longer; the collection when the last call ends still clears it.
FULL_COLLECTION_EVERY = 100


def collect_fully_less_often() -> None:
    """Space out the garbage collector's full collections (``FULL_COLLECTION_EVERY``)."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, FULL_COLLECTION_EVERY)


def freeze_startup_heap() -> None:
    """Move what start-up loaded (models, modules) out of the collector's sight: every full
    collection during calls would otherwise walk it again."""
    gc.collect()
    gc.freeze()


async def release_memory() -> float:
    """Collect garbage, then return free heap pages to the system; seconds it took."""
    started = time.monotonic()
    gc.collect()
    if _malloc_trim is not None:
        # ctypes drops the GIL for the call; in a thread the loop stays free meanwhile.
        await asyncio.to_thread(_malloc_trim, 0)
    took = time.monotonic() - started
    logger.debug(f"released memory after the last call ended ({took * 1000:.0f} ms)")
    return took
