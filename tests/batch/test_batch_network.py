"""The network is an input too: a batch's local cluster listens on loopback only, its dashboard only when asked."""

from __future__ import annotations

import ipaddress
import json
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


def make_tls_files(root: Path) -> dict[str, Path]:
    """A self-signed CA and one certificate for 127.0.0.1 signed by it (scheduler, workers and client
    share it, as Dask's TLS guide does), made with the openssl command line."""
    root.mkdir(parents=True, exist_ok=True)
    files = {name: root / f"{name}.pem" for name in ("ca", "ca-key", "cert", "key")}

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=mhub-cpu test CA",
            "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", str(files["key"]), "-out", str(root / "req.pem"))
    (root / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    openssl("x509", "-req", "-in", str(root / "req.pem"), "-CA", str(files["ca"]), "-CAkey", str(files["ca-key"]),
            "-CAcreateserial", "-days", "2", "-extfile", str(root / "ext.cnf"), "-out", str(files["cert"]))
    return files


def test_a_tls_scheduler_runs_a_batch_and_refuses_a_client_without_the_ca(small_collection: tuple[Path, Path], tmp_path: Path) -> None:
    collection, model = small_collection
    tls = make_tls_files(tmp_path / "tls")
    options = ["--tls-ca-file", str(tls["ca"]), "--tls-cert", str(tls["cert"]), "--tls-key", str(tls["key"])]
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    scheduler_file = tmp_path / "scheduler.json"
    scheduler = childproc.popen([*dask, "--protocol", "tls", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                 "--scheduler-file", str(scheduler_file), *options],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    worker = None
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = json.loads(scheduler_file.read_text())["address"]
        assert address.startswith("tls://127.0.0.1:"), address
        worker = childproc.popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1", "--nthreads", "1",
                                  "--resources", "memory=4000", "--no-dashboard", "--protocol", "tls", "--host", "127.0.0.1", *options],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        command = [sys.executable, "-m", "mhub_cpu.cli", "batch", "segment", "--input", str(collection), "--model", str(model),
                   "--scheduler", address, "--max-memory", "2000"]
        result = None
        for _ in range(30):  # until the worker has joined
            result = subprocess.run([*command, "--output", str(tmp_path / "out"), *options], capture_output=True, text=True,
                                    timeout=300, stdin=subprocess.DEVNULL)
            if "no worker of the Dask cluster" not in result.stderr:
                break
            time.sleep(1)
        assert result is not None and result.returncode == 0, result.stderr if result else ""
        assert "plain tcp://" not in result.stderr
        assert len(list((tmp_path / "out").rglob("segmentation.dcm"))) == 1

        refused = subprocess.run([*command, "--output", str(tmp_path / "refused")], capture_output=True, text=True, timeout=120,
                                 stdin=subprocess.DEVNULL)  # no CA, no certificate: the handshake fails
        assert refused.returncode != 0
        assert refused.stderr.strip().splitlines()[-1].startswith(f"mhub-cpu: error: cannot connect to the Dask scheduler at {address}")
        assert "Traceback" not in refused.stderr and not list((tmp_path / "refused").rglob("segmentation.dcm"))
    finally:
        for child in (worker, scheduler):
            if child is not None and child.poll() is None:
                child.terminate()
                try:
                    child.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    child.kill()


def test_tls_options_without_a_tls_scheduler_are_refused(small_collection: tuple[Path, Path], tmp_path: Path) -> None:
    collection, model = small_collection
    result = subprocess.run([sys.executable, "-m", "mhub_cpu.cli", "batch", "segment", "--input", str(collection), "--output",
                             str(tmp_path / "out"), "--model", str(model), "--tls-ca-file", str(tmp_path / "ca.pem")],
                            capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines()[-1] == "mhub-cpu: error: --tls-ca-file: only for a tls:// scheduler (--scheduler tls://HOST:PORT)"
