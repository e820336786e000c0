"""The Dask cluster a batch runs on: a ``LocalCluster`` planned for this machine, or an existing one.

Locally, each worker is a process with one task thread (a series at a time), OpenVINO threads =
cores / workers (at most :data:`MAX_THREADS`), a memory limit (Dask's nanny restarts a worker that
grows past it, and the scheduler runs its series again elsewhere) and a ``memory`` resource; each
series asks for its budget of that resource, so a worker never takes on more series than its
memory holds, also on a cluster whose workers run several threads. Elsewhere (``--scheduler``), the
cluster is the user's: SLURM through dask-jobqueue, Kubernetes through dask-kubernetes, each worker
started with ``--resources memory=MIB``.
"""

from __future__ import annotations

import ipaddress
import logging
import math
import os
import signal
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dask
import psutil
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import WorkerPlugin
from distributed.security import Security

from mhub_cpu.core.errors import InputError
from mhub_cpu.core.progress import log

#: OpenVINO threads per worker at most: beyond 4 a CT window gains little, another worker more.
MAX_THREADS = 4
#: The Dask resource every series asks for (MiB) and every worker offers.
MEMORY_RESOURCE = "memory"


@dataclass(frozen=True)
class ClusterOptions:
    """The batch's cluster options (``--workers``, ``--threads-per-worker``, ``--scheduler``, ``--retries``,
    ``--dashboard``)."""

    workers: int | None = None
    threads_per_worker: int | None = None
    scheduler: str | None = None
    retries: int = 2
    #: Address of the local cluster's dashboard; ``None``: no dashboard (it shows task names, worker
    #: logs and paths to whoever can reach it, so it is off unless asked for).
    dashboard: str | None = None
    #: A ``tls://`` scheduler's CA certificate, this client's certificate and key (PEM files); each
    #: ``None``: as Dask's configuration says (``distributed.comm.tls.*``).
    tls_ca_file: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None


def security(options: ClusterOptions) -> Security | None:
    """Dask's :class:`Security` for a ``tls://`` scheduler (encryption required), else ``None``.

    Files given as options override Dask's configuration; each must be a readable file.

    Raises:
        InputError: a TLS option without a ``tls://`` scheduler, or a file that cannot be read.
    """
    given = {"--tls-ca-file": options.tls_ca_file, "--tls-cert": options.tls_cert, "--tls-key": options.tls_key}
    if not (options.scheduler or "").startswith("tls://"):
        if any(given.values()):
            raise InputError(f"{', '.join(k for k, v in given.items() if v)}: only for a tls:// scheduler (--scheduler tls://HOST:PORT)")
        return None
    for option, path in given.items():
        if path is not None and not os.access(path, os.R_OK):
            raise InputError(f"{option} {path}: cannot read the file")
    overrides = {k: v for k, v in {"tls_ca_file": options.tls_ca_file, "tls_client_cert": options.tls_cert,
                                   "tls_client_key": options.tls_key}.items() if v is not None}
    return Security(require_encryption=True, **overrides)


def is_loopback(address: str) -> bool:
    """Whether a ``[scheme://]host[:port]`` address names this machine only (127.0.0.0/8, ::1, localhost)."""
    host = address.split("://", 1)[-1]
    host = host[1:host.index("]")] if host.startswith("[") else host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


@dataclass(frozen=True)
class WorkerPlan:
    """How many workers, each with how many OpenVINO threads and how much memory (MiB)."""

    workers: int
    threads: int
    memory_mb: float

    def describe(self) -> str:
        return f"{self.workers} worker(s), {self.threads} thread(s) and {self.memory_mb:.0f} MiB each"


def plan_workers(cores: int, available_mb: float, budget_mb: float, workers: int | None = None, threads: int | None = None) -> WorkerPlan:
    """Workers for this machine: as many as cores allow and memory holds at ``budget_mb`` each.

    Each worker gets an equal share of the available memory (at least the budget).

    Raises:
        InputError: the plan cannot fit: one series' budget, or ``workers`` × budget, exceeds the
            available memory, or more threads than cores are asked for.
    """
    if budget_mb > available_mb:
        raise InputError(
            f"one series needs {budget_mb:.0f} MiB (--max-memory or the job's estimate) but only {available_mb:.0f} MiB "
            "of memory is available here; free memory or give a smaller --max-memory"
        )
    fit = int(available_mb // budget_mb)
    if workers is None:
        workers = max(1, min(cores // (threads or 1), fit))
    elif workers < 1:
        raise InputError(f"--workers must be at least 1, not {workers}")
    elif workers > fit:
        raise InputError(
            f"--workers {workers} at {budget_mb:.0f} MiB each needs {workers * budget_mb:.0f} MiB, but {available_mb:.0f} MiB "
            f"is available; {fit} worker(s) fit"
        )
    if threads is not None and (threads < 1 or threads * workers > cores):
        raise InputError(f"--threads-per-worker {threads} with {workers} worker(s) needs {threads * workers} cores; this machine has {cores}")
    threads = threads or max(1, min(MAX_THREADS, cores // workers))
    return WorkerPlan(workers=workers, threads=threads, memory_mb=math.floor(available_mb / workers))


def machine() -> tuple[int, float]:
    """Cores this process may use and the memory available now (MiB)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return cores, psutil.virtual_memory().available / 2**20


class IgnoreInterrupt(WorkerPlugin):
    """Ctrl-C in a terminal reaches the whole process group: local workers leave it to the batch,
    which cancels the queue and closes them itself."""

    def setup(self, worker: object) -> None:
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except ValueError:  # not the worker's main thread: nothing to do there
            pass


def _dask_settings(retries: int) -> dict:
    """Dask settings for our workers, which hold no data: no spilling or pausing on memory (only the
    nanny's restart past the limit), the series retried ``retries`` times after a worker dies, and no
    ``MALLOC_TRIM_THRESHOLD_`` (Dask's default of 65536 made dcm2niix 60 % slower)."""
    return {
        "distributed.scheduler.allowed-failures": retries,
        "distributed.worker.memory.target": False,
        "distributed.worker.memory.spill": False,
        "distributed.worker.memory.pause": False,
        "distributed.nanny.pre-spawn-environ": {"OMP_NUM_THREADS": 1, "MKL_NUM_THREADS": 1, "OPENBLAS_NUM_THREADS": 1},
    }


@contextmanager
def open_cluster(options: ClusterOptions, budget_mb: float) -> Iterator[tuple[Client, int | None, str]]:
    """A client of the batch's cluster; yields it, the OpenVINO threads for each worker (None: the
    worker's own cores) and one line describing the cluster. The local cluster is closed on exit.

    Raises:
        InputError: an impossible worker plan, an unreachable scheduler, or a cluster none of whose
            workers offers ``budget_mb`` of the ``memory`` resource.
    """
    tls = security(options)  # refuses TLS options without a tls:// scheduler, and unreadable files
    quiet = logging.CRITICAL if not os.environ.get("MHUB_CPU_DEBUG") else logging.WARNING
    for name in ("distributed", "tornado", "asyncio"):
        logging.getLogger(name).setLevel(quiet)
    with dask.config.set(_dask_settings(options.retries)):
        if options.scheduler:
            if options.scheduler.startswith("tcp://") and not is_loopback(options.scheduler):
                log(f"warning: {options.scheduler} is a plain tcp:// address on the network: the cluster's traffic "
                    "(inputs' paths, results, logs) is neither encrypted nor authenticated; use a tls:// scheduler")
            try:
                client = Client(options.scheduler, timeout="30s", security=tls)
            except (OSError, ssl.SSLError, ValueError, TypeError) as exc:
                raise InputError(f"cannot connect to the Dask scheduler at {options.scheduler}: {' '.join(str(exc).split())}") from exc
            try:
                offered = [w.get("resources", {}).get(MEMORY_RESOURCE, 0) for w in client.scheduler_info()["workers"].values()]
                if not any(memory >= budget_mb for memory in offered):
                    raise InputError(
                        f"no worker of the Dask cluster at {options.scheduler} offers {budget_mb:.0f} MiB of the "
                        f"'{MEMORY_RESOURCE}' resource ({len(offered)} worker(s)); start workers with --resources "
                        f"{MEMORY_RESOURCE}=MIB (MiB each may use)"
                    )
                yield client, options.threads_per_worker, f"Dask cluster at {options.scheduler}, {len(offered)} worker(s)"
            finally:
                client.close()
            return
        cores, available = machine()
        plan = plan_workers(cores, available, budget_mb, options.workers, options.threads_per_worker)
        cluster = LocalCluster(
            n_workers=plan.workers, threads_per_worker=1, processes=True, memory_limit=f"{plan.memory_mb}MiB",
            resources={MEMORY_RESOURCE: plan.memory_mb}, dashboard_address=options.dashboard, silence_logs=quiet,
        )
        if options.dashboard is not None:
            if not is_loopback(options.dashboard):
                log(f"warning: the dashboard listens on {options.dashboard}, beyond this machine: it shows task names, "
                    "worker logs and paths to whoever can reach it")
            log(f"Dask dashboard: {cluster.dashboard_link}")
        try:
            client = Client(cluster)
            try:
                client.register_plugin(IgnoreInterrupt(), name="mhub-cpu-ignore-interrupt")
                yield client, plan.threads, f"local Dask cluster: {plan.describe()}"
            finally:
                client.close()
        finally:
            cluster.close()
