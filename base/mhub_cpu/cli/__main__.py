"""``python -m mhub_cpu.cli``: the same command line as ``mhub-cpu``."""

import sys

from mhub_cpu.cli import main

sys.exit(main())
