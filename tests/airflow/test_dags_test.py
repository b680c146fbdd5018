"""`airflow dags test digits_kmeans` against the real Docker engine and the built images.

The DAG's run must produce what the local runner produces for the same params (both render one
spec); a quality-gate breach must fail evaluate and the run, still write the report, and leave no
container behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import docker
import pytest

from clusterflow import spec
from tests.containers.conftest import assert_report_shows, image
from tests.fixtures.docker import writable_data_dir
from tests.airflow.conftest import (AIRFLOW_SH, DAG_ID, airflow, airflow_environment, leftover_containers,
                                    local_runner, without_timings)

pytestmark = pytest.mark.container


def json_output(stdout: str) -> Any:
    """The JSON document an `airflow ... -o json` command printed (after any warnings)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(("[", "{")):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise AssertionError(f"no JSON in the output:\n{stdout[-2000:]}")


class DagsTest:
    """One `scripts/airflow.sh test` run: its output, Airflow run id, run directory and states."""

    def __init__(self, home: Path, data: Path | str, conf: dict[str, Any] | None = None, **env: str):
        self.home, self.data = home, data
        self.env = airflow_environment(home, data, **env)
        before = {r["run_id"] for r in self.runs()} if (home / "airflow.db").exists() else set()
        args = ["-c", json.dumps(conf)] if conf else []
        # The engine's container create events, read while the run goes: the engine keeps only its
        # last 256 events, which a busy engine overwrites before a later look-up.
        events = docker.from_env().events(since=int(time.time()) - 1, decode=True,
                                          filters={"type": "container", "event": "create"})
        self.creates: list[dict[str, str]] = []
        listener = threading.Thread(target=self._listen, args=(events,), daemon=True)
        listener.start()
        try:
            self.result = subprocess.run([str(AIRFLOW_SH), "test", *args], env=self.env, capture_output=True,
                                         text=True, timeout=600)
            time.sleep(1)  # the last create's event, on its way
        finally:
            events.close()
            listener.join(10)
        new = [r for r in self.runs() if r["run_id"] not in before]
        self.run = new[0] if len(new) == 1 else None
        self.run_id = self.run["run_id"] if self.run else None

    @property
    def output(self) -> str:
        return self.result.stdout + self.result.stderr

    def runs(self) -> list[dict[str, Any]]:
        listed = airflow(self.env, "dags", "list-runs", DAG_ID, "-o", "json")
        ran = f"\n--- output of `airflow.sh test`:\n{self.output[-4000:]}" if hasattr(self, "result") else ""
        assert listed.returncode == 0, listed.stderr[-2000:] + ran
        return json_output(listed.stdout)

    def task_states(self) -> dict[str, str]:
        found = airflow(self.env, "tasks", "states-for-dag-run", DAG_ID, self.run_id, "-o", "json")
        assert found.returncode == 0, found.stderr[-2000:]
        states: dict[str, str] = {}
        for row in json_output(found.stdout):
            mapped = str(row.get("map_index", "")) not in ("", "-1")
            key = f"{row['task_id']}[{row['map_index']}]" if mapped else row["task_id"]
            states[key] = row["state"]
        return states

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        with sqlite3.connect(self.home / "airflow.db") as db:
            row = db.execute("SELECT value FROM xcom WHERE dag_id=? AND run_id=? AND task_id=? AND key=?",
                             (DAG_ID, self.run_id, task_id, key)).fetchone()
        return None if row is None else json.loads(row[0])

    def _listen(self, events: Any) -> None:
        with contextlib.suppress(Exception):  # the stream closed under it: the run is over
            for event in events:
                self.creates.append(event["Actor"]["Attributes"])

    def created(self) -> dict[str, dict[str, str]]:
        """Every container the engine created for this run (by its name or its run id label: another
        run on the same engine meanwhile is not this one's), by name: its labels as the engine
        received them (its ``create`` events), not as the DAG's code renders them."""
        run_id = spec.safe_run_id(self.run_id)
        found = {attributes["name"]: {k: v for k, v in attributes.items() if k.startswith("io.clusterflow.")}
                 for attributes in self.creates}
        return {name: labels for name, labels in found.items()
                if name.startswith(f"clusterflow.{run_id}.") or labels.get("io.clusterflow.run_id") == run_id}

    @property
    def run_dir(self) -> Path:
        return self.data / "runs" / spec.safe_run_id(self.run_id)


@pytest.fixture(scope="module")
def home(airflow_venv, tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("airflow-home")


@pytest.fixture(scope="module")
def dag_run(docker_cli, home, tmp_path_factory) -> DagsTest:
    return DagsTest(home, writable_data_dir(tmp_path_factory, "dag-data"))


@pytest.fixture(scope="module")
def runner_run_dir(docker_cli, tmp_path_factory) -> Path:
    data = writable_data_dir(tmp_path_factory, "runner-data")
    result = local_runner(data, "--run-id", "same-params")
    assert result.returncode == 0, result.stderr[-3000:]
    return data / "runs" / "same-params"


def test_the_dag_run_succeeds_with_every_task(dag_run):
    assert dag_run.result.returncode == 0, dag_run.output[-6000:]
    assert dag_run.run and dag_run.run["state"] == "success"
    states = dag_run.task_states()
    assert states == {"plan": "success", "prepare": "success", "cluster[0]": "success", "cluster[1]": "success",
                      "cluster[2]": "success", "evaluate": "success", "report": "success", "outcome": "skipped"}


def test_the_run_directory_is_derived_from_the_airflow_run_id(dag_run):
    assert dag_run.run_id.startswith("manual__")
    assert [p.name for p in (dag_run.data / "runs").iterdir()] == [spec.safe_run_id(dag_run.run_id)]
    prepare = json.loads((dag_run.run_dir / "prepare/manifest.json").read_text())
    assert prepare["run_id"] == spec.safe_run_id(dag_run.run_id)


def test_metrics_equal_the_local_runners_for_the_same_params(dag_run, runner_run_dir):
    ours = json.loads((dag_run.run_dir / "evaluate/metrics.json").read_text())
    theirs = json.loads((runner_run_dir / "evaluate/metrics.json").read_text())
    assert sorted(ours) == sorted(theirs)
    assert sorted(ours["variants"]) == ["k-means++", "pca", "random"]
    assert without_timings(ours) == without_timings(theirs)


def test_manifests_record_the_image_and_its_digest_like_the_runner(dag_run, runner_run_dir):
    # (digests are not compared with each other: an image rebuilt between the two runs differs)
    for variant in ("k-means++", "random", "pca"):
        ours = json.loads((dag_run.run_dir / f"cluster/{variant}/manifest.json").read_text())
        theirs = json.loads((runner_run_dir / f"cluster/{variant}/manifest.json").read_text())
        assert ours["image"]["name"] == theirs["image"]["name"] == image("cluster")
        assert re.fullmatch(r"(\S+@)?sha256:[0-9a-f]{64}", ours["image"]["digest"]), ours["image"]
        assert without_timings(ours["params"]) == without_timings(theirs["params"])


def test_each_task_but_the_report_commits_its_outputs_to_the_store(dag_run):
    """The commit containers ran inside the step tasks: the store holds read-only copies of what
    the run's prepare, cluster and evaluate wrote, under the keys their manifests record."""
    store = dag_run.data / "cache"
    assert sorted(p.name for p in store.iterdir()) == ["cluster", "evaluate", "prepare"]
    assert "the cache commit failed" not in dag_run.output
    for step_dir in ("prepare", "cluster/k-means++", "cluster/random", "cluster/pca", "evaluate"):
        written = json.loads((dag_run.run_dir / step_dir / "manifest.json").read_text())
        entry = store / step_dir.split("/")[0] / written["cache"]["key"]
        for name in written["outputs"]:
            stored = entry / name
            assert stored.read_bytes() == (dag_run.run_dir / step_dir / name).read_bytes()
            assert stored.stat().st_mode & 0o777 == 0o444
            assert stored.stat().st_ino != (dag_run.run_dir / step_dir / name).stat().st_ino


def test_the_report_is_written(dag_run):
    metrics = json.loads((dag_run.run_dir / "evaluate/metrics.json").read_text())
    assert_report_shows((dag_run.run_dir / "report/report.html").read_text(), metrics["variants"])
    assert dag_run.xcom("report") == f"runs/{spec.safe_run_id(dag_run.run_id)}/report/report.html"


def test_evaluate_pushes_a_one_line_summary_of_the_best_variant(dag_run):
    metrics = json.loads((dag_run.run_dir / "evaluate/metrics.json").read_text())
    summary = dag_run.xcom("evaluate")
    assert summary is not None, (
        "evaluate pushed no summary: its container's last stdout line must be a one-line JSON object "
        "with 'best' (see orchestration/clusterflow/operators.py, _summary)")
    assert summary["best"] == metrics["best"]
    assert summary["ranked_by"] == metrics["ranked_by"]
    assert without_timings(summary["metrics"]) == without_timings(metrics["variants"][metrics["best"]])
    assert summary["quality_gate"]["passed"] is True


def test_every_container_the_engine_created_carries_the_readmes_name_and_labels(dag_run, engine):
    """Names `clusterflow.<run id>.<step>[.<variant>]` (a cache commit's with `.commit`; `+` is not
    allowed in a name), labels `io.clusterflow.{dag_id,run_id,task_id,try_number}` (README)."""
    run_id = spec.safe_run_id(dag_run.run_id)
    tasks = {"prepare": "prepare", "cluster.k-means--": "cluster[k-means++]", "cluster.random": "cluster[random]",
             "cluster.pca": "cluster[pca]", "evaluate": "evaluate", "report": "report"}
    expected = {f"clusterflow.{run_id}.{name}": task for name, task in tasks.items()}
    expected |= {f"{name}.commit": task for name, task in expected.items() if task != "report"}
    created = dag_run.created()
    assert sorted(created) == sorted(expected)
    for name, labels in created.items():
        assert labels == {"io.clusterflow.dag_id": DAG_ID, "io.clusterflow.run_id": run_id,
                          "io.clusterflow.task_id": expected[name], "io.clusterflow.try_number": "1"}, name


def test_no_container_outlives_the_dag_run(dag_run, engine):
    assert dag_run.created()  # the label check below can find them (the test above checks the labels)
    assert leftover_containers(engine, dag_id=DAG_ID, run_id=spec.safe_run_id(dag_run.run_id)) == []


@pytest.fixture(scope="module")
def gated_run(docker_cli, home, tmp_path_factory, dag_run) -> DagsTest:
    conf = {"inits": ["k-means++"], "min_ari": 0.99}  # the demo's ARI is ~0.47: no run meets this
    return DagsTest(home, writable_data_dir(tmp_path_factory, "gated-data"), conf)


def test_a_quality_gate_breach_fails_evaluate_and_the_run_but_still_reports(gated_run):
    assert gated_run.result.returncode != 0
    assert gated_run.run and gated_run.run["state"] == "failed"
    assert gated_run.task_states() == {"plan": "success", "prepare": "success", "cluster[0]": "success",
                                       "evaluate": "failed", "report": "success", "outcome": "failed"}
    # the step's own one-line reason, in the task log and in the task's failure
    assert "quality gate failed (exit 3): Error: quality gate failed for best variant k-means++" in gated_run.output
    assert json.loads((gated_run.run_dir / "evaluate/manifest.json").read_text())["exit_status"] == 3
    assert (gated_run.run_dir / "report/report.html").is_file()
    gate = gated_run.xcom("evaluate", "quality_gate")
    assert gate["passed"] is False and gate["reason"]


def test_a_gate_failure_is_not_retried(gated_run):
    assert gated_run.output.count("==> evaluate:") == 1


def test_no_container_outlives_a_failed_run(gated_run, engine):
    assert gated_run.created()  # it had containers, with labels the check below can find
    assert leftover_containers(engine, dag_id=DAG_ID, run_id=spec.safe_run_id(gated_run.run_id)) == []


@pytest.mark.parametrize("conf, says", [
    ({"n_clusters": 1}, "minimum of 2"),  # one Param's schema
    # two Params together: plan refuses, with the runner's line
    ({"eps": 0.5}, "kmeans does not take --eps: drop it, or choose an algorithm that does"),
    ({"k": "9..3"}, "inverted"),
])
def test_invalid_params_stop_the_run_before_any_container(docker_cli, home, tmp_path_factory, engine, conf, says):
    data = writable_data_dir(tmp_path_factory, "invalid-data")
    bad = DagsTest(home, data, conf)
    assert bad.result.returncode != 0
    assert says in bad.output
    assert "==> prepare" not in bad.output
    assert not (data / "runs").exists()


def test_a_planted_runs_symlink_fails_the_plan_with_one_line_and_touches_nothing(docker_cli, home, tmp_path_factory):
    """A step-writable data root whose runs/ points elsewhere: plan (root here, as in CI) refuses it."""
    data = writable_data_dir(tmp_path_factory, "planted-data")
    outside = tmp_path_factory.mktemp("outside")
    (data / "runs").symlink_to(outside)
    planted = DagsTest(home, data)
    assert planted.result.returncode != 0
    assert f"{data}/runs is a symlink: refusing to use it" in planted.output
    assert "==> prepare" not in planted.output
    assert list(outside.iterdir()) == []


def test_a_named_volume_works_as_the_data_root(docker_cli, home, engine):
    volume = engine.volumes.create(f"clusterflow-test-{os.getpid()}")
    try:
        run = DagsTest(home, volume.name, {"inits": ["pca"], "n_init": 1})
        assert run.result.returncode == 0, run.output[-6000:]
        assert run.task_states()["report"] == "success"
        run_dir = f"/data/runs/{spec.safe_run_id(run.run_id)}"
        listing = engine.containers.run(
            image("report"), entrypoint=["/bin/sh", "-c", f"cd {run_dir} && ls cluster evaluate report"],
            volumes={volume.name: {"bind": "/data", "mode": "ro"}}, network_mode="none", remove=True)
        assert listing.decode().split() == ["cluster:", "pca", "evaluate:", "manifest.json", "metrics.json",
                                            "projection.npz", "report:", "manifest.json", "report.html"]
    finally:
        volume.remove(force=True)
        for cache in engine.volumes.list(filters={"name": f"{volume.name}-cache"}):  # the store's, made on use
            cache.remove(force=True)


def test_the_airflow_variable_chooses_the_data_root_over_the_env(dag_run, tmp_path):
    env = dict(dag_run.env)  # CLUSTERFLOW_DATA_SOURCE is set there, to the first run's data root
    chosen = tmp_path / "from-variable"
    assert airflow(env, "variables", "set", "clusterflow_data_source", str(chosen)).returncode == 0
    try:
        planned = airflow(env, "tasks", "test", DAG_ID, "plan", timeout=180)
    finally:
        airflow(env, "variables", "delete", "clusterflow_data_source")
    assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
    assert f"(data root {chosen})" in planned.stdout
    assert len(list((chosen / "runs").iterdir())) == 1  # plan made the run's directory there
