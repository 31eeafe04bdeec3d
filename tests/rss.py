"""The growth of this process's resident memory while a block runs, sampled by a thread:
what the memory tests assert on (``tracemalloc`` would count untouched over-allocations,
such as orjson's output buffer, and miss C allocations).  ``traced_peak`` is for the tests
that assert no Python copy of a large input is made, where tracemalloc is exact."""

from __future__ import annotations

import threading
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def traced_peak(fn: Callable[[], T]) -> tuple[T, int]:
    """``fn()`` and the peak bytes of Python allocations while it ran."""
    tracemalloc.start()
    try:
        out = fn()
        return out, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def rss_mib(field: str = "VmRSS") -> float:
    """``field`` of /proc/self/status (VmRSS, RssAnon, ...), in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise AssertionError(f"no {field} in /proc/self/status")


class Growth:
    def __init__(self) -> None:
        self.base = rss_mib()
        self.peak = self.base

    @property
    def mib(self) -> float:
        """The peak over the resident memory at the start, in MiB."""
        return self.peak - self.base


@contextmanager
def rss_growth(interval: float = 0.002) -> Iterator[Growth]:
    growth = Growth()
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            growth.peak = max(growth.peak, rss_mib())
            stop.wait(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield growth
    finally:
        stop.set()
        sampler.join()
        growth.peak = max(growth.peak, rss_mib())
