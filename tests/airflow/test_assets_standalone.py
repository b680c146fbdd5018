"""The Asset-triggered scoring run under a real scheduler, as in production: unpausing the training
DAG makes the scheduler start its latest nightly run; that run's gate passes, evaluate updates the
model Asset, and the scheduler starts digits_kmeans_assign on it (`scripts/airflow.sh standalone`,
driven through the REST API as in test_standalone.py, with the job schedule on: without it the
scheduler creates no Asset-triggered run either)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from clusterflow import lineage, spec
from tests.airflow.conftest import DAG_ID, Airflow, standalone_airflow
from tests.fixtures.docker import writable_data_dir

pytestmark = pytest.mark.container
ASSIGN_DAG = lineage.ASSIGN_DAG_ID


@pytest.fixture(scope="module")
def standalone(airflow_venv, docker_cli, tmp_path_factory) -> Iterator[Airflow]:
    home = tmp_path_factory.mktemp("assets-standalone-home")
    data = writable_data_dir(tmp_path_factory, "assets-standalone-data")
    schedule = {"AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "True"}
    with standalone_airflow(home, data, dags=(ASSIGN_DAG, DAG_ID), **schedule) as airflow:
        yield airflow


@pytest.fixture(scope="module")
def trained(standalone) -> dict[str, Any]:
    """The nightly run the scheduler started when the DAG was unpaused, once finished."""
    def scheduled() -> str | None:
        runs = standalone.api("GET", f"/dags/{DAG_ID}/dagRuns").json().get("dag_runs", [])
        return next((r["dag_run_id"] for r in runs if r["run_type"] == "scheduled"), None)

    return standalone.finished(standalone.wait("the nightly training run", scheduled, 120), 420)


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
    summary = json.loads((run_dir / "assign/summary.json").read_text())
    best = json.loads((run_dir / "evaluate/metrics.json").read_text())["best"]
    # the nightly run scores the default dataset, digits: its 1,797 samples, with the run's best model
    assert summary["n_samples"] == sum(summary["counts"].values()) == 1797
    assert summary["model"]["variant"] == best and summary["dataset"] == "digits" and len(summary["counts"]) == 10
    assert len(np.load(run_dir / "assign/assignments.npy")) == 1797


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
