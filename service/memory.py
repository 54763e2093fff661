"""Give freed memory back to the OS once the server goes idle.

Under many concurrent clients a worker holds hundreds of request bodies, decoded images and
answers at once, allocated from several glibc malloc arenas. Freed, that memory mostly stays
in the arenas (fragmented, or below the top of a heap), so the worker's RSS stays at its
high-water mark: +491 MB after 600 clients in ``bench/service_soak.py``, flat afterwards (not
a leak); with what this module does, +304 MB (``bench/records/cpu_2026-12-02/soak/``). Most of
that rest was live: BentoML's request timeout kept each request's tracing span for 120 s after
its answer (fixed by ``service/timeout.py``). ``malloc_trim(0)`` returns the free pages of every
arena to the kernel. It costs a few milliseconds and takes the arena locks, so it runs only
when nothing has arrived for ``idle_s`` seconds and nothing is in flight, once per idle spell.
Large buffers (request bodies, decoded images) are kept out of the heaps altogether: see
``pin_mmap_threshold``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import threading
from collections.abc import Callable
from functools import cache

logger = logging.getLogger("vision.service")


@cache
def _libc():
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number (malloc.h)


def pin_mmap_threshold(kib: int) -> bool:
    """Serve allocations of ``kib`` KiB and more from their own mmap, returned to the OS as
    soon as they are freed. glibc's default threshold starts at 128 KiB but rises to the size
    of every mmap-ed block freed (up to 32 MiB), so after the first freed request body or
    decoded image all later ones come from the heap, where they fragment it; setting the
    threshold turns that adjustment off. False when the C library has no ``mallopt``."""
    fn = getattr(_libc(), "mallopt", None)
    return bool(fn(M_MMAP_THRESHOLD, kib * 1024)) if fn is not None and kib > 0 else False


def mmap_threshold_kib(env: dict, torch_on_cpu: bool) -> int:
    """The threshold to pin: ``VISION_MMAP_THRESHOLD_KB`` when set (0: glibc's sliding one);
    otherwise 128 KiB, unless a served model runs torch on the CPU. torch takes its CPU
    activations from malloc, so with the threshold pinned every activation of 128 KiB or more
    is a fresh mmap, faulted in and cleared page by page: the eager FCOS-Lite0 detector's
    inference took 42–57 ms in the server against 22 ms without (perf: 27 % of the time in
    the kernel). ONNX Runtime and OpenVINO keep their own buffers, and CUDA's live on the GPU."""
    if env.get("VISION_MMAP_THRESHOLD_KB"):
        return int(env["VISION_MMAP_THRESHOLD_KB"])
    return 0 if torch_on_cpu else 128


def malloc_trim() -> bool:
    """glibc's ``malloc_trim(0)``: True when memory was given back; False when nothing could
    be, or the C library has no such call (musl, macOS)."""
    fn = getattr(_libc(), "malloc_trim", None)
    return bool(fn(0)) if fn is not None else False


class IdleTrim:
    """Calls ``trim`` once per idle spell: no new request for ``idle_s`` seconds and none in
    flight. ``seen()`` is called for every request (by the request guard); ``in_flight`` is
    set by whoever counts requests. ``idle_s <= 0`` turns it off."""

    def __init__(self, idle_s: float = 2.0, trim: Callable[[], bool] = malloc_trim) -> None:
        self.idle_s, self.trim = idle_s, trim
        self.in_flight: Callable[[], int] = lambda: 0
        self.requests = 0
        self.trims = 0
        self._looked = 0  # request count at the last look
        self._trimmed = 0  # request count at the last trim
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()

    @classmethod
    def from_env(cls) -> IdleTrim:
        """``VISION_TRIM_IDLE_S``: idle seconds before memory is given back (default 2; 0: off)."""
        return cls(float(os.environ.get("VISION_TRIM_IDLE_S", "2")))

    def seen(self) -> None:
        self.requests += 1

    def check(self) -> bool:
        """One look (every ``idle_s``): trim when no request came since the last look, none
        is in flight, and some came since the last trim. Returns whether it trimmed."""
        now = self.requests
        busy = now != self._looked or self.in_flight() > 0
        self._looked = now
        if busy or now == self._trimmed:
            return False
        self._trimmed = now
        self.trim()
        self.trims += 1
        return True

    def start(self) -> bool:
        """Run ``check`` every ``idle_s`` on a daemon thread; False when turned off."""
        if self.idle_s <= 0 or self._thread is not None:
            return False
        self._thread = threading.Thread(target=self._run, name="vision-trim", daemon=True)
        self._thread.start()
        return True

    def stop(self, timeout: float = 5.0) -> bool:
        """End the trim thread (at once: it waits on the stop signal) and wait up to
        ``timeout`` s for it to finish. Returns whether no trim thread is left running."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        return self._thread is None or not self._thread.is_alive()

    def _run(self) -> None:
        while not self._stop.wait(self.idle_s):
            if self.check():
                logger.debug("idle: freed memory given back to the OS (trim %d)", self.trims)
