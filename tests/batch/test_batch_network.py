"""The network is an input too: a batch's local cluster listens on loopback only, its dashboard only when asked."""

from __future__ import annotations

import ipaddress
import re
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pydicom
import pytest

import childproc
from conftest import CT_DICOM
from mhub_cpu_dev.standins.auto3dseg import write_tiny_model

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def small_collection(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """One 12-slice series and the tiny stand-in model: the network, not the segmentation, is the point."""
    root = tmp_path_factory.mktemp("net")
    series = root / "collection" / "series"
    series.mkdir(parents=True)
    for path in sorted(CT_DICOM.iterdir())[48:60]:
        pydicom.dcmread(path).save_as(series / path.name)
    return root / "collection", write_tiny_model(root / "tiny-standin-v0.1.0.zip")


def listening(process: psutil.Process) -> set[tuple[str, int]]:
    """(address, port) of every listening TCP socket of the process and its descendants."""
    found: set[tuple[str, int]] = set()
    for member in [process, *process.children(recursive=True)]:
        try:
            connections = member.net_connections(kind="inet")
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        found |= {(c.laddr.ip, c.laddr.port) for c in connections if c.status == psutil.CONN_LISTEN}
    return found


def batch_listening(collection: Path, model: Path, out: Path, *extra: str) -> tuple[set[tuple[str, int]], str, int]:
    """Run a batch and collect every socket it listens on while it runs."""
    child = childproc.popen([sys.executable, "-m", "mhub_cpu.cli", "batch", "segment", "--input", str(collection),
                             "--output", str(out), "--model", str(model), "--workers", "1", *extra],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    process = psutil.Process(child.pid)
    seen: set[tuple[str, int]] = set()
    deadline = time.monotonic() + 300
    try:
        while child.poll() is None and time.monotonic() < deadline:
            seen |= listening(process)
            time.sleep(0.1)
    finally:
        if child.poll() is None:
            child.kill()
    _, stderr = child.communicate(timeout=60)
    return seen, stderr, child.returncode


def test_a_batch_listens_on_loopback_only_and_has_no_dashboard(small_collection: tuple[Path, Path], tmp_path: Path) -> None:
    collection, model = small_collection
    seen, stderr, code = batch_listening(collection, model, tmp_path / "out")
    assert code == 0, stderr
    assert seen, "the local cluster's scheduler and workers listen (the test must see them)"
    outside = [(ip, port) for ip, port in seen if not ipaddress.ip_address(ip).is_loopback]
    assert not outside, f"listening beyond loopback: {outside}"
    assert "dashboard" not in stderr.lower()


def test_the_dashboard_when_asked_is_on_loopback_and_printed(small_collection: tuple[Path, Path], tmp_path: Path) -> None:
    collection, model = small_collection
    seen, stderr, code = batch_listening(collection, model, tmp_path / "out", "--dashboard")
    assert code == 0, stderr
    link = re.search(r"Dask dashboard: http://([\d.]+):(\d+)/", stderr)
    assert link, stderr
    assert (link.group(1), int(link.group(2))) in seen and ipaddress.ip_address(link.group(1)).is_loopback
    assert all(ipaddress.ip_address(ip).is_loopback for ip, _ in seen)


def test_a_plain_tcp_scheduler_on_the_network_is_warned_about(small_collection: tuple[Path, Path], tmp_path: Path) -> None:
    collection, model = small_collection
    result = subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "batch", "segment", "--input", str(collection), "--output",
                             str(tmp_path / "out"), "--model", str(model), "--scheduler", "tcp://192.0.2.1:8786"],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode != 0
    assert "warning: tcp://192.0.2.1:8786 is a plain tcp:// address on the network" in result.stderr
    assert result.stderr.strip().splitlines()[-1].startswith("mhub-cpu: error: cannot connect to the Dask scheduler at tcp://192.0.2.1:8786")
