"""Progress messages on stderr, per-stage wall-clock timing and peak memory."""

from __future__ import annotations

import resource
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Iterator

def log(message: str) -> None:
    """Print one progress line on stderr, prefixed with the tool name."""
    print(f"[mhub-cpu] {message}", file=sys.stderr, flush=True)


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MiB (Linux ``ru_maxrss`` is KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


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
