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


#: Runs the command given as its arguments, then prints the command's peak memory (ru_maxrss of its
#: only child, KiB) as the last line of stdout.
_MEASURE = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
            "sys.stderr.write(r.stderr); sys.stdout.write(r.stdout); "
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def run_measured(args: list[str], timeout: float = 300) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``args`` to completion; return the result and the peak memory (VmHWM) of that process in MiB."""
    import sys

    result = subprocess.run([sys.executable, "-c", _MEASURE, *args], capture_output=True, text=True, timeout=timeout,
                            stdin=subprocess.DEVNULL, preexec_fn=default_signals)
    return result, int(result.stdout.strip().splitlines()[-1]) / 1024
