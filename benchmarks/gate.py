"""Row: what the launch gate adds, per call and per pipeline run, against the engine's socket direct.

The gate runs as in the stack (``python -m clusterflow.gate`` in its own process, TCP on
loopback); the direct client talks to the same engine's unix socket. Calls alternate between the
two so that drift in the engine's load hits both alike.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import docker

from benchmarks.measure import REPO, Stat, Table, ratio, timed
from clusterflow import engine, pinning, runner, spec
from clusterflow.gate import config
from clusterflow.version import VERSION
from clusterflow_steps.contract import CACHE
from tests.gate.conftest import free_port

CALLS = 50
IMAGE = f"clusterflow/prepare:{VERSION}"


@contextmanager
def gate_process(data_dir: Path) -> Iterator[docker.DockerClient]:
    port = free_port()
    env = {**os.environ, config.DATA_SOURCE_ENV: str(data_dir), config.LISTEN_ENV: f"127.0.0.1:{port}"}
    process = subprocess.Popen([sys.executable, "-m", "clusterflow.gate"], env=env, cwd=REPO,
                               stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/_ping", timeout=1)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise RuntimeError("the launch gate did not answer /_ping within 30 s") from None
                time.sleep(0.1)
        yield docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}")
    finally:
        process.terminate()
        process.wait(10)


def create_remove(client: docker.DockerClient, data_dir: Path) -> None:
    task = spec.stages("bench", spec.PipelineParams(), spec.local_images(VERSION))[0][0]
    container = client.containers.create(
        IMAGE, list(task.command), user=spec.STEP_USER, environment=spec.step_environment(IMAGE, None),
        labels=spec.labels("bench", "bench", task),
        mounts=[engine.docker_mount(m) for m in spec.mounts(str(data_dir))],
        **spec.CONTAINER_POLICY, **spec.step_limits().docker_kwargs())
    container.remove(force=True)


def pipeline(client: docker.DockerClient, root: Path, n: int) -> None:
    """One whole run on the gate's data root (a run id of its own each time)."""
    runner.LocalRunner(client, root, log=lambda line: None, run_as=(spec.STEP_UID, spec.STEP_GID)).run(
        f"bench-{n}", spec.PipelineParams(cache=False), pinning.local(VERSION))


def alternate(direct: Callable[[], float], gated: Callable[[], float], times: int) -> tuple[Stat, Stat]:
    pairs = [(direct(), gated()) for _ in range(times)]
    return Stat(tuple(d for d, _ in pairs)), Stat(tuple(g for _, g in pairs))


def run(client: docker.DockerClient, repeats: int, calls: int = CALLS) -> Table:
    table = Table("Launch gate: added latency (through `python -m clusterflow.gate` vs the engine's socket)",
                  ("call", "direct, median (min–max)", "through the gate", "ratio", "added per call"))
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-gate-") as tmp, gate_process(Path(tmp)) as gated:
        root = Path(tmp)
        root.chmod(0o777)  # the steps' uid 10001 writes here when the harness runs as root
        (root / CACHE).mkdir()
        rows = {
            f"`GET /_ping` (N={calls})": alternate(lambda: timed(client.api.ping), lambda: timed(gated.api.ping),
                                                   calls),
            f"create + remove a step container (N={calls})": alternate(
                lambda: timed(lambda: create_remove(client, root)), lambda: timed(lambda: create_remove(gated, root)),
                calls),
        }
        counter = iter(range(1_000_000))
        rows[f"a whole local run, cache off (N={repeats})"] = alternate(
            lambda: timed(lambda: pipeline(client, root, next(counter))),
            lambda: timed(lambda: pipeline(gated, root, next(counter))), repeats)
    for name, (direct, through) in rows.items():
        scale, unit = (1e3, "ms") if direct.median < 1 else (1, "s")
        table.add(name, Stat(tuple(v * scale for v in direct.values)).cell(unit),
                  Stat(tuple(v * scale for v in through.values)).cell(unit), ratio(through.median, direct.median),
                  f"{(through.median - direct.median) * scale:+.2f} {unit}")
    table.notes.append("The gate opens one engine connection per request and inspects a container before each "
                       "call on it (labels), so a per-container call costs two engine round trips.")
    return table
