"""The DAG under a real scheduler: `scripts/airflow.sh standalone` on a free port, driven through
Airflow's REST API (token from the SimpleAuthManager), as an operator or CI would trigger it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from clusterflow import spec
from tests.airflow.conftest import AIRFLOW_SH, DAG_ID, airflow_environment, leftover_containers

pytestmark = pytest.mark.container


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Airflow:
    """A running `airflow standalone` and an authenticated REST client for it."""

    def __init__(self, home: Path, data: Path):
        self.home, self.data, self.port = home, data, free_port()
        self.url = f"http://localhost:{self.port}"
        env = airflow_environment(home, data, AIRFLOW_PORT=str(self.port),
                                  AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
                                  AIRFLOW__SCHEDULER__MIN_FILE_PROCESS_INTERVAL="5")
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


@pytest.fixture(scope="module")
def standalone(airflow_venv, docker_cli, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("standalone-home")
    data = tmp_path_factory.mktemp("standalone-data") / "data"
    data.mkdir()
    data.chmod(0o777)
    airflow = Airflow(home, data)
    try:
        airflow.wait("the API server", lambda: requests.get(f"{airflow.url}/api/v2/monitor/health",
                                                            timeout=5).ok, 180)
        airflow.login()
        airflow.wait("the DAG to be parsed", lambda: airflow.api("GET", f"/dags/{DAG_ID}").ok, 120)
        unpaused = airflow.api("PATCH", f"/dags/{DAG_ID}", json={"is_paused": False})
        assert unpaused.ok, unpaused.text
        yield airflow
    finally:
        airflow.stop()


@pytest.fixture(scope="module")
def triggered(standalone) -> dict[str, Any]:
    answer = standalone.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": {}})
    assert answer.status_code in (200, 201), answer.text
    run_id = answer.json()["dag_run_id"]

    def finished() -> dict[str, Any] | None:
        run = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}").json()
        return run if run.get("state") in ("success", "failed") else None

    return standalone.wait(f"dag run {run_id}", finished, 300, every=3)


def test_the_api_rejects_invalid_params_without_starting_a_run(standalone):
    before = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["total_entries"]
    answer = standalone.api("POST", f"/dags/{DAG_ID}/dagRuns",
                            json={"logical_date": None, "conf": {"inits": ["k-means", "pca"]}})
    assert answer.status_code == 400, answer.text
    assert "inits" in answer.text
    assert standalone.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["total_entries"] == before


def test_a_triggered_run_succeeds_under_the_scheduler(triggered, standalone):
    assert triggered["state"] == "success", standalone.log_tail()
    instances = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns/{triggered['dag_run_id']}/taskInstances").json()
    states = {(ti["task_id"], ti["rendered_map_index"] if ti["map_index"] >= 0 else None): ti["state"]
              for ti in instances["task_instances"]}
    assert states == {("plan", None): "success", ("prepare", None): "success",
                      ("cluster", "k-means++"): "success", ("cluster", "random"): "success",
                      ("cluster", "pca"): "success", ("evaluate", None): "success",
                      ("report", None): "success", ("outcome", None): "skipped"}


def test_its_artifacts_are_on_the_data_root(triggered, standalone):
    run_dir = standalone.data / "runs" / spec.safe_run_id(triggered["dag_run_id"])
    metrics = json.loads((run_dir / "evaluate/metrics.json").read_text())
    assert sorted(metrics["variants"]) == ["k-means++", "pca", "random"]
    assert (run_dir / "report/report.html").stat().st_size > 10_000


def test_no_container_outlives_the_scheduled_run(triggered, engine):
    assert leftover_containers(engine, dag_id=DAG_ID, run_id=spec.safe_run_id(triggered["dag_run_id"])) == []
