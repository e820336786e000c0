"""Writing results: atomic files, strict JSON, and a staging folder published only when complete.

Every command writes its results into a hidden staging folder inside the output folder and moves
them into place only when all of them are complete, so a failed, interrupted or killed run never
leaves a partial result that looks like success. A staging folder is named after the host and
process that own it; a later run removes those whose process is gone. Published files get the
permissions the user's umask gives a new file (``0644`` for the usual ``022``), whichever library
wrote them.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log

#: Name prefix of staging folders (hidden, so a file browser does not show a half-written result).
STAGING_PREFIX = ".mhub-cpu-partial-"


def _file_mode() -> int:
    """Mode of a new file under the current umask (``0o666 & ~umask``)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def strict(value: Any) -> Any:
    """JSON-safe copy: NaN and infinities become ``null``, numpy scalars and arrays plain Python."""
    if isinstance(value, dict):
        return {str(k): strict(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [strict(v) for v in value]
    if isinstance(value, (np.bool_, bool)):
        return bool(value)
    if isinstance(value, (np.integer, int)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Path):
        return str(value)
    return value


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path`` and rename it into place (umask mode)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, payload: Any) -> None:
    """Strict JSON (``allow_nan=False``; NaN and infinities as ``null``), written atomically."""
    write_atomic(path, (json.dumps(strict(payload), indent=2, allow_nan=False, ensure_ascii=False) + "\n").encode())


def prepare_output_dir(output_dir: Path) -> Path:
    """Create the output folder (refusing a path that is a file) and remove stale staging folders.

    Raises:
        InputError: ``output_dir`` exists and is not a folder, or cannot be created.
    """
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise InputError(f"--output {output_dir} is an existing file, not a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"cannot create the output folder {output_dir}: {exc.strerror}") from exc
    for stale in output_dir.glob(STAGING_PREFIX + "*"):
        if _owner_is_gone(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
            log(f"removed {stale.name}, left by an interrupted earlier run")
    return output_dir


def _owner_is_gone(name: str) -> bool:
    """True for a staging folder of this host whose process no longer runs."""
    host, _, rest = name.removeprefix(STAGING_PREFIX).rpartition("-pid")
    pid_text = rest.split("-", 1)[0]
    if host != socket.gethostname() or not pid_text.isdigit():
        return False
    try:
        os.kill(int(pid_text), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # another user's live process
        return False
    return False


@contextmanager
def staged_output(output_dir: Path, ours: Iterable[str], last: str) -> Iterator[Path]:
    """A staging folder inside ``output_dir`` whose files are published when the block succeeds.

    Args:
        output_dir: The result folder (see :func:`prepare_output_dir`).
        ours: Names of every file this command may write; those a successful run did not write
            again are removed, so no result of an earlier run stays beside the new ones.
        last: The file moved into place last (the report that says the run is complete).

    On any exception, including ``KeyboardInterrupt`` and SIGTERM turned into one, the staging
    folder is removed, nothing is published, and ``ours`` of an earlier run are removed too, so
    that nothing in the folder looks like this run's result. Sub-folders of the staging folder
    (work files) are never published.
    """
    output_dir = prepare_output_dir(output_dir)
    staging = output_dir / f"{STAGING_PREFIX}{socket.gethostname()}-pid{os.getpid()}-{secrets.token_hex(4)}"
    staging.mkdir()
    try:
        try:
            yield staging
        except BaseException:
            remove_results(output_dir, ours)
            raise
        produced = sorted((p for p in staging.iterdir() if p.is_file()), key=lambda p: p.name == last)
        mode = _file_mode()
        for name in set(ours) - {p.name for p in produced}:
            (output_dir / name).unlink(missing_ok=True)
        for path in produced:
            os.chmod(path, mode)
            path.replace(output_dir / path.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def remove_results(output_dir: Path, ours: Iterable[str]) -> None:
    """Remove results of an earlier run (by name) so that they cannot be mistaken for this run's."""
    if not Path(output_dir).is_dir():
        return
    for name in ours:
        (Path(output_dir) / name).unlink(missing_ok=True)
