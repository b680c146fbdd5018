"""How many threads the numerical libraries (OpenMP, BLAS) may use for a piece of work.

Left alone, OpenMP and OpenBLAS start one thread per *host* core, whatever the container's CPU
limit, and small fits pay for the synchronisation: on a loaded 2-core machine the digits fit took
0.4-1.9 s with 2 threads and 0.05 s with one. So a step uses at most the container's CPU limit
(cgroup ``cpu.max``, else the CPUs it may run on), and one thread for small work.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator
from pathlib import Path

from clusterflow_steps.cgroup import CGROUP

# Below this many matrix elements per thread, a second thread costs more than it saves.
ELEMENTS_PER_THREAD = 2_000_000


def _quota(max_file: Path, quota_file: Path, period_file: Path) -> float | None:
    """CPUs allowed by cgroup v2 ``cpu.max`` ("<quota> <period>") or v1's quota/period files."""
    try:
        quota, period = max_file.read_text().split()
    except (OSError, ValueError):
        try:
            quota, period = quota_file.read_text().strip(), period_file.read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1"):
        return None
    try:
        return int(quota) / int(period)
    except (ValueError, ZeroDivisionError):
        return None


def cpu_limit(cgroup: Path = CGROUP) -> int:
    """Whole CPUs this process may use: its CPU set, capped by a cgroup quota (at least 1)."""
    cpus = len(os.sched_getaffinity(0))
    quota = _quota(cgroup / "cpu.max", cgroup / "cpu" / "cpu.cfs_quota_us", cgroup / "cpu" / "cpu.cfs_period_us")
    if quota is not None:
        cpus = min(cpus, math.floor(quota))
    return max(1, cpus)


def for_work(n_elements: int, limit: int | None = None) -> int:
    """Threads for work on ``n_elements`` matrix elements: 1 per ``ELEMENTS_PER_THREAD``, within the limit."""
    return max(1, min(cpu_limit() if limit is None else limit, n_elements // ELEMENTS_PER_THREAD))


@contextlib.contextmanager
def limited(n_threads: int) -> Iterator[None]:
    """Run the block with the OpenMP and BLAS libraries loaded so far limited to ``n_threads``."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=n_threads):
        yield
