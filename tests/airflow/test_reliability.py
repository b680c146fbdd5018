"""Failure and recovery of the DAG under Airflow: resume, timeouts, a missing engine, concurrency.

One standalone Airflow serves the scheduler tests. It reaches the Docker engine through a tiny
proxy (a unix socket in the test process, ``DOCKER_HOST``), so a test can take the engine away
and give it back, and it runs the steps from images tagged for this module only, so untagging one
to make a step fail cannot disturb anything else using the engine. The timeout test uses
``airflow dags test`` with ``CLUSTERFLOW_TASK_TIMEOUT_SECONDS`` (the production DAG keeps its
timeouts: tests/airflow/test_dag.py).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import select
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from clusterflow import spec
from tests.airflow.conftest import (AIRFLOW_SH, DAG_ID, Airflow, airflow, airflow_environment,
                                    leftover_containers, standalone_airflow)
from tests.containers.conftest import image
from tests.fixtures.docker import writable_data_dir

pytestmark = pytest.mark.container

STEPS = ("prepare", "cluster", "evaluate", "report")
RETRY_DELAY = 3  # seconds: CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS for the standalone Airflow


class EngineProxy:
    """A unix socket that forwards every connection to the real Docker engine, until stopped."""

    def __init__(self, path: Path):
        self.path = path
        host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
        if host.startswith("unix://"):
            self.upstream: Any = (socket.AF_UNIX, host[len("unix://"):])
        else:  # tcp://host:port
            name, _, port = host.split("://", 1)[1].rpartition(":")
            self.upstream = (socket.AF_INET, (name, int(port)))
        self.server: socket.socket | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.path}"

    def start(self) -> None:
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.path))
        self.server.listen(64)
        threading.Thread(target=self._accept, args=(self.server,), daemon=True).start()

    def stop(self) -> None:
        """No engine at the address any more: new connections fail (the file is gone)."""
        if self.server is not None:
            self.server.close()
            self.server = None
        self.path.unlink(missing_ok=True)

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:  # closed by stop()
                return
            threading.Thread(target=self._pump, args=(client,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        family, address = self.upstream
        with client, socket.socket(family, socket.SOCK_STREAM) as engine_side:
            engine_side.connect(address)
            peers = {client: engine_side, engine_side: client}
            open_ = set(peers)
            while open_:
                readable, _, _ = select.select(list(open_), [], [])
                for sock in readable:
                    data = sock.recv(65536)
                    if data:
                        peers[sock].sendall(data)
                    else:  # half close: pass it on (docker attach relies on it)
                        open_.discard(sock)
                        try:
                            peers[sock].shutdown(socket.SHUT_WR)
                        except OSError:
                            pass


@pytest.fixture(scope="module")
def image_tag(docker_cli, engine) -> Iterator[str]:
    """The four step images under a tag of this module's own (removed afterwards)."""
    tag = f"reliability-{os.getpid()}"
    for step in STEPS:
        engine.images.get(image(step)).tag(f"clusterflow/{step}", tag)
    try:
        yield tag
    finally:
        for step in STEPS:
            try:
                engine.images.remove(f"clusterflow/{step}:{tag}", noprune=True)
            except Exception:  # already untagged
                pass


@pytest.fixture(scope="module")
def proxy(tmp_path_factory) -> Iterator[EngineProxy]:
    found = EngineProxy(tmp_path_factory.mktemp("engine") / "docker.sock")
    found.start()
    try:
        yield found
    finally:
        found.stop()


@pytest.fixture(scope="module")
def scheduler(airflow_venv, docker_cli, image_tag, proxy, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("reliability-home")
    data = writable_data_dir(tmp_path_factory, "reliability-data")
    with standalone_airflow(home, data, DOCKER_HOST=proxy.url, CLUSTERFLOW_IMAGE_TAG=image_tag,
                            CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS=str(RETRY_DELAY)) as found:
        yield found


def task_log(airflow: Airflow, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
    """The task's log file for that try (Airflow's JSON lines, read as text)."""
    folder = airflow.home / "logs" / f"dag_id={DAG_ID}" / f"run_id={run_id}" / f"task_id={task_id}"
    if map_index >= 0:
        folder = folder / f"map_index={map_index}"
    path = folder / f"attempt={try_number}.log"
    return path.read_text() if path.is_file() else ""


def manifest(airflow: Airflow, run_id: str, step_dir: str) -> dict[str, Any]:
    return json.loads((airflow.data / "runs" / spec.safe_run_id(run_id) / step_dir / "manifest.json").read_text())


def states(instances: dict) -> dict:
    return {key: ti["state"] for key, ti in instances.items()}


def test_clearing_a_failed_run_resumes_it_from_the_cache(scheduler, engine, image_tag):
    conf = {"inits": ["k-means++", "pca"], "n_init": 2, "seed": 7}
    evaluate_image = f"clusterflow/evaluate:{image_tag}"
    engine.images.remove(evaluate_image, noprune=True)  # evaluate fails: its image is gone
    try:
        run_id = scheduler.trigger(conf)
        first = scheduler.finished(run_id)
    finally:
        engine.images.get(image("evaluate")).tag("clusterflow/evaluate", image_tag)
    assert first["state"] == "failed"
    before = scheduler.task_instances(run_id)
    assert states(before) == {("plan", None): "success", ("prepare", None): "success",
                              ("cluster", "k-means++"): "success", ("cluster", "pca"): "success",
                              ("evaluate", None): "failed", ("report", None): "skipped",
                              ("outcome", None): "failed"}
    assert before[("evaluate", None)]["try_number"] == 1  # image not found: AirflowFailException, no retry
    assert f"image {evaluate_image} not found" in task_log(scheduler, run_id, "evaluate", 1)
    run_dir = scheduler.data / "runs" / spec.safe_run_id(run_id)
    models = {v: run_dir / "cluster" / v / "model.joblib" for v in conf["inits"]}
    model_bytes = {v: path.read_bytes() for v, path in models.items()}
    model_inodes = {v: path.stat().st_ino for v, path in models.items()}
    finished = ["prepare", *(f"cluster/{v}" for v in conf["inits"])]
    manifests = {d: (run_dir / d / "manifest.json").read_bytes() for d in finished}
    assert all(json.loads(m)["cache"]["hit"] is False for m in manifests.values())  # computed in this run

    started = time.monotonic()
    cleared = scheduler.api("POST", f"/dags/{DAG_ID}/clearTaskInstances",
                            json={"dry_run": False, "dag_run_id": run_id, "only_failed": False})
    assert cleared.ok, cleared.text
    assert len(cleared.json()["task_instances"]) == 7
    second = scheduler.finished(run_id)
    print(f"resume after clearing the run: {time.monotonic() - started:.1f} s")
    assert second["state"] == "success", scheduler.log_tail()
    after = scheduler.task_instances(run_id)
    assert states(after) == {**states(before), ("evaluate", None): "success", ("report", None): "success",
                             ("outcome", None): "skipped"}
    tries = {key: ti["try_number"] for key, ti in after.items()}
    assert {key: n for key, n in tries.items() if key[0] != "outcome"} == dict.fromkeys(
        [k for k in tries if k[0] != "outcome"], 2), tries  # every task ran again (outcome: skipped unrun)

    # The resumed tasks hit the cache store their first try committed to: the same bytes, copied
    # in (new inodes; the run's own directory never counts as a hit), a fresh manifest (README, Step cache).
    key = json.loads(manifests["prepare"])["cache"]["key"]
    assert f"prepare: cache hit {key[:12]}" in task_log(scheduler, run_id, "prepare", 2)
    for variant in conf["inits"]:
        index = after[("cluster", variant)]["map_index"]
        assert "cluster: cache hit" in task_log(scheduler, run_id, "cluster", 2, index), variant
        assert models[variant].read_bytes() == model_bytes[variant]
        assert models[variant].stat().st_ino != model_inodes[variant]  # a copy from the store
    for d in finished:
        first, again = json.loads(manifests[d]), json.loads((run_dir / d / "manifest.json").read_text())
        assert again["cache"] == {**first["cache"], "hit": True, "source": spec.safe_run_id(run_id)}, d
        assert again["outputs"] == first["outputs"], d
    assert manifest(scheduler, run_id, "evaluate")["cache"]["hit"] is False  # it never ran before
    assert (run_dir / "report/report.html").is_file()
    assert leftover_containers(engine, dag_id=DAG_ID, run_id=spec.safe_run_id(run_id)) == []


def test_a_task_started_without_an_engine_fails_naming_docker_host_and_a_retry_succeeds(scheduler, proxy, engine):
    """However many tries the engine stays away for (the first at least: the engine comes back only
    once its failure is in the log), each fails naming DOCKER_HOST and is retried; the first try
    after it is back runs prepare. No retry window has to be caught."""
    message = f"no Docker engine answers at {proxy.url} (DOCKER_HOST={proxy.url}"
    proxy.stop()
    try:
        run_id = scheduler.trigger({"inits": ["pca"], "n_init": 1, "seed": 11})
        scheduler.wait("prepare's first try to fail", lambda: message in task_log(scheduler, run_id, "prepare", 1),
                       120, every=0.3)
    finally:
        proxy.start()
    back = time.monotonic()
    run = scheduler.finished(run_id)
    assert run["state"] == "success", scheduler.log_tail()
    tries = scheduler.task_instances(run_id)[("prepare", None)]["try_number"]
    print(f"engine back to prepare done: {time.monotonic() - back:.1f} s; prepare tries: {tries}")
    assert tries >= 2
    for failed in range(1, tries):  # tries that ran with the engine away; a retry, not a hard failure
        log = task_log(scheduler, run_id, "prepare", failed)
        assert message in log and "AirflowFailException" not in log, log[-3000:]
    assert "==> prepare" in task_log(scheduler, run_id, "prepare", tries)


def test_two_concurrent_runs_with_different_params_keep_apart(scheduler, engine):
    confs = [{"inits": ["pca"], "n_init": 1, "seed": 21}, {"inits": ["random"], "n_init": 1, "seed": 22}]
    run_ids = [scheduler.trigger(conf) for conf in confs]
    runs = [scheduler.finished(r) for r in run_ids]
    assert [r["state"] for r in runs] == ["success", "success"], scheduler.log_tail()
    # they ran at once (max_active_runs 2): each started before the other ended, as Airflow recorded it
    started, ended = ([dt.datetime.fromisoformat(r[key]) for r in runs] for key in ("start_date", "end_date"))
    assert max(started) < min(ended), runs
    assert spec.safe_run_id(run_ids[0]) != spec.safe_run_id(run_ids[1])
    for run_id, conf in zip(run_ids, confs, strict=True):
        assert manifest(scheduler, run_id, "prepare")["run_id"] == spec.safe_run_id(run_id)
        metrics = json.loads((scheduler.data / "runs" / spec.safe_run_id(run_id) / "evaluate/metrics.json").read_text())
        assert list(metrics["variants"]) == conf["inits"]
        assert manifest(scheduler, run_id, f"cluster/{conf['inits'][0]}")["params"]["seed"] == conf["seed"]


def test_a_step_over_its_execution_timeout_is_killed_and_its_container_removed(airflow_venv, docker_cli, engine,
                                                                              tmp_path):
    """Every try of prepare outlives its timeout by construction, not by luck: at 0.01 CPUs its
    container needs minutes for the ~2 s of CPU that drawing 1,000,000 synthetic rows takes, so
    each of the three tries is still running when its 20 s run out (8 s were too few for a task on
    a loaded machine to get its container started at all; and digits, ~0.15 s of CPU, finished in
    20 s). What the engine did is read from its events (start, kill, destroy of each try's
    container), not sampled while it happened."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    slow = {spec.STEP_CPUS_ENV: "0.01"}
    env = airflow_environment(tmp_path / "home", data, CLUSTERFLOW_TASK_TIMEOUT_SECONDS="20",
                              CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS="1", **slow)
    labels = {"type": "container", "label": [f"io.clusterflow.dag_id={DAG_ID}", "io.clusterflow.task_id=prepare"]}
    since = int(time.time()) - 1
    host_configs: dict[str, Any] = {}  # of each prepare container, inspected on its start event
    events = engine.events(since=since, decode=True, filters={**labels, "event": "start"})

    def inspect_first_start() -> None:
        for event in events:  # this run's, and any other run's on the engine meanwhile
            with contextlib.suppress(docker.errors.NotFound):
                host_configs[event["id"]] = engine.api.inspect_container(event["id"])["HostConfig"]

    inspector = threading.Thread(target=inspect_first_start, daemon=True)
    inspector.start()
    started = time.monotonic()
    conf = {"inits": ["pca"], "n_init": 1, "dataset": "synthetic", "n_samples": 1_000_000}
    test = subprocess.run([str(AIRFLOW_SH), "test", "-c", json.dumps(conf)], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    events.close()
    inspector.join(10)
    output = test.stdout
    print(f"airflow dags test with a 20 s timeout: {time.monotonic() - started:.1f} s")
    assert test.returncode != 0
    listed = airflow(env, "dags", "list-runs", DAG_ID, "-o", "json")
    run_id = spec.safe_run_id(json.loads(listed.stdout.strip().splitlines()[-1])[0]["run_id"])
    seen = engine.events(since=since, until=int(time.time()) + 1, decode=True,
                         filters={**labels, "label": [*labels["label"], f"io.clusterflow.run_id={run_id}"]})
    by_container: dict[str, list[str]] = {}
    for event in seen:
        by_container.setdefault(event["id"], []).append(event["status"])
    assert len(by_container) == 3, (by_container, output[-4000:])  # the first try and both retries
    for statuses in by_container.values():  # each started, was killed while running, and removed
        assert [s for s in statuses if s in ("start", "kill", "destroy")] == ["start", "kill", "destroy"], statuses
    assert output.count("==> prepare:") == 3
    assert output.count("AirflowTaskTimeout") >= 3, output[-4000:]
    assert "NotFound" not in output  # on_kill found the container removed and said so
    assert leftover_containers(engine, dag_id=DAG_ID, run_id=run_id) == []
    assert not (data / "runs" / run_id / "prepare").exists()  # nothing half-written in place
    # The DAG's containers are hardened and limited like the local runner's (spec.CONTAINER_POLICY).
    limits = spec.step_limits(env)
    host_config = next(host_configs[c] for c in by_container if c in host_configs)  # this run's first
    assert host_config["NetworkMode"] == "none" and host_config["ReadonlyRootfs"] is True, host_config
    assert host_config["CapDrop"] == ["ALL"] and host_config["SecurityOpt"] == ["no-new-privileges"]
    assert "/tmp" in host_config["Tmpfs"]
    assert (host_config["Memory"], host_config["NanoCpus"]) == (limits.memory, limits.nano_cpus)
