"""The whole pipeline through the local runner: the same containers, commands and mounts as the DAG."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from clusterflow import spec
from tests.containers.conftest import assert_report_shows, image
from tests.demo_reference import assert_matches_demo
from tests.stack.conftest import held_step

pytestmark = pytest.mark.container

CONTRACT = {
    "prepare": ["features.npy", "labels.npy", "manifest.json"],
    "cluster/k-means++": ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"],
    "cluster/random": ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"],
    "cluster/pca": ["centers.npy", "labels.npy", "manifest.json", "model.joblib", "model.npz"],
    "evaluate": ["manifest.json", "metrics.json", "projection.npz"],
    "report": ["manifest.json", "report.html"],
}


def clusterflow_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), "run", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=600)


TASK_LABEL = f"{spec.LABEL_PREFIX}.task_id"
STRANGER = (4242, 4343)  # a user with nothing on this machine but the Docker socket's group


@pytest.mark.root  # it runs the runner as another user
def test_a_non_root_user_runs_the_pipeline_and_owns_every_file_it_made(docker_cli):
    """The runner as an ordinary user in the docker group (setpriv, the socket's group): the steps
    run as that user, not as the images' 10001, so every file and directory of the run and of the
    cache store is theirs (README: the non-root user)."""
    base = Path(tempfile.mkdtemp(prefix="clusterflow-user-"))  # not under root's 0700 pytest tmp
    try:
        os.chown(base, *STRANGER)
        socket = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock").removeprefix("unix://")
        as_stranger = ["setpriv", f"--reuid={STRANGER[0]}", f"--regid={STRANGER[1]}",
                       f"--groups={os.stat(socket).st_gid}", "--"]
        result = subprocess.run([*as_stranger, str(Path(sys.executable).with_name("clusterflow")), "run",
                                 "--data-dir", str(base / "data"), "--run-id", "mine", "--init", "pca"],
                                capture_output=True, text=True, timeout=600, env={**os.environ, "HOME": str(base)})
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
        made = [base / "data", *(base / "data").rglob("*")]
        assert {p.relative_to(base).as_posix() for p in made} >= {"data/runs/mine/report/report.html",
                                                                 "data/cache/prepare"}, made
        assert {(p.lstat().st_uid, p.lstat().st_gid) for p in made} == {STRANGER}
    finally:
        shutil.rmtree(base)


def leftover_containers(engine, run_id: str) -> list:
    labels = [f"{spec.LABEL_PREFIX}.dag_id=local", f"{spec.LABEL_PREFIX}.run_id={run_id}"]
    return engine.containers.list(all=True, filters={"label": labels})


def created_or_killed(engine, since: int, event: str, run_id: str) -> list[dict[str, str]]:
    """The labels of the runner's containers of ``run_id`` the engine saw ``event`` for since then."""
    events = engine.events(since=since, until=int(time.time()) + 1, decode=True, filters={
        "type": "container", "event": event, "label": f"{spec.LABEL_PREFIX}.run_id={run_id}"})
    return [e["Actor"]["Attributes"] for e in events]


@pytest.fixture(scope="module")
def demo_run(docker_cli, tmp_path_factory) -> tuple[subprocess.CompletedProcess[str], Path]:
    data_dir = tmp_path_factory.mktemp("pipeline") / "data"
    return clusterflow_run(data_dir, "--run-id", "demo"), data_dir / "runs" / "demo"


def test_the_runner_streams_each_step_and_prints_the_report(demo_run):
    result, run_dir = demo_run
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("prepare", "cluster[k-means++]", "cluster[random]", "cluster[pca]", "evaluate", "report"):
        assert f"==> {name}: clusterflow/" in result.stdout
    assert result.stdout.strip().splitlines()[-1] == f"report: {run_dir / 'report' / 'report.html'}"


def test_the_run_honours_the_artifact_contract(demo_run):
    _, run_dir = demo_run
    for step_dir, files in CONTRACT.items():
        assert sorted(p.name for p in (run_dir / step_dir).iterdir()) == files, step_dir
    assert not [p for p in run_dir.rglob(".*")], "temporary directories left behind"


def test_manifests_chain_the_hashes_and_record_the_image(demo_run, engine):
    _, run_dir = demo_run
    prepare = json.loads((run_dir / "prepare/manifest.json").read_text())
    for variant in ("k-means++", "random", "pca"):
        cluster = json.loads((run_dir / f"cluster/{variant}/manifest.json").read_text())
        assert cluster["inputs"]["prepare/features.npy"] == prepare["outputs"]["features.npy"]
        assert cluster["params"]["init"] == variant
        assert cluster["image"] == {"name": image("cluster"), "digest": engine.images.get(image("cluster")).id}
        labels = np.load(run_dir / f"cluster/{variant}/labels.npy")
        assert labels.shape == (1797,) and len(np.unique(labels)) == 10
    for step in spec.STEPS:
        manifest = json.loads(next((run_dir / step).rglob("manifest.json")).read_text())
        assert manifest["run_id"] == "demo" and manifest["exit_status"] == 0
        assert manifest["packages"]["numpy"] and manifest["duration_seconds"] >= 0
        # the report image has matplotlib and no scikit-learn; the others the reverse
        assert ("scikit-learn" in manifest["packages"]) == (step != "report"), step
        assert ("matplotlib" in manifest["packages"]) == (step == "report"), step


def test_containers_reproduce_the_scikit_learn_demo(demo_run):
    _, run_dir = demo_run
    metrics = json.loads((run_dir / "evaluate/metrics.json").read_text())
    assert_matches_demo(metrics["variants"])
    assert metrics["ranked_by"] == "adjusted_mutual_info"
    assert metrics["best"] == max(metrics["variants"], key=lambda v: metrics["variants"][v]["adjusted_mutual_info"])
    html = (run_dir / "report/report.html").read_text()
    assert_report_shows(html, metrics["variants"])
    # the decision-region figure, drawn by the report from what evaluate computed
    evaluate = json.loads((run_dir / "evaluate/manifest.json").read_text())
    report = json.loads((run_dir / "report/manifest.json").read_text())
    assert report["inputs"]["evaluate/projection.npz"] == evaluate["outputs"]["projection.npz"]
    assert report["results"]["figures"] == ["decision_regions", "cluster_centers", "contingency"]
    assert 'id="decision-regions-figure"' in html and "KMeans(init=&quot;k-means++&quot;, n_clusters=10" in html


def test_no_step_container_outlives_its_run(demo_run, engine):
    # the runner's containers carried the labels the check filters by (else it would find none anyway)
    _, run_dir = demo_run
    started = json.loads((run_dir / "prepare/manifest.json").read_text())["started_at"]  # this run's, not older
    created = created_or_killed(engine, int(dt.datetime.fromisoformat(started).timestamp()) - 30, "create", "demo")
    # each task's step container and, but for the report, its cache commit's
    assert Counter(e[TASK_LABEL] for e in created) == {"prepare": 2, "cluster[k-means++]": 2, "cluster[pca]": 2,
                                                       "cluster[random]": 2, "evaluate": 2, "report": 1}
    assert leftover_containers(engine, "demo") == []


def test_a_failing_step_stops_the_run_with_its_name_and_code(docker_cli, data_dir, tmp_path):
    broken = tmp_path / "broken.npy"
    broken.write_bytes(b"\x93NUMPY not really")
    result = clusterflow_run(data_dir, "--run-id", "bad", "--dataset", str(broken))
    assert result.returncode == 2
    assert "step prepare failed with exit code 2" in result.stderr
    assert "broken.npy" in result.stdout  # the step's own one-line reason, streamed
    assert not (data_dir / "runs/bad/prepare").exists() and not (data_dir / "runs/bad/cluster").exists()


def test_a_quality_gate_breach_still_reports_then_exits_3(engine, data_dir):
    result = clusterflow_run(data_dir, "--run-id", "gated", "--init", "k-means++", "--min-ari", "0.99")
    assert result.returncode == 3, result.stderr
    assert "step evaluate failed with exit code 3 (then ran report)" in result.stderr
    assert "quality gate failed" in result.stdout
    run_dir = data_dir / "runs/gated"
    assert json.loads((run_dir / "evaluate/manifest.json").read_text())["exit_status"] == 3
    assert (run_dir / "report/report.html").is_file()
    assert leftover_containers(engine, "gated") == []


def test_ctrl_c_removes_the_running_containers_at_once(engine, data_dir):
    """README: "Ctrl-C ... removes the running containers at once". The cluster container is
    held paused from its start event (tests/stack's held_step; the steps run at a quarter of a
    CPU, so it is paused long before it could finish), so the signal lands mid-fit by
    construction, and the engine's events show the container killed before the runner exits."""
    since = int(time.time()) - 1
    command = [str(Path(sys.executable).with_name("clusterflow")), "run", "--data-dir", str(data_dir),
               "--run-id", "interrupted", "--dataset", "synthetic", "--n-samples", "300000", "--n-clusters", "8",
               "--init", "k-means++", "--no-cache"]
    runner = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              env={**os.environ, spec.STEP_CPUS_ENV: "0.25"})
    try:
        with held_step(engine, "interrupted", since, step="cluster"):
            runner.send_signal(signal.SIGINT)
            output = runner.communicate(timeout=120)[0]
    finally:
        runner.kill()
    assert runner.returncode == 1 and output.rstrip().endswith("Aborted!"), output[-3000:]
    assert "Traceback" not in output and "fitted" not in output, output[-3000:]
    assert leftover_containers(engine, "interrupted") == []
    killed = created_or_killed(engine, since, "kill", "interrupted")
    assert [e for e in killed if e[TASK_LABEL].startswith("cluster")], "no cluster container was killed"
    assert not (data_dir / "runs/interrupted/report").exists()
