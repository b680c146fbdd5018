"""The Asset-triggered scoring run under a real scheduler: a training run whose gate passes updates
the model Asset, and the scheduler starts digits_kmeans_assign on it (`scripts/airflow.sh
standalone`, driven through the REST API as in test_standalone.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from clusterflow import lineage, spec
from tests.airflow.conftest import Airflow, standalone_airflow

pytestmark = pytest.mark.container
ASSIGN_DAG = lineage.ASSIGN_DAG_ID


@pytest.fixture(scope="module")
def standalone(airflow_venv, docker_cli, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("assets-standalone-home")
    data = tmp_path_factory.mktemp("assets-standalone-data") / "data"
    data.mkdir()
    data.chmod(0o777)
    with standalone_airflow(home, data) as airflow:
        airflow.wait("the scoring DAG to be parsed", lambda: airflow.api("GET", f"/dags/{ASSIGN_DAG}").ok, 120)
        unpaused = airflow.api("PATCH", f"/dags/{ASSIGN_DAG}", json={"is_paused": False})
        assert unpaused.ok, unpaused.text
        yield airflow


@pytest.fixture(scope="module")
def trained(standalone) -> dict[str, Any]:
    return standalone.finished(standalone.trigger({"inits": ["k-means++"]}), 300)


@pytest.fixture(scope="module")
def scored(standalone, trained) -> dict[str, Any]:
    """The scoring run the scheduler started on the model Asset's update, once finished."""
    def started() -> dict[str, Any] | None:
        runs = standalone.api("GET", f"/dags/{ASSIGN_DAG}/dagRuns").json().get("dag_runs", [])
        done = [r for r in runs if r["run_type"] == "asset_triggered" and r["state"] in ("success", "failed")]
        return done[0] if done else None

    return standalone.wait("the asset-triggered scoring run", started, 300)


def test_a_passed_training_run_triggers_the_scoring_dag(trained, scored, standalone):
    assert trained["state"] == "success", standalone.log_tail()
    assert scored["state"] == "success", standalone.log_tail()
    run_dir = standalone.data / "runs" / spec.safe_run_id(trained["dag_run_id"])
    assert (run_dir / "assign/summary.json").is_file() and (run_dir / "assign/assignments.npy").is_file()


def test_the_asset_view_shows_the_lineage_between_the_two_dags(trained, standalone):
    assets = {a["uri"]: a for a in standalone.api("GET", "/assets").json()["assets"]}
    model, metrics = assets[lineage.MODEL_ASSET_URI], assets[lineage.METRICS_ASSET_URI]
    assert [(t["dag_id"], t["task_id"]) for t in model["producing_tasks"]] == [(spec.DAG_ID, "evaluate")]
    assert [d["dag_id"] for d in model["scheduled_dags"]] == [ASSIGN_DAG]
    assert [(t["dag_id"], t["task_id"]) for t in metrics["producing_tasks"]] == [(spec.DAG_ID, "report")]
    events = standalone.api("GET", "/assets/events", params={"asset_id": model["id"]}).json()["asset_events"]
    (event,) = events
    assert event["extra"]["run_id"] == spec.safe_run_id(trained["dag_run_id"])
    assert event["extra"]["quality_gate_passed"] is True and event["extra"]["image_digest"].startswith("sha256:")
