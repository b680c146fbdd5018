"""The content-addressed step cache, in-process: hits, misses, the shared store and its checks."""

from __future__ import annotations

import fcntl
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import pytest

from clusterflow_steps import cache
from tests.steps.conftest import Steps

DIGEST = "sha256:" + "a" * 64
ENV = {"CLUSTERFLOW_IMAGE_DIGEST": DIGEST}
PIPELINE: list[tuple[str, tuple[str, ...]]] = [
    ("prepare", ("--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3")),
    ("cluster", ("--init", "k-means++")),
    ("cluster", ("--init", "random")),
    ("evaluate", ()),
    ("report", ()),
]
STEP_DIRS = ["prepare", "cluster/k-means++", "cluster/random", "evaluate", "report"]
# What each step's work calls: patched to raise to prove a hit does no work.
WORK = {
    "prepare": "clusterflow_steps.prepare.datasets.load",
    "cluster": "clusterflow_steps.cluster.model.fit",
    "evaluate": "clusterflow_steps.evaluate.metrics.scores",
    "report": "clusterflow_steps.report.cli.render_run",
}


def run_pipeline(steps: Steps, run_id: str, *extra: str, env: dict[str, str] | None = ENV,
                 only: tuple[str, ...] = ("prepare", "cluster", "evaluate", "report")) -> dict[str, str]:
    """Run the steps of :data:`PIPELINE` named in ``only``; their stdout by step dir."""
    out = {}
    for (step, args), step_dir in zip(PIPELINE, STEP_DIRS):
        if step in only:
            out[step_dir] = steps(step, *args, *extra, run_id=run_id, env=env).stdout
    return out


def forbid_work(monkeypatch: pytest.MonkeyPatch, *steps: str) -> None:
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("a cache hit must not do the step's work")

    for step in steps:
        monkeypatch.setattr(WORK[step], refuse)


def cache_note(steps: Steps, step_dir: str, run_id: str) -> dict[str, Any]:
    return steps.manifest(step_dir, run_id)["cache"]


def outputs(steps: Steps, step_dir: str, run_id: str) -> dict[str, bytes]:
    folder = steps.path(step_dir, run_id)
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir()) if p.name != "manifest.json"}


def entry(steps: Steps, step: str, key: str) -> Path:
    return steps.root / "cache" / step / key


def test_a_new_run_reuses_every_step_from_the_shared_store_without_redoing_work(steps, monkeypatch):
    run_pipeline(steps, "a")
    for step_dir in STEP_DIRS:
        note = cache_note(steps, step_dir, "a")
        assert note["hit"] is False and note["source"] is None and len(note["key"]) == 64
        assert (entry(steps, step_dir.split("/")[0], note["key"]) / "manifest.json").is_file()

    forbid_work(monkeypatch, "prepare", "cluster", "evaluate")
    out = run_pipeline(steps, "b", only=("prepare", "cluster", "evaluate"))
    for step_dir in STEP_DIRS[:-1]:
        first, again = steps.manifest(step_dir, "a"), steps.manifest(step_dir, "b")
        step = step_dir.split("/")[0]
        assert f"{step}: cache hit {first['cache']['key'][:12]} (first computed in run a); outputs reused" \
            in out[step_dir]
        assert again["cache"] == {"key": first["cache"]["key"], "hit": True, "source": "a"}
        assert again["run_id"] == "b" and again["image"]["digest"] == DIGEST
        assert again["outputs"] == first["outputs"] and again["results"] == first["results"]
        assert outputs(steps, step_dir, "b") == outputs(steps, step_dir, "a")
    # metrics.json carries the reused fit times: identical, timings included
    assert steps.path("evaluate/metrics.json", "b").read_bytes() == steps.path("evaluate/metrics.json", "a").read_bytes()

    # The report shows run ids and timings of every step, so a new run renders its own page...
    report = steps("report", run_id="b", env=ENV)
    assert "cache hit" not in report.stdout and cache_note(steps, "report", "b")["hit"] is False
    assert "run b" in steps.path("report/report.html", "b").read_text()
    # ...and a re-run of that run reuses it.
    forbid_work(monkeypatch, "report")
    again = steps("report", run_id="b", env=ENV)
    assert "report: cache hit" in again.stdout and "(first computed in run b)" in again.stdout


def test_rerunning_a_run_id_reuses_its_own_outputs_and_records_the_hit(steps, monkeypatch):
    run_pipeline(steps, "a")
    manifests = {d: json.loads(steps.path(f"{d}/manifest.json", "a").read_text()) for d in STEP_DIRS}
    inodes = {d: {name: steps.path(f"{d}/{name}", "a").stat().st_ino for name in manifests[d]["outputs"]}
              for d in STEP_DIRS[:-1]}
    forbid_work(monkeypatch, "prepare", "cluster", "evaluate")
    out = run_pipeline(steps, "a")
    # The report shows its inputs' manifests, which now record hits: it renders them anew.
    assert "cache hit" not in out["report"] and steps.manifest("report", "a")["cache"]["hit"] is False
    for step_dir in STEP_DIRS[:-1]:
        assert "cache hit" in out[step_dir] and "(first computed in run a)" in out[step_dir]
        again = json.loads(steps.path(f"{step_dir}/manifest.json", "a").read_text())
        assert again["cache"] == {**manifests[step_dir]["cache"], "hit": True, "source": "a"}
        assert (again["outputs"], again["results"]) == (manifests[step_dir]["outputs"], manifests[step_dir]["results"])
        assert {n: steps.path(f"{step_dir}/{n}", "a").stat().st_ino for n in again["outputs"]} == inodes[step_dir]


def test_every_key_ingredient_changes_the_key(steps, tmp_path, monkeypatch):
    data = tmp_path / "points.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n7,8,0\n")
    prepare = ("--dataset", str(data), "--label-column", "label")
    steps("prepare", *prepare, run_id="a", env=ENV)
    key = cache_note(steps, "prepare", "a")["key"]

    # one byte of the input file
    data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n7,9,0\n")
    result = steps("prepare", *prepare, run_id="b", env=ENV)
    assert "cache hit" not in result.stdout
    changed = cache_note(steps, "prepare", "b")
    assert changed["hit"] is False and changed["key"] != key
    assert steps.array("prepare/features.npy", "b")[3, 1] == 9

    # a param (cluster --n-init), then the image digest (a rebuilt image)
    steps("cluster", "--n-clusters", "2", run_id="b", env=ENV)
    keys = {cache_note(steps, "cluster/k-means++", "b")["key"]}
    steps("cluster", "--n-clusters", "2", "--n-init", "3", run_id="b", env=ENV)
    keys.add(cache_note(steps, "cluster/k-means++", "b")["key"])
    rebuilt = {"CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "b" * 64}
    steps("cluster", "--n-clusters", "2", "--n-init", "3", run_id="b", env=rebuilt)
    keys.add(cache_note(steps, "cluster/k-means++", "b")["key"])
    assert len(keys) == 3
    assert cache_note(steps, "cluster/k-means++", "b")["hit"] is False

    # the same ingredients again: the same key, a hit
    steps("prepare", *prepare, run_id="c", env=ENV)
    assert cache_note(steps, "prepare", "c") == {**changed, "hit": True, "source": "b"}
    forbid_work(monkeypatch, "cluster")
    steps("cluster", "--n-clusters", "2", "--n-init", "3", run_id="c", env=rebuilt)
    assert cache_note(steps, "cluster/k-means++", "c") == {
        "key": cache_note(steps, "cluster/k-means++", "b")["key"], "hit": True, "source": "b"}


def test_the_image_tag_is_not_part_of_the_key(blobs, monkeypatch):
    blobs("cluster", run_id="t", env={**ENV, "CLUSTERFLOW_IMAGE": "clusterflow/cluster:1"})
    forbid_work(monkeypatch, "cluster")
    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="u")
    blobs("cluster", run_id="u", env={**ENV, "CLUSTERFLOW_IMAGE": "clusterflow/cluster:retagged"})
    assert blobs.manifest("cluster/k-means++", "u")["image"]["name"] == "clusterflow/cluster:retagged"
    assert cache_note(blobs, "cluster/k-means++", "u")["hit"] is True


def test_a_hit_is_byte_identical_to_a_fresh_run(steps):
    run_pipeline(steps, "a")
    run_pipeline(steps, "hit", only=("prepare", "cluster", "evaluate"))
    run_pipeline(steps, "fresh", "--no-cache", only=("prepare", "cluster", "evaluate"))
    for step_dir in STEP_DIRS[:-1]:
        assert cache_note(steps, step_dir, "hit")["hit"] is True
        assert cache_note(steps, step_dir, "fresh")["hit"] is False
        # fit_seconds are measured, so the fresh run differs there only: compare everything else
        fresh, hit = outputs(steps, step_dir, "fresh"), outputs(steps, step_dir, "hit")
        if step_dir == "evaluate":
            fresh, hit = ({k: strip_fit_seconds(v) if k == "metrics.json" else v for k, v in d.items()}
                          for d in (fresh, hit))
        assert hit == fresh, step_dir

    # The report, from the store (its own output removed), against a fresh render of the same run
    steps("report", run_id="hit", env=ENV)
    key = cache_note(steps, "report", "hit")["key"]
    fresh_page = steps.path("report/report.html", "hit").read_text()
    for path in sorted(steps.path("report", "hit").rglob("*"), reverse=True):
        path.unlink()
    steps.path("report", "hit").rmdir()
    result = steps("report", run_id="hit", env=ENV)
    assert "report: cache hit" in result.stdout and cache_note(steps, "report", "hit")["key"] == key
    assert steps.path("report/report.html", "hit").read_text() == fresh_page
    steps("report", "--no-cache", run_id="hit", env=ENV)
    assert without_generated_time(steps.path("report/report.html", "hit").read_text()) == \
        without_generated_time(fresh_page)


def strip_fit_seconds(payload: bytes) -> Any:
    metrics = json.loads(payload)
    for row in metrics["variants"].values():
        row.pop("fit_seconds")
    return metrics


def without_generated_time(html: str) -> str:
    """The page stamps when it was rendered (seconds precision; manifest times have milliseconds)."""
    stamps = re.findall(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", html)
    assert len(set(stamps)) == 1, stamps
    return html.replace(stamps[0], "<generated>")


def test_cluster_outputs_of_a_hit_equal_a_no_cache_run_exactly(blobs):
    """The fit is deterministic, so hit and fresh outputs match byte for byte (model included)."""
    blobs("cluster", env=ENV)
    blobs("cluster", run_id="t", env=ENV)
    reused = outputs(blobs, "cluster/k-means++", "t")
    blobs("cluster", "--no-cache", run_id="t", env=ENV)
    assert outputs(blobs, "cluster/k-means++", "t") == reused


def test_a_tampered_store_entry_is_detected_removed_and_repaired(blobs):
    blobs("cluster", run_id="t", env=ENV)
    note = cache_note(blobs, "cluster/k-means++", "t")
    stored = entry(blobs, "cluster", note["key"])
    labels = stored / "labels.npy"
    damaged = bytearray(labels.read_bytes())
    damaged[-1] ^= 1
    labels.unlink()  # a new file, so the run's own (hard-linked) copy stays intact
    labels.write_bytes(bytes(damaged))

    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="u")
    result = blobs("cluster", run_id="u", env=ENV)
    assert "cache hit" not in result.stdout
    assert f"removed damaged cache entry {stored}" in result.stderr
    assert cache_note(blobs, "cluster/k-means++", "u") == {"key": note["key"], "hit": False, "source": None}
    assert outputs(blobs, "cluster/k-means++", "u")["labels.npy"] == outputs(blobs, "cluster/k-means++", "t")["labels.npy"]
    repaired = json.loads((stored / "manifest.json").read_text())
    assert repaired["run_id"] == "u" and cache.outputs_match(stored, repaired["outputs"])


def test_damage_to_a_runs_own_outputs_is_not_reused(blobs, monkeypatch):
    blobs("cluster", env=ENV)
    path = blobs.path("cluster/k-means++/centers.npy")
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))  # in place: the store's hard link sees it too
    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    result = blobs("cluster", env=ENV)
    assert len(calls) == 1 and "cache hit" not in result.stdout
    assert "removed damaged cache entry" in result.stderr
    assert path.read_bytes() != bytes(damaged)


def count_calls(monkeypatch: pytest.MonkeyPatch, target: str) -> list[int]:
    """Count calls of ``target`` (one item per call) while still making them."""
    module_name, name = target.rsplit(".", 1)
    module = __import__(module_name, fromlist=[name])
    real, calls = getattr(module, name), []

    def counted(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, counted)
    return calls


def test_without_an_image_digest_nothing_is_cached(blobs, monkeypatch):
    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    for _ in range(2):
        result = blobs("cluster")
        assert "cache hit" not in result.stdout
    assert len(calls) == 2
    assert cache_note(blobs, "cluster/k-means++", "t") == {"key": None, "hit": False,
                                                           "reason": "image digest unknown"}
    assert not (blobs.root / "cache").exists()


@pytest.mark.parametrize("how", [("--no-cache",), "CLUSTERFLOW_NO_CACHE", "CLUSTERFLOW_CACHE"])
def test_no_cache_forces_a_run_and_refreshes_the_store(blobs, monkeypatch, how):
    blobs("cluster", env=ENV)
    key = cache_note(blobs, "cluster/k-means++", "t")["key"]
    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    args, env = (how, ENV) if isinstance(how, tuple) else ((), {**ENV, how: "1" if "NO" in how else "false"})
    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="u")
    result = blobs("cluster", *args, run_id="u", env=env)
    assert len(calls) == 1 and "cache hit" not in result.stdout
    assert cache_note(blobs, "cluster/k-means++", "u") == {"key": key, "hit": False, "source": None,
                                                           "reason": "--no-cache"}
    assert json.loads((entry(blobs, "cluster", key) / "manifest.json").read_text())["run_id"] == "u"


def test_a_cached_failing_quality_gate_still_fails(steps, monkeypatch):
    run_pipeline(steps, "a", only=("prepare", "cluster"))
    failed = steps("evaluate", "--max-inertia", "0", run_id="a", env=ENV, expect=3)
    reason = failed.stderr.strip().splitlines()[-1]
    assert reason.startswith("Error: quality gate failed for best variant")

    forbid_work(monkeypatch, "prepare", "cluster", "evaluate")
    run_pipeline(steps, "b", only=("prepare", "cluster"))
    for run_id in ("b", "b", "a"):  # from the store, then the run's own outputs, then run a's
        again = steps("evaluate", "--max-inertia", "0", run_id=run_id, env=ENV, expect=3)
        assert "evaluate: cache hit" in again.stdout
        assert again.stderr.strip().splitlines()[-1] == reason
        assert steps.manifest("evaluate", run_id)["exit_status"] == 3
    assert steps.path("evaluate/metrics.json", "b").read_bytes() == steps.path("evaluate/metrics.json", "a").read_bytes()


def test_leftovers_of_dead_writers_are_removed_but_live_ones_kept(blobs):
    run_dir = blobs.path("")
    old = time.time() - 3600

    def leftover(name: str, age: float | None = old) -> Path:
        path = run_dir / name
        path.mkdir()
        (path / "features.npy").write_bytes(b"partial")
        if age is not None:
            os.utime(path / "features.npy", (age, age))
            os.utime(path, (age, age))
        return path

    dead, dead_old = leftover(".prepare.tmp-1-deadbeef"), leftover(".prepare.old-0badf00d")
    fresh = leftover(".prepare.tmp-7-00000000", age=None)
    live = leftover(".prepare.tmp-8-11111111")
    other = leftover(".evaluate.tmp-9-22222222")
    fd = os.open(live, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3")
    finally:
        os.close(fd)
    assert not dead.exists() and not dead_old.exists()
    assert fresh.exists() and live.exists() and other.exists()
