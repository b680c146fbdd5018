"""The step cache through the local runner: the same containers reuse each other's outputs."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from docker.types import Mount as DockerMount

from clusterflow import spec
from clusterflow.runner import caller_steps_user
from tests.containers.conftest import image
from tests.containers.test_pipeline import clusterflow_run

pytestmark = pytest.mark.container

TASKS = ("prepare", "cluster[k-means++]", "cluster[random]", "cluster[pca]", "evaluate", "report")


def hits(stdout: str) -> set[str]:
    """The tasks whose step logged a cache hit (the runner prefixes each log line with ``[task]``)."""
    found = set()
    for line in stdout.splitlines():
        match = re.match(r"\[(.+?\]?)\] \w+: cache hit [0-9a-f]{12} \(first computed in run ", line)
        if match:
            found.add(match.group(1))
    return found


def manifest(data_dir: Path, run_id: str, step_dir: str) -> dict:
    return json.loads((data_dir / "runs" / run_id / step_dir / "manifest.json").read_text())


@pytest.fixture(scope="module")
def cached_runs(docker_cli, tmp_path_factory) -> tuple[Path, dict[str, object]]:
    """Under one data root: a first run, the same params under a new run id, then ``--n-init 3``."""
    data_dir = tmp_path_factory.mktemp("cache") / "data"
    results = {run_id: clusterflow_run(data_dir, "--run-id", run_id, *args)
               for run_id, args in (("first", ()), ("second", ()), ("n-init-3", ("--n-init", "3")))}
    return data_dir, results


def test_a_new_run_with_the_same_params_reuses_every_step(cached_runs):
    data_dir, results = cached_runs
    first, second = results["first"], results["second"]
    assert first.returncode == 0 and second.returncode == 0, second.stderr[-3000:]
    assert hits(first.stdout) == set()
    # Every computing step is a hit. The report names its run and shows every step's run id and
    # timings, so a new run renders its own page.
    assert hits(second.stdout) == set(TASKS) - {"report"}, second.stdout
    for step_dir in ("prepare", "cluster/k-means++", "cluster/random", "cluster/pca", "evaluate"):
        again = manifest(data_dir, "second", step_dir)
        assert again["cache"]["hit"] is True and again["cache"]["source"] == "first"
        assert again["outputs"] == manifest(data_dir, "first", step_dir)["outputs"]
    metrics = [(data_dir / "runs" / r / "evaluate/metrics.json").read_bytes() for r in ("first", "second")]
    assert metrics[0] == metrics[1]  # reused fit times included
    assert not list((data_dir / "runs" / "second").rglob(".*")), "temporary directories left behind"
    # every step but the report (its page shows run ids: never committed)
    assert sorted(p.name for p in (data_dir / "cache").iterdir()) == sorted(set(spec.STEPS) - {"report"})


def test_a_changed_param_misses_for_cluster_and_downstream_only(cached_runs):
    data_dir, results = cached_runs
    changed = results["n-init-3"]
    assert changed.returncode == 0, changed.stderr[-3000:]
    assert hits(changed.stdout) == {"prepare"}, changed.stdout
    assert manifest(data_dir, "n-init-3", "cluster/random")["params"]["n_init"] == 3


def test_rerunning_a_run_id_after_a_quality_gate_failure_resumes_it(docker_cli, data_dir):
    failed = clusterflow_run(data_dir, "--run-id", "resume", "--min-ari", "0.99")
    assert failed.returncode == spec.QUALITY_GATE_EXIT, failed.stderr[-3000:]
    assert manifest(data_dir, "resume", "evaluate")["exit_status"] == spec.QUALITY_GATE_EXIT

    resumed = clusterflow_run(data_dir, "--run-id", "resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert hits(resumed.stdout) == {"prepare", "cluster[k-means++]", "cluster[random]", "cluster[pca]"}
    assert manifest(data_dir, "resume", "evaluate")["exit_status"] == 0
    assert manifest(data_dir, "resume", "report")["results"]["quality_gate_passed"] is True

    again = clusterflow_run(data_dir, "--run-id", "resume")  # nothing changed: every fit reused
    assert again.returncode == 0 and hits(again.stdout) == set(TASKS) - {"report"}, again.stdout
    note = manifest(data_dir, "resume", "cluster/pca")["cache"]
    assert (note["hit"], note["source"]) == (True, "resume")


def test_no_cache_runs_every_step(docker_cli, data_dir):
    assert clusterflow_run(data_dir, "--run-id", "one").returncode == 0
    forced = clusterflow_run(data_dir, "--run-id", "two", "--no-cache")
    assert forced.returncode == 0, forced.stderr[-3000:]
    assert hits(forced.stdout) == set()
    assert manifest(data_dir, "two", "cluster/pca")["cache"]["reason"] == "--no-cache"


def test_a_cold_run_fills_the_store_only_through_commit_containers(cached_runs):
    data_dir, results = cached_runs
    first = results["first"].stdout
    for task in set(TASKS) - {"report"}:
        step = task.split("[")[0]
        assert re.search(rf"^\[{re.escape(task)}\] {step}: stored /data/runs/first/\S+ as cache entry [0-9a-f]{{12}}$",
                         first, re.MULTILINE), task
    assert "[report] report: stored" not in first and not (data_dir / "cache" / "report").exists()
    stored = [p for p in (data_dir / "cache").rglob("*") if p.is_file()]
    assert stored and all(p.stat().st_mode & 0o777 == 0o444 for p in stored)


PLANT_STORE = """
import pathlib
for target in ('/data/cache/prepare/planted', '/data/cache/x'):
    try:
        pathlib.Path(target).mkdir()
        print('wrote', target)
    except OSError as exc:
        print('refused', target, exc.strerror)
"""
# A self-consistent runs/next/prepare/ (the next run id) with the first run's key and fake features
PLANT_RUN = """
import hashlib, json, pathlib
real, planted = pathlib.Path('/data/runs/first/prepare'), pathlib.Path('/data/runs/next/prepare')
planted.mkdir(parents=True)
features = (real / 'features.npy').read_bytes()[:-8] + b'\x7f' * 8
(planted / 'features.npy').write_bytes(features)
(planted / 'labels.npy').write_bytes((real / 'labels.npy').read_bytes())
manifest = json.loads((real / 'manifest.json').read_text())
manifest['outputs']['features.npy']['sha256'] = hashlib.sha256(features).hexdigest()
manifest['run_id'] = 'innocent-run'
(planted / 'manifest.json').write_text(json.dumps(manifest))
print('planted')
"""


def in_step_container(engine, data_dir: Path, script: str) -> list[str]:
    """Run ``script`` as the runner's step containers run: their user, policy and mounts (the store read-only)."""
    return engine.containers.run(
        image("prepare"), ["-c", script], entrypoint="python", user="{}:{}".format(*caller_steps_user()), remove=True,
        mounts=[DockerMount(m.target, m.source, type=m.kind, read_only=m.read_only)
                for m in spec.mounts(str(data_dir))], **spec.CONTAINER_POLICY).decode().splitlines()


def test_a_step_container_cannot_write_the_store_and_a_planted_next_run_is_not_reused(engine, cached_runs):
    data_dir, _ = cached_runs
    assert in_step_container(engine, data_dir, PLANT_STORE) == [
        "refused /data/cache/prepare/planted Read-only file system", "refused /data/cache/x Read-only file system"]

    assert in_step_container(engine, data_dir, PLANT_RUN) == ["planted"]
    planted, real = data_dir / "runs" / "next" / "prepare", data_dir / "runs" / "first" / "prepare"
    assert (planted / "features.npy").read_bytes() != (real / "features.npy").read_bytes()
    result = clusterflow_run(data_dir, "--run-id", "next")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "prepare" in hits(result.stdout)  # from the store, which holds the real features
    assert "innocent-run" not in result.stdout
    assert (planted / "features.npy").read_bytes() == (real / "features.npy").read_bytes()
    assert manifest(data_dir, "next", "prepare")["cache"]["source"] == "first"
