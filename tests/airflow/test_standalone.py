"""The DAG under a real scheduler: `scripts/airflow.sh standalone` on a free port, driven through
Airflow's REST API (token from the SimpleAuthManager), as an operator or CI would trigger it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from clusterflow import spec
from tests.airflow.conftest import DAG_ID, Airflow, leftover_containers, standalone_airflow
from tests.fixtures.docker import writable_data_dir

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def standalone(airflow_venv, docker_cli, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("standalone-home")
    data = writable_data_dir(tmp_path_factory, "standalone-data")
    with standalone_airflow(home, data) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def triggered(standalone) -> dict[str, Any]:
    return standalone.finished(standalone.trigger(), 300)


@pytest.mark.parametrize("conf, named", [
    ({"inits": ["k-means", "pca"]}, "inits"),
    ({"eps": 0}, "eps"),
    ({"k": "2-5"}, "k"),
    ({"sweep": [{"algorithm": "kmeans", "eps": 0.5}]}, "sweep"),  # kmeans takes no eps
    ({"sweep": [{"algorithm": "louvain"}]}, "sweep"),
])
def test_the_api_rejects_invalid_params_without_starting_a_run(standalone, conf, named):
    before = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns").json()["total_entries"]
    answer = standalone.api("POST", f"/dags/{DAG_ID}/dagRuns", json={"logical_date": None, "conf": conf})
    assert answer.status_code == 400, answer.text
    assert named in answer.text
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
