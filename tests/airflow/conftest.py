"""Airflow tests: the digits_kmeans DAG under a real Airflow 3 (in .venv-airflow) and Docker engine.

Airflow lives in its own venv (``scripts/airflow.sh install``; see orchestration/airflow/), so
these tests, which run on the project venv like the rest of the suite, drive it through
subprocesses: ``tests/airflow/dag_probe.py`` for what the DagBag holds, ``scripts/airflow.sh``
for ``airflow`` commands. They never skip: a missing Airflow is installed by the session fixture,
and a failed install fails every test here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.fixtures.airflow import AIRFLOW_SH, VENV

REPO = Path(__file__).resolve().parents[2]
PROBE = Path(__file__).with_name("dag_probe.py")
MARKER = "DAG-PROBE-JSON: "
DAG_ID = "digits_kmeans"


def airflow_environment(home: Path, data_source: str | Path, **extra: str) -> dict[str, str]:
    """The environment ``scripts/airflow.sh`` completes (DAG folder, ports, ...) for one test home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.pop("CLUSTERFLOW_IMAGE_TAG", None)
    env.update(AIRFLOW_HOME=str(home), AIRFLOW_VENV=str(VENV), CLUSTERFLOW_DATA_SOURCE=str(data_source),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", **extra)
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``airflow ARGS`` in that environment (through scripts/airflow.sh)."""
    return subprocess.run([str(AIRFLOW_SH), "airflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def probe(airflow_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """Load the DAG folder with Airflow's DagBag in the Airflow venv; return what dag_probe.py saw."""
    home = tmp_path_factory.mktemp("probe-home")

    def run(env_extra: dict[str, str] | None = None, **request: Any) -> dict[str, Any]:
        env = airflow_environment(home, "/unused", PYTHONPATH=str(REPO), **(env_extra or {}))
        result = subprocess.run([str(airflow_venv / "bin" / "python"), str(PROBE)], input=json.dumps(request),
                                env=env, capture_output=True, text=True, timeout=120)
        lines = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
        assert result.returncode == 0 and lines, \
            f"dag_probe.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return json.loads(lines[-1][len(MARKER):])

    return run


def local_runner(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``clusterflow run`` of the project venv (the other rendering of the spec)."""
    command = [sys.executable, "-c", "from clusterflow.cli import main; main()"]
    return subprocess.run([*command, "run", "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          timeout=600)


def without_timings(value: Any) -> Any:
    """``value`` with every timing (``*_seconds``) left out, for comparing two runs."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def leftover_containers(engine: Any, **labels: str) -> list[str]:
    """Containers (running or not) carrying all of these ``io.clusterflow.*`` labels, each as its
    name, status and labels (what a failing assertion must show to be acted on)."""
    filters = {"label": [f"io.clusterflow.{k}={v}" for k, v in labels.items()]}
    return [f"{c.name} ({c.status}) {c.labels}" for c in engine.containers.list(all=True, filters=filters)]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    """A running `airflow standalone` and an authenticated REST client for it."""

    def __init__(self, home: Path, data: Path, **extra_env: str):
        self.home, self.data, self.port = home, data, free_port()
        self.url = f"http://localhost:{self.port}"
        env = airflow_environment(home, data, **{
            "AIRFLOW_PORT": str(self.port),
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL": "5",
            # Runs here are triggered. Left on, the cron schedule makes the scheduler start the
            # latest nightly run the moment the DAG is unpaused: six more containers competing
            # with the run under test (and a max_active_runs slot taken). Triggered runs are
            # scheduled exactly the same either way. Off, the scheduler creates no run on an
            # Asset event either: the Asset tests turn it back on.
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
            **extra_env})
        self.log_path = home / "standalone.log"
        self.log = self.log_path.open("w")
        # Its own session and process group: teardown stops exactly what this started.
        self.process = subprocess.Popen([str(AIRFLOW_SH), "standalone"], env=env, stdout=self.log,
                                        stderr=subprocess.STDOUT, start_new_session=True)
        self.session = requests.Session()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-5000:]

    def wait(self, what: str, check, timeout: float, every: float = 2.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"airflow standalone exited ({self.process.returncode}) while waiting for {what}:\n"
                            f"{self.log_tail()}", pytrace=False)
            try:
                found = check()
            except requests.RequestException:
                found = None
            if found:
                return found
            time.sleep(every)
        pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}:\n{self.log_tail()}", pytrace=False)

    def login(self) -> None:
        passwords = self.home / "simple_auth_manager_passwords.json.generated"
        password = self.wait("the admin password", lambda: passwords.is_file() and json.loads(
            passwords.read_text()).get("admin"), 60)
        answer = self.session.post(f"{self.url}/auth/token", json={"username": "admin", "password": password},
                                   timeout=10)
        assert answer.status_code == 201, answer.text
        self.session.headers["Authorization"] = f"Bearer {answer.json()['access_token']}"

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, f"{self.url}/api/v2{path}", timeout=30, **kwargs)

    def trigger(self, conf: dict[str, Any] | None = None) -> str:
        """Trigger a run of the DAG now; its Airflow run id."""
        answer = self.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf or {}})
        assert answer.status_code in (200, 201), answer.text
        return answer.json()["dag_run_id"]

    def finished(self, run_id: str, timeout: float = 300, every: float = 0.25) -> dict[str, Any]:
        """The run once it has succeeded or failed (polled every ``every`` s: the benchmark times it)."""
        def done() -> dict[str, Any] | None:
            run = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
            return run if run.get("state") in ("success", "failed") else None

        return self.wait(f"dag run {run_id}", done, timeout, every=every)

    def task_instances(self, run_id: str) -> dict[tuple[str, str | None], dict[str, Any]]:
        """The run's task instances by (task id, rendered map index or None)."""
        found = self.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances").json()
        return {(ti["task_id"], ti["rendered_map_index"] if ti["map_index"] >= 0 else None): ti
                for ti in found["task_instances"]}

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)
        with_group_left = subprocess.run(["pgrep", "-g", str(self.process.pid)], capture_output=True, text=True)
        if with_group_left.stdout.strip():  # a component that outlived the group leader
            os.killpg(self.process.pid, signal.SIGKILL)
        self.log.close()


@contextlib.contextmanager
def standalone_airflow(home: Path, data: Path, dags: tuple[str, ...] = (DAG_ID,),
                       **extra_env: str) -> Iterator[Airflow]:
    """`scripts/airflow.sh standalone` on a free port, logged in, ``dags`` parsed and unpaused in
    that order (a consumer before its producer, so no Asset event finds it paused)."""
    airflow = Airflow(home, data, **extra_env)
    try:
        airflow.wait("the API server", lambda: requests.get(f"{airflow.url}/api/v2/monitor/health",
                                                            timeout=5).ok, 180)
        # The task execution API (what every task's supervisor calls) finishes setting itself up
        # on its first request: 5-8 s here, which would otherwise land on the first task run.
        airflow.wait("the task execution API", lambda: requests.get(f"{airflow.url}/execution/health",
                                                                    timeout=60).ok, 120)
        airflow.login()
        for dag_id in dags:
            airflow.wait(f"{dag_id} to be parsed", lambda d=dag_id: airflow.api("GET", f"/dags/{d}").ok, 120)
            unpaused = airflow.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
            assert unpaused.ok, unpaused.text
        yield airflow
    finally:
        airflow.stop()


def stub_probe(airflow_venv: Path, probe: Path, marker: str) -> dict[str, Any]:
    """What a stub probe (a script run in the Airflow venv, no Docker engine, no Airflow or clusterflow
    settings from this environment) printed on its last ``marker`` line, as JSON."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CLUSTERFLOW"))}
    done = subprocess.run([str(airflow_venv / "bin" / "python"), str(probe)], env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=120)
    lines = [line for line in done.stdout.splitlines() if line.startswith(marker)]
    assert done.returncode == 0 and lines, done.stderr[-4000:]
    return json.loads(lines[-1][len(marker):])


def stub_probe_fixture(script: str, marker: str) -> Any:
    """A module fixture ``seen``: what the stub probe ``script`` (beside this file) printed, run once."""
    @pytest.fixture(scope="module")
    def seen(airflow_venv: Path) -> dict[str, Any]:
        return stub_probe(airflow_venv, Path(__file__).with_name(script), marker)

    return seen
