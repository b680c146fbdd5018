"""The Assets of a real `airflow dags test digits_kmeans` run, and `airflow dags test
digits_kmeans_assign` scoring a dataset with the model they name (the Docker engine and the built
images, as in test_dags_test.py)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from clusterflow import lineage, spec
from tests.airflow.conftest import airflow, airflow_environment
from tests.airflow.test_dags_test import DagsTest
from tests.fixtures.docker import writable_data_dir

pytestmark = pytest.mark.container


def asset_events(home: Path, uri: str) -> list[dict[str, Any]]:
    """The events of the Asset ``uri`` in that Airflow's database, oldest first."""
    with sqlite3.connect(home / "airflow.db") as db:
        rows = db.execute("SELECT e.source_task_id, e.source_run_id, e.extra FROM asset_event e "
                          "JOIN asset a ON a.id = e.asset_id WHERE a.uri = ? ORDER BY e.id", (uri,)).fetchall()
    return [{"task": task, "run": run, "extra": json.loads(extra) if isinstance(extra, str) else extra}
            for task, run, extra in rows]


def score(home: Path, data: Path, conf: dict[str, Any]) -> Any:
    """``airflow dags test digits_kmeans_assign -c CONF`` in that Airflow home."""
    env = airflow_environment(home, data)
    return airflow(env, "dags", "test", lineage.ASSIGN_DAG_ID, "-c", json.dumps(conf), timeout=600)


@pytest.fixture(scope="module")
def home(airflow_venv, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("assets-home")


@pytest.fixture(scope="module")
def trained(docker_cli, home, tmp_path_factory) -> DagsTest:
    run = DagsTest(home, writable_data_dir(tmp_path_factory, "trained-data"), {"inits": ["k-means++", "pca"]})
    assert run.result.returncode == 0, run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def gated(trained, home, tmp_path_factory) -> DagsTest:
    return DagsTest(home, writable_data_dir(tmp_path_factory, "gated-data"), {"inits": ["k-means++"], "min_ari": 0.99})


def test_a_passed_run_updates_the_model_and_the_metrics_assets_with_its_facts(trained, home):
    metrics = json.loads((trained.run_dir / "evaluate/metrics.json").read_text())
    (model,) = asset_events(home, lineage.MODEL_ASSET_URI)
    assert model["task"] == "evaluate" and model["run"] == trained.run_id
    extra = model["extra"]
    best = metrics["best"]
    assert extra["run_id"] == spec.safe_run_id(trained.run_id) and extra["data_source"] == str(trained.data)
    assert extra["best"] == best and extra["quality_gate_passed"] is True
    assert extra["metrics"]["adjusted_rand"] == metrics["variants"][best]["adjusted_rand"]
    fitted = json.loads((trained.run_dir / f"cluster/{best}/manifest.json").read_text())
    assert extra["cache_key"] == fitted["cache"]["key"]  # the model's: its cluster variant's
    assert extra["image"].startswith("clusterflow/cluster:") and extra["image_digest"].startswith("sha256:")
    (scored,) = asset_events(home, lineage.METRICS_ASSET_URI)
    assert scored["task"] == "report" and scored["extra"]["best"] == best
    assert scored["extra"]["cache_key"] == json.loads((trained.run_dir / "evaluate/manifest.json").read_text())[
        "cache"]["key"]


def test_a_gate_breach_updates_only_the_metrics_asset(gated, home):
    assert gated.run and gated.run["state"] == "failed"
    assert gated.run_id not in [e["run"] for e in asset_events(home, lineage.MODEL_ASSET_URI)]
    breach = asset_events(home, lineage.METRICS_ASSET_URI)[-1]
    assert breach["run"] == gated.run_id and breach["extra"]["quality_gate_passed"] is False
    assert breach["extra"]["best"] == "k-means++"  # evaluate's summary, pushed before the breach


def test_the_scoring_dag_scores_with_the_newest_passed_model_by_hand(trained, gated, home):
    done = score(home, trained.data, {"dataset": "digits"})
    assert done.returncode == 0, (done.stdout + done.stderr)[-6000:]
    summary = trained.run_dir / "assign/summary.json"  # the passed run's, not the gated one's
    assert summary.is_file() and (trained.run_dir / "assign/assignments.npy").is_file()
    assert not (gated.run_dir / "assign").exists()


def test_the_scoring_dag_refuses_a_missing_dataset_in_one_line(trained, home):
    done = score(home, trained.data, {"dataset": "/nonexistent/new.csv"})
    assert done.returncode != 0
    assert "dataset '/nonexistent/new.csv' is missing" in done.stdout + done.stderr


def test_the_scoring_dag_refuses_when_no_model_passed_its_gate(docker_cli, airflow_venv, tmp_path_factory):
    fresh = tmp_path_factory.mktemp("no-model-home")
    data = writable_data_dir(tmp_path_factory, "no-model-data")
    assert airflow(airflow_environment(fresh, data), "db", "migrate", timeout=300).returncode == 0
    done = score(fresh, data, {})
    assert done.returncode != 0
    assert "no model whose quality gate passed" in done.stdout + done.stderr
