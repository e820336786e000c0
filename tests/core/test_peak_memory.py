"""Peak memory is the measuring process's own, not inherited from the process that started it."""

from __future__ import annotations

import subprocess
import sys

import numpy as np

CHILD = """
import sys
import numpy as np
from mhub_cpu.core.progress import peak_rss_mb
held = np.ones(int(sys.argv[1]) * 2**20, dtype=np.uint8)  # touched: resident
print(peak_rss_mb())
"""


def _child_peak_mb(allocate_mb: int) -> float:
    result = subprocess.run([sys.executable, "-c", CHILD, str(allocate_mb)], capture_output=True, text=True, check=True)
    return float(result.stdout.strip())


def test_child_reports_its_own_peak_not_its_parents() -> None:
    held = np.ones(600 * 2**20, dtype=np.uint8)  # the parent holds 600 MiB while starting the child
    small = _child_peak_mb(1)
    large = _child_peak_mb(300)
    assert held.sum() == held.size
    assert small < 200, f"a child using ~1 MiB reports {small:.0f} MiB: the parent's 600 MiB leaked into it"
    assert large >= 300, f"a child that allocated 300 MiB reports only {large:.0f} MiB"
    assert large - small >= 290
