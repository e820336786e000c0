"""Download-once cache for model files, with recorded checksums and offline re-use."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from mhub_cpu.core.errors import DownloadError
from mhub_cpu.core.files import write_json
from mhub_cpu.core.progress import log


def cache_dir() -> Path:
    """Root of the cache: ``$MHUB_CPU_CACHE``, else ``$XDG_CACHE_HOME/mhub-cpu``, else ``~/.cache/mhub-cpu``."""
    explicit = os.environ.get("MHUB_CPU_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "mhub-cpu"


def sha256_of(path: Path, chunk_size: int = 1 << 20) -> str:
    """Hex SHA-256 of a file's content."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(chunk_size), b""):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(url: str, subdir: str, expected_sha256: str | None = None, timeout_s: float = 60.0) -> Path:
    """Return the cached copy of ``url``, downloading it once.

    The file lands in ``cache_dir()/subdir/<file name>`` next to a ``<file name>.json`` record of
    its URL and SHA-256. A cached file is re-used without network access only if its checksum still
    matches the record (and ``expected_sha256`` when given); a cached file changed since it was
    downloaded is reported and downloaded again. Downloads go to a temporary file that is renamed
    only when complete and verified, so an interrupted download never looks cached.

    Raises:
        DownloadError: offline or HTTP failure (with the URL and the cache path to fill by hand),
            or a checksum mismatch.
    """
    target_dir = cache_dir() / subdir
    name = url.rstrip("/").rsplit("/", 1)[-1] or "download"
    target = target_dir / name
    record_path = target_dir / f"{name}.json"
    tampered = ""
    if target.exists() and record_path.exists():
        try:
            recorded = json.loads(record_path.read_text()).get("sha256")
        except (OSError, ValueError, AttributeError):
            recorded = None
        actual = sha256_of(target)
        if actual == recorded and expected_sha256 in (None, actual):
            return target
        tampered = (
            f"the cached {target} (sha256 {actual}) does not match "
            + (f"the known sha256 {expected_sha256}" if expected_sha256 not in (None, actual) else f"the sha256 {recorded} recorded when it was downloaded")
            + ": it was changed or corrupted since"
        )
        log(f"warning: {tampered}; downloading it again")

    target_dir.mkdir(parents=True, exist_ok=True)
    log(f"downloading {url}")
    fd, tmp_name = tempfile.mkstemp(dir=target_dir, prefix=f".{name}.", suffix=".part")
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url, timeout=timeout_s) as response:
            total = int(response.headers.get("Content-Length") or 0)
            done = 0
            next_report = 0.0
            while chunk := response.read(1 << 20):
                out.write(chunk)
                done += len(chunk)
                if total and done / total >= next_report:
                    log(f"  {done / 2**20:.1f} / {total / 2**20:.1f} MiB")
                    next_report += 0.25
        actual = sha256_of(tmp)
        if expected_sha256 is not None and actual != expected_sha256:
            raise DownloadError(
                f"checksum mismatch for {url}: expected sha256 {expected_sha256}, got {actual}"
            )
        os.replace(tmp, target)
        write_json(record_path, {"url": url, "sha256": actual})
        log(f"saved {target} (sha256 {actual[:12]}…)")
        return target
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        raise DownloadError(
            (f"{tampered}, and " if tampered else "")
            + f"cannot download {url}: {exc}. If this machine is offline, copy the file to {target} "
            f"or pass a local path instead."
        ) from exc
    finally:
        tmp.unlink(missing_ok=True)
