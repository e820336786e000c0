"""Shared fixtures: paths to the sample data (data/), an isolated model cache, the demo model."""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import signal
import threading
from pathlib import Path

import numpy as np
import pydicom
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO / "data"
CT_DICOM = SHARED / "ct" / "abdomen_3mm_dicom"
CT_NIFTI = SHARED / "ct" / "abdomen_3mm.nii.gz"
CT_REFERENCE_LABELS = SHARED / "ct" / "abdomen_3mm_totalseg_labels.nii.gz"
SCANNER_DICOM = SHARED / "ct" / "upper_abdomen_scanner_dicom"


@pytest.fixture(scope="session", autouse=True)
def interruptible_children() -> None:
    """Started as a background job, pytest inherits SIGINT ignored and every child would too (an
    ignored signal stays ignored across ``exec``). Python's own handler in this process makes each
    child start with SIGINT at its default, as from a terminal; the tests that send signals also
    reset them in the child (:mod:`childproc`)."""
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session", autouse=True)
def isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Point the model/IR cache at a per-session folder so tests never touch the user's cache.

    ``MHUB_CPU_TEST_CACHE`` names a prepared cache instead (``make test-emulated-cpu`` converts the
    IRs natively first: converting under CPU emulation would take far longer than the tests).
    """
    prepared = os.environ.get("MHUB_CPU_TEST_CACHE")
    cache = Path(prepared) if prepared else tmp_path_factory.mktemp("mhub-cpu-cache")
    os.environ["MHUB_CPU_CACHE"] = str(cache)
    # Hermetic: IRs come from the packaged release or a local conversion, never from the network
    # (tests/convert/test_release.py serves its own release on 127.0.0.1).
    os.environ["MHUB_CPU_NO_DOWNLOAD"] = "1"
    return cache


@pytest.fixture(scope="session")
def demo_model() -> Path:
    from mhub_cpu.core.resources import demo_model_path

    path = demo_model_path()
    assert path.exists(), f"demo model missing: {path} (run demo/train_demo_model.py)"
    return path


def copy_series(source: Path, target: Path, **overrides: object) -> list[Path]:
    """Copy a DICOM series, optionally overriding attributes in every file; returns the new files."""
    target.mkdir(parents=True, exist_ok=True)
    written = []
    for path in sorted(source.iterdir()):
        dataset = pydicom.dcmread(path)
        for keyword, value in overrides.items():
            setattr(dataset, keyword, value)
        out = target / path.name
        dataset.save_as(out, enforce_file_format=True)
        written.append(out)
    return written


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


@pytest.fixture
def scratch(tmp_path: Path) -> Path:
    yield tmp_path
    shutil.rmtree(tmp_path, ignore_errors=True)


class LocalFileServer:
    """A file server on 127.0.0.1 that counts requests."""

    def __init__(self, root: Path):
        self.requests = 0
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 - http.server API
                outer.requests += 1
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"
