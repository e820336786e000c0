"""Children with the signal dispositions a terminal would give them, however pytest was started.

A process started as a background job of a non-interactive shell (CI systems, ``nohup``, editors)
inherits SIGINT and SIGQUIT ignored, and ignored signals stay ignored across ``exec``: the engine,
rightly, then ignores a Ctrl-C. Tests that send signals start their child through :func:`popen`.
"""

from __future__ import annotations

import signal
import subprocess
from typing import Any

#: The signals a test may send or a terminal would deliver.
RESET = (signal.SIGINT, signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP)


def default_signals() -> None:
    """``preexec_fn``: every signal of :data:`RESET` at its default disposition in the child."""
    for number in RESET:
        signal.signal(number, signal.SIG_DFL)


def popen(args: list[str], **kwargs: Any) -> subprocess.Popen:
    """``subprocess.Popen`` with default signal dispositions, in a process group of its own (so
    only the child gets the signals the test sends), stdin closed unless given."""
    kwargs.setdefault("stdin", subprocess.DEVNULL)
    return subprocess.Popen(args, preexec_fn=default_signals, process_group=0, **kwargs)
