"""The stand-in for the extension's inference script that hands its arguments to ``mhub-cpu slicer-inference``.

MONAIAuto3DSeg runs ``PythonSlicer <module>/Scripts/auto3dseg_segresnet_inference.py ARGS``.
Replacing that file with this shim makes the extension run our OpenVINO pipeline with the same
arguments, without changing the extension. PythonSlicer is Slicer's launcher: it sets
``PYTHONHOME`` and ``PYTHONPATH`` (and on Linux ``LD_LIBRARY_PATH``) to Slicer's own Python and
libraries, which a child inherits; mhub-cpu's Python would then import Slicer's packages (or fail
to start), so the shim removes them for the child. It runs on Slicer's own Python, so it uses only
the standard library and no recent syntax, and waits for the child (rather than ``exec``, which on
Windows would return to Slicer before the result exists) and exits with its status.
"""

from __future__ import annotations

import sys

from mhub_cpu import __version__

#: Variables Slicer's launcher sets for its own Python and libraries.
CLEARED_VARIABLES = ("PYTHONHOME", "PYTHONPATH", "LD_LIBRARY_PATH")

_TEMPLATE = '''\
"""Stand-in for MONAIAuto3DSeg's auto3dseg_segresnet_inference.py, written by `mhub-cpu slicer-shim` (mhub-cpu {version}).

The extension runs this file with Slicer's Python; it runs `mhub-cpu slicer-inference` (OpenVINO)
with the same arguments instead of the PyTorch script, without what Slicer's launcher sets for
its own Python and libraries:
{cleared}.
An update of the extension replaces this file; write it again with `mhub-cpu slicer-shim`.
"""
import os
import subprocess
import sys

COMMAND = {command!r}
CLEARED = {cleared_tuple!r}

environment = dict((name, value) for name, value in os.environ.items() if name not in CLEARED)
sys.exit(subprocess.call(COMMAND + sys.argv[1:], env=environment))
'''


def shim_script() -> str:
    """The shim's source, running ``slicer-inference`` with this installation's Python."""
    command = [sys.executable, "-m", "mhub_cpu.cli", "slicer-inference"]
    return _TEMPLATE.format(version=__version__, cleared=", ".join(CLEARED_VARIABLES), command=command, cleared_tuple=CLEARED_VARIABLES)
