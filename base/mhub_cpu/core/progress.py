"""Progress messages on stderr, per-stage wall-clock timing and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field


def log(message: str) -> None:
    """Print one progress line on stderr, prefixed with the tool name."""
    print(f"[mhub-cpu] {message}", file=sys.stderr, flush=True)


#: Where Linux reports this process's own peak RSS (``VmHWM``, reset by ``execve``).
PROC_STATUS = "/proc/self/status"


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB.

    On Linux this is ``VmHWM`` from ``/proc/self/status``: the high-water mark of this process's
    own address space. ``getrusage(RUSAGE_SELF).ru_maxrss`` is *not* used there because it
    survives ``execve``: a child started by a parent holding 400 MB reports at least 400 MB even
    when it never uses that much itself. ``ru_maxrss`` is the fallback where ``/proc`` is missing.
    """
    try:
        with open(PROC_STATUS, encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0  # kB
    except OSError:
        pass
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / (1024.0 * 1024.0) if sys.platform == "darwin" else maxrss / 1024.0  # bytes on macOS


def cpu_seconds() -> float:
    """User plus system CPU time of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@dataclass
class StageTimer:
    """Collects wall-clock seconds per named stage, in the order the stages ran, and the process's
    peak RSS at the end of each stage (a stage whose value is higher than the one before set a new peak)."""

    stages: dict[str, float] = field(default_factory=dict)
    peaks_mb: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` and log its duration."""
        log(f"{name} ...")
        start = time.perf_counter()
        try:
            yield
        finally:
            seconds = time.perf_counter() - start
            self.stages[name] = self.stages.get(name, 0.0) + seconds
            self.peaks_mb[name] = peak_rss_mb()
            log(f"{name} done in {seconds:.2f} s (peak RSS so far {self.peaks_mb[name]:.0f} MiB)")

    @property
    def total_s(self) -> float:
        return sum(self.stages.values())


class ProgressCounter:
    """Logs ``label i/n`` at most every ``min_interval_s`` seconds (and always for the last item)."""

    def __init__(self, label: str, total: int, min_interval_s: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.min_interval_s = min_interval_s
        self._start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int) -> None:
        now = time.perf_counter()
        if done == self.total or now - self._last >= self.min_interval_s:
            self._last = now
            elapsed = now - self._start
            log(f"{self.label} {done}/{self.total} ({elapsed:.1f} s)")
