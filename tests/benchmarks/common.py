"""Helpers shared by the benchmarks."""

from __future__ import annotations

import json
import platform
import resource
import sys
import time
from contextlib import contextmanager


def emit(bench: str, **figures) -> None:
    """One JSON line per measurement, with the machine it ran on."""
    record = {"bench": bench, **figures, "python": platform.python_version(), "cpus": _cpus()}
    print(json.dumps(record, sort_keys=False), flush=True)


def _cpus() -> int:
    import os

    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round((kib / 1024 / 1024 if sys.platform == "darwin" else kib / 1024), 1)


@contextmanager
def timer():
    box = {}
    start = time.perf_counter()
    yield box
    box["seconds"] = time.perf_counter() - start
