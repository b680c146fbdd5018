"""The proof of issue 13: one publish, run by digest on engines that never built anything.

The "CI" engine published (``published``, helper fixtures), the "worker" engine runs the pipeline
with the runner and with ``airflow dags test`` pulling only by digest, and the "laptop" engine,
over the worker's data root, re-runs the pipeline (every cacheable step a cache hit) and
reproduces one step. Each engine is a separate image store: what makes the runs agree is the
digests file, not a shared engine.
"""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clusterflow import pinning, spec
from tests.airflow.conftest import without_timings
from tests.airflow.test_dags_test import DagsTest, home  # noqa: F401
from tests.fixtures.docker import writable_data_dir
from tests.containers.test_cache import TASKS, hits
from tests.fixtures.engines import on

pytestmark = pytest.mark.container

VARIANTS = ("k-means++", "random", "pca")
STEP_DIRS = ("prepare", *(f"cluster/{v}" for v in VARIANTS), "evaluate", "report")
# Steps whose every output is a function of its inputs and params (evaluate's metrics and the
# report carry timings and run ids; their data are compared without those).
PURE_DIRS = ("prepare", *(f"cluster/{v}" for v in VARIANTS))


CLUSTERFLOW = (str(Path(sys.executable).with_name("clusterflow")),)
REPRODUCE = (*CLUSTERFLOW, "reproduce")


def on_engine(host: str, digests: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], float]:
    """``argv`` against the engine ``host`` with the publish's digests file; and its seconds."""
    env = {**os.environ, "DOCKER_HOST": host, pinning.DIGESTS_ENV: str(digests)}
    started = time.monotonic()
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=900)
    return result, time.monotonic() - started


def timed(what: str, result: subprocess.CompletedProcess[str], seconds: float) -> None:
    """Say (pytest -s) how long a run took and each pull it made: the numbers of issue 13."""
    pulls = [line for line in (result.stdout + result.stderr).splitlines() if line.startswith("pulled ")]
    print(f"\n{what}: {seconds:.1f} s", *pulls, sep="\n  ", file=sys.stderr)


def manifest(run_dir: Path, step_dir: str) -> dict:
    return json.loads((run_dir / step_dir / "manifest.json").read_text())


def file_hashes(run_dir: Path, step_dirs: tuple[str, ...]) -> dict[str, str]:
    """sha256 of every file under those step directories but the manifests, by relative path."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for d in step_dirs for p in sorted((run_dir / d).rglob("*")) if p.is_file() and p.name != "manifest.json"}


def images_of(host: str) -> list[dict]:
    listed = on(host, "image", "ls", "-aq", "--no-trunc")
    assert listed.returncode == 0, listed.stderr
    ids = sorted(set(listed.stdout.split()))
    found = on(host, "image", "inspect", *ids) if ids else None
    return json.loads(found.stdout) if found else []


@pytest.fixture(scope="module")
def digests(published) -> Path:
    return published.digests_file


@pytest.fixture(scope="module")
def pins(published) -> pinning.Pins:
    return published.pins


@pytest.fixture(scope="module")
def shared_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The data root the worker writes and the laptop reads (a shared filesystem between machines)."""
    return writable_data_dir(tmp_path_factory, "shared-data")


@pytest.fixture(scope="module")
def worker_run(worker_engine: str, digests: Path, shared_data: Path):
    """The runner on the worker engine, images pulled by digest (a cold engine: every pull timed)."""
    result, seconds = on_engine(worker_engine, digests, *CLUSTERFLOW, "run", "--data-dir", str(shared_data),
                                "--run-id", "worker")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    timed("worker engine, runner, cold", result, seconds)
    return result, shared_data / "runs" / "worker"


@pytest.fixture(scope="module")
def worker_dag(worker_run, worker_engine: str, digests: Path, home: Path,  # noqa: F811 (the imported fixture)
               tmp_path_factory: pytest.TempPathFactory) -> DagsTest:
    """``airflow dags test`` on the worker engine with the same digests file (after the runner)."""
    run = DagsTest(home, writable_data_dir(tmp_path_factory, "worker-dag-data"),
                   DOCKER_HOST=worker_engine, **{pinning.DIGESTS_ENV: str(digests)})
    assert run.result.returncode == 0 and run.run and run.run["state"] == "success", run.output[-6000:]
    return run


@pytest.fixture(scope="module")
def laptop_run(worker_run, laptop_engine: str, digests: Path, shared_data: Path):
    """The runner on the laptop engine over the worker's data root, under a new run id."""
    result, seconds = on_engine(laptop_engine, digests, *CLUSTERFLOW, "run", "--data-dir", str(shared_data),
                                "--run-id", "laptop")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    timed("laptop engine, runner over the worker's data root, cold", result, seconds)
    return result, shared_data / "runs" / "laptop"


def test_the_worker_engine_holds_the_published_images_by_digest_only(worker_run, worker_dag, worker_engine,
                                                                      pins):
    images = images_of(worker_engine)
    assert [i["RepoTags"] for i in images] == [[]] * len(spec.STEPS), [i["RepoTags"] for i in images]
    assert sorted(d for i in images for d in i["RepoDigests"]) == sorted(pins.ref(s) for s in spec.STEPS)


def test_the_laptop_pulled_the_very_same_images(laptop_run, worker_run, laptop_engine, worker_engine):
    def by_ref(host: str) -> dict[str, str]:
        return {d: i["Id"] for i in images_of(host) for d in i["RepoDigests"]}

    assert by_ref(laptop_engine) == by_ref(worker_engine)
    assert all(i["RepoTags"] == [] for i in images_of(laptop_engine))


def test_every_engine_ran_the_published_digests(worker_run, worker_dag, laptop_run, pins):
    for run_dir in (worker_run[1], worker_dag.run_dir, laptop_run[1]):
        for step_dir in STEP_DIRS:
            step = step_dir.split("/")[0]
            image = manifest(run_dir, step_dir)["image"]
            assert image == {"name": pins.ref(step), "digest": pins.digests[step]}, (run_dir, step_dir)


def test_outputs_are_byte_identical_across_engines_and_orchestrators(worker_run, worker_dag):
    runner, dag = worker_run[1], worker_dag.run_dir
    ours = file_hashes(runner, PURE_DIRS)
    assert len(ours) == 2 + 4 * len(VARIANTS) and ours == file_hashes(dag, PURE_DIRS)
    for step_dir in PURE_DIRS:
        assert manifest(runner, step_dir)["outputs"] == manifest(dag, step_dir)["outputs"], step_dir
    metrics = [json.loads((d / "evaluate/metrics.json").read_text()) for d in (runner, dag)]
    assert without_timings(metrics[0]) == without_timings(metrics[1])
    assert file_hashes(runner, ("evaluate",))["evaluate/projection.npz"] == \
        file_hashes(dag, ("evaluate",))["evaluate/projection.npz"]


def test_a_laptop_run_over_the_workers_data_root_hits_the_cache_for_every_step(laptop_run, worker_run):
    result, run_dir = laptop_run
    assert hits(result.stdout) == set(TASKS) - {"report"}, result.stdout[-3000:]
    for step_dir in STEP_DIRS[:-1]:
        cache = manifest(run_dir, step_dir)["cache"]
        assert (cache["hit"], cache["source"]) == (True, "worker"), (step_dir, cache)
        assert cache["key"] == manifest(worker_run[1], step_dir)["cache"]["key"]
    assert file_hashes(run_dir, PURE_DIRS) == file_hashes(worker_run[1], PURE_DIRS)


def report_line(report: Path, step_dir: str) -> str:
    """The "re-run it" docker run line the report's lineage shows for ``step_dir``."""
    page = report.read_text()
    section = page[page.index(f"<details open><summary>{step_dir} "):]
    return html.unescape(re.search(r'<pre class="rerun">(.*?)</pre>', section, re.S).group(1))


@pytest.fixture(scope="module")
def laptop_rerun(worker_run, laptop_engine: str, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """cluster/random of the worker's run re-run on the laptop engine by the report's line, run in
    a directory whose data/ holds only the step's inputs and an empty cache (as the report says)."""
    run_dir = worker_run[1]
    line = report_line(run_dir / "report/report.html", "cluster/random")
    here = tmp_path_factory.mktemp("laptop")
    shutil.copytree(run_dir / "prepare", here / "data/runs/worker/prepare")
    (here / "data/cache").mkdir()
    result = subprocess.run(["bash", "-c", line], cwd=here, env={**os.environ, "DOCKER_HOST": laptop_engine},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{line}\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return here / "data/runs/worker"


def test_the_laptop_reruns_a_step_by_the_reports_line_byte_identically(laptop_rerun, worker_run, pins):
    recorded = manifest(worker_run[1], "cluster/random")
    again = manifest(laptop_rerun, "cluster/random")
    assert again["image"] == recorded["image"] == {"name": pins.ref("cluster"),
                                                    "digest": pins.digests["cluster"]}
    assert again["outputs"] == recorded["outputs"] and again["cache"]["hit"] is False
    assert file_hashes(laptop_rerun, ("cluster/random",)) == file_hashes(worker_run[1], ("cluster/random",))


def test_the_laptop_reproduces_a_step_identically(worker_run, laptop_engine: str, digests: Path):
    result, _ = on_engine(laptop_engine, digests, *REPRODUCE, "--data-dir", str(worker_run[1].parents[1]),
                          "--run-id", "worker", "--step", "cluster", "--variant", "k-means++", "--keep")
    assert result.returncode == 0 and result.stdout.splitlines()[-1] == "identical", result.stdout + result.stderr
    scratch = Path(re.search(r"scratch data root kept: (\S+)", result.stderr).group(1))
    try:
        assert file_hashes(scratch / "runs/worker", ("cluster/k-means++",)) == \
            file_hashes(worker_run[1], ("cluster/k-means++",))
    finally:
        shutil.rmtree(scratch)
