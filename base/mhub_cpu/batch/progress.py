"""Progress of a batch: a tqdm bar on a terminal, one line per finished series elsewhere (logs, CI)."""

from __future__ import annotations

import sys
import time

from tqdm import tqdm

from mhub_cpu.batch.outcome import Status
from mhub_cpu.core.progress import log


class BatchProgress:
    """Series done / total, failures and the time left, updated as each series finishes."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.done = 0
        self.failed = 0
        self.stream = sys.stderr
        self._start = time.perf_counter()
        self._bar = (
            tqdm(total=total, unit="series", desc="[mhub-cpu] batch", file=self.stream, dynamic_ncols=True, postfix={"failed": 0})
            if self.stream.isatty() else None
        )

    def finished(self, name: str, status: Status, seconds: float | None, reason: str = "") -> None:
        """One series is finished (done, failed or, after a worker died too often, failed)."""
        self.done += 1
        self.failed += status is Status.FAILED
        took = f" in {seconds:.1f} s" if seconds is not None else ""
        said = f": {reason}" if reason else ""
        if self._bar is not None:
            if status is Status.FAILED:
                self._bar.write(f"[mhub-cpu] failed {name}{took}{said}", file=self.stream)
            self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
            return
        elapsed = time.perf_counter() - self._start
        eta = tqdm.format_interval(elapsed / self.done * (self.total - self.done))
        log(f"batch {self.done}/{self.total}: {status} {name}{took}{said}; {self.failed} failed; ETA {eta}")

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
