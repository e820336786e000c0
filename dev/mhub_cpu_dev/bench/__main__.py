"""``python -m mhub_cpu_dev.bench``: the segmentation benchmark (writes bench.json, bench.md, bench.png)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from mhub_cpu_dev.bench.runner import run_bench


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m mhub_cpu_dev.bench", description=__doc__)
    parser.add_argument("--output", type=Path, default=Path("output/bench"))
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2", "W3", "D"], help="subset of W1 W2 W3 D")
    args = parser.parse_args(argv)
    records = run_bench(args.output, args.workloads)
    print((args.output / "bench.md").read_text())
    return 0 if all(r.get("status") != "failed" for r in records) else 1


if __name__ == "__main__":
    sys.exit(main())
