"""The Assets of the training DAG and the scoring DAG scheduled on its model, as Airflow's DagBag
loads them (dag_probe.py in the Airflow venv; no Docker)."""

from __future__ import annotations

from typing import Any

import pytest

from clusterflow import lineage


@pytest.fixture(scope="module")
def seen(probe) -> dict[str, Any]:
    return probe()


def test_evaluate_produces_the_model_and_report_the_metrics(seen):
    outlets = seen["outlets"]
    assert outlets["evaluate"] == [lineage.MODEL_ASSET_URI]  # evaluate succeeds only when the gate passed
    assert outlets["report"] == [lineage.METRICS_ASSET_URI]  # report runs after a breach too
    assert all(not found for task, found in outlets.items() if task not in ("evaluate", "report"))


def test_the_scoring_dag_is_scheduled_on_the_model_asset(seen):
    scoring = seen["assign_dag"]
    assert scoring["fileloc"].endswith("orchestration/dags/digits_kmeans_assign.py")
    assert scoring["timetable"] == "AssetTriggeredTimetable"
    assert scoring["schedule_assets"] == [lineage.MODEL_ASSET_URI]
    assert scoring["inlets"] == {"plan": [lineage.MODEL_ASSET_URI], "assign": []}
    assert scoring["tasks"]["assign"]["upstream"] == ["plan"]
    assert scoring["tasks"]["plan"]["retries"] == 0


def test_the_scoring_dag_launches_assign_like_a_training_step(seen):
    scoring = seen["assign_dag"]
    assert scoring["assign_class"] == "StepOperator"
    assert scoring["assign_network_mode"] == "none" and scoring["assign_user"] == seen["docker"]["prepare"]["user"]


def test_the_scoring_dag_takes_an_optional_dataset_param(seen):
    assert seen["assign_dag"]["params"] == {"dataset": {"default": None, "schema": {"type": ["null", "string"]}}}
