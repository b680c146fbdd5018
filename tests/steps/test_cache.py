"""The content-addressed step cache, in-process: hits, misses, the shared store, its commits and checks.

The orchestrators follow every step but the report with the same command plus ``--commit-cache``
(the only writer of the store); :func:`run_pipeline` does the same here.
"""

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
from tests.steps.conftest import Steps, sha256

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
    """Run the steps of :data:`PIPELINE` named in ``only``, each but the report then committed as the
    orchestrators do; their stdout by step dir."""
    out = {}
    for (step, args), step_dir in zip(PIPELINE, STEP_DIRS, strict=True):
        if step in only:
            out[step_dir] = steps(step, *args, *extra, run_id=run_id, env=env).stdout
            if step != "report" and env:
                commit(steps, step, *args, *extra, run_id=run_id, env=env)
    return out


def commit(steps: Steps, step: str, *args: str, run_id: str | None = None, env: dict[str, str] | None = ENV,
           expect: int = 0) -> Any:
    """The commit container's command: the step's own arguments plus ``--commit-cache``."""
    return steps(step, *args, "--commit-cache", run_id=run_id, env=env, expect=expect)


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
        # committed after each step; the report (its page shows run ids) is not
        stored = entry(steps, step_dir.split("/")[0], note["key"]) / "manifest.json"
        assert stored.is_file() == (step_dir != "report")

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
    assert (steps.path("evaluate/metrics.json", "b").read_bytes()
            == steps.path("evaluate/metrics.json", "a").read_bytes())

    # The report shows run ids and timings of every step, so a new run renders its own page...
    report = steps("report", run_id="b", env=ENV)
    assert "cache hit" not in report.stdout and cache_note(steps, "report", "b")["hit"] is False
    assert "run b" in steps.path("report/report.html", "b").read_text()
    # ...and, committed by hand (the orchestrators do not), a re-run of that run reuses it.
    commit(steps, "report", run_id="b")
    forbid_work(monkeypatch, "report")
    again = steps("report", run_id="b", env=ENV)
    assert "report: cache hit" in again.stdout and "(first computed in run b)" in again.stdout


def test_rerunning_a_run_id_reuses_the_store_and_records_the_hit(steps, monkeypatch):
    run_pipeline(steps, "a")
    manifests = {d: json.loads(steps.path(f"{d}/manifest.json", "a").read_text()) for d in STEP_DIRS}
    files = {d: outputs(steps, d, "a") for d in STEP_DIRS[:-1]}
    forbid_work(monkeypatch, "prepare", "cluster", "evaluate")
    out = run_pipeline(steps, "a")
    # The report shows its inputs' manifests, which now record hits: it renders them anew.
    assert "cache hit" not in out["report"] and steps.manifest("report", "a")["cache"]["hit"] is False
    for step_dir in STEP_DIRS[:-1]:
        assert "cache hit" in out[step_dir] and "(first computed in run a)" in out[step_dir]
        again = json.loads(steps.path(f"{step_dir}/manifest.json", "a").read_text())
        assert again["cache"] == {**manifests[step_dir]["cache"], "hit": True, "source": "a"}
        assert (again["outputs"], again["results"]) == (manifests[step_dir]["outputs"], manifests[step_dir]["results"])
        assert outputs(steps, step_dir, "a") == files[step_dir]


def test_every_key_ingredient_changes_the_key(steps, tmp_path, monkeypatch):
    data = tmp_path / "points.csv"
    data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n7,8,0\n")
    prepare = ("--dataset", str(data), "--label-column", "label")
    steps("prepare", *prepare, run_id="a", env=ENV)
    commit(steps, "prepare", *prepare, run_id="a")
    key = cache_note(steps, "prepare", "a")["key"]

    # one byte of the input file
    data.write_text("a,b,label\n1,2,0\n3,4,1\n5,6,1\n7,9,0\n")
    result = steps("prepare", *prepare, run_id="b", env=ENV)
    commit(steps, "prepare", *prepare, run_id="b")
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
    commit(steps, "cluster", "--n-clusters", "2", "--n-init", "3", run_id="b", env=rebuilt)
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
    commit(blobs, "cluster", env={**ENV, "CLUSTERFLOW_IMAGE": "clusterflow/cluster:1"})
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

    # The report, from the store (committed by hand; its own output removed), against a fresh render
    steps("report", run_id="hit", env=ENV)
    commit(steps, "report", run_id="hit")
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
    commit(blobs, "cluster")
    assert "cache hit" in blobs("cluster", run_id="t", env=ENV).stdout
    reused = outputs(blobs, "cluster/k-means++", "t")
    blobs("cluster", "--no-cache", run_id="t", env=ENV)
    assert outputs(blobs, "cluster/k-means++", "t") == reused


def test_a_tampered_store_entry_is_ignored_with_the_reason_and_the_commit_repairs_it(blobs):
    blobs("cluster", run_id="t", env=ENV)
    commit(blobs, "cluster", run_id="t")
    note = cache_note(blobs, "cluster/k-means++", "t")
    stored = entry(blobs, "cluster", note["key"])
    labels = stored / "labels.npy"
    assert labels.stat().st_mode & 0o777 == 0o444  # stored files are read-only
    damaged = bytearray(labels.read_bytes())
    damaged[-1] ^= 1
    labels.unlink()
    labels.write_bytes(bytes(damaged))

    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="u")
    result = blobs("cluster", run_id="u", env=ENV)
    assert "cache hit" not in result.stdout
    assert (f"warning: cluster: ignored damaged cache entry {stored} (labels.npy does not match its "
            "manifest's sha256); running the step") in result.stderr
    assert cache_note(blobs, "cluster/k-means++", "u") == {"key": note["key"], "hit": False, "source": None}
    assert (outputs(blobs, "cluster/k-means++", "u")["labels.npy"]
            == outputs(blobs, "cluster/k-means++", "t")["labels.npy"])
    assert labels.read_bytes() == bytes(damaged)  # a step never writes the store...
    commit(blobs, "cluster", run_id="u")  # ...its commit replaces the damaged entry
    repaired = json.loads((stored / "manifest.json").read_text())
    assert repaired["run_id"] == "u" and cache.mismatch(stored, repaired["outputs"]) is None


@pytest.mark.parametrize("planted", ["manifest under another key", "no manifest", "extra file"])
def test_a_foreign_store_entry_is_ignored_with_the_reason(blobs, monkeypatch, planted):
    blobs("cluster", env=ENV)
    commit(blobs, "cluster")
    key = cache_note(blobs, "cluster/k-means++", "t")["key"]
    stored = entry(blobs, "cluster", key)
    manifest = stored / "manifest.json"
    manifest.chmod(0o644)
    if planted == "manifest under another key":
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "cache": {"key": "f" * 64}}))
        why = "its manifest was written under another key"
    elif planted == "no manifest":
        manifest.unlink()
        why = "no readable manifest.json"
    else:
        (stored / "extra.npy").write_bytes(b"planted")
        why = "extra.npy is not in its manifest"
    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    result = blobs("cluster", env=ENV)
    assert len(calls) == 1 and "cache hit" not in result.stdout
    assert f"cache entry {stored} ({why}); running the step" in result.stderr


def test_a_planted_step_directory_is_never_a_hit(blobs, monkeypatch):
    """Outputs in a run's own directory are whatever a step container wrote: only the store counts,
    so a ``runs/<next run id>/cluster/`` planted with the right key and a self-consistent manifest
    is replaced by the step's own work."""
    blobs("cluster", env=ENV)  # not committed: the store is empty
    key = cache_note(blobs, "cluster/k-means++", "t")["key"]
    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="next")
    planted = blobs.path("cluster/k-means++", "next")
    planted.mkdir(parents=True)
    fake = planted / "labels.npy"
    fake.write_bytes(blobs.path("cluster/k-means++/labels.npy").read_bytes()[:-1] + b"\x07")
    manifest = blobs.manifest("cluster/k-means++")
    manifest["outputs"] = {"labels.npy": {"sha256": sha256(fake), "bytes": fake.stat().st_size}}
    manifest["run_id"] = "innocent-run"
    (planted / "manifest.json").write_text(json.dumps(manifest))

    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    result = blobs("cluster", run_id="next", env=ENV)
    assert len(calls) == 1 and "cache hit" not in result.stdout
    assert cache_note(blobs, "cluster/k-means++", "next") == {"key": key, "hit": False, "source": None}
    assert outputs(blobs, "cluster/k-means++", "next") == outputs(blobs, "cluster/k-means++", "t")


def test_a_hit_copies_so_an_in_place_write_in_one_run_changes_no_other(blobs):
    blobs("cluster", env=ENV)
    commit(blobs, "cluster")
    key = cache_note(blobs, "cluster/k-means++", "t")["key"]
    for run_id in ("u", "v"):
        blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
              run_id=run_id)
        assert "cache hit" in blobs("cluster", run_id=run_id, env=ENV).stdout
    stored = entry(blobs, "cluster", key) / "centers.npy"
    copies = [blobs.path("cluster/k-means++/centers.npy", r) for r in ("t", "u", "v")]
    assert len({p.stat().st_ino for p in (stored, *copies)}) == 4  # four files, no hard links
    original = stored.read_bytes()
    with open(copies[1], "r+b") as fh:  # rewrite one run's copy in place
        fh.seek(-1, os.SEEK_END)
        fh.write(bytes([original[-1] ^ 1]))
    assert stored.read_bytes() == original
    assert copies[0].read_bytes() == original and copies[2].read_bytes() == original
    # and that run's next attempt reuses the intact entry, restoring its bytes
    assert "cache hit" in blobs("cluster", run_id="u", env=ENV).stdout
    assert copies[1].read_bytes() == original


@pytest.mark.parametrize("tamper", ["key", "params", "output", "symlink", "variant", "nothing run"])
def test_a_commit_refuses_outputs_that_are_not_this_commands(blobs, tamper):
    """The commit derives the key from its own arguments and the inputs it re-hashes; a step
    directory whose manifest says anything else is refused (exit 2, one line) and nothing stored."""
    if tamper != "nothing run":
        blobs("cluster", env=ENV)
    folder = blobs.path("cluster/k-means++")
    args: tuple[str, ...] = ()
    if tamper == "key":  # the step ran with --n-init 4; the commit is asked for --n-init 3
        args = ("--n-init", "3")
        why = "its manifest's cache key"
    elif tamper == "params":
        manifest = blobs.manifest("cluster/k-means++")
        (folder / "manifest.json").write_text(json.dumps({**manifest, "params": {**manifest["params"], "n_init": 9}}))
        why = "its manifest's params are not this command's"
    elif tamper == "output":
        (folder / "labels.npy").write_bytes(b"planted")
        why = "labels.npy does not match its manifest's sha256"
    elif tamper == "symlink":
        (folder / "labels.npy").unlink()
        (folder / "labels.npy").symlink_to(blobs.path("prepare/labels.npy"))
        why = "labels.npy is a symlink"
    elif tamper == "variant":
        manifest = blobs.manifest("cluster/k-means++")
        (folder / "manifest.json").write_text(json.dumps({**manifest, "variant": "random"}))
        why = "its manifest is of step 'cluster', variant 'random'"
    else:
        why = "it holds no readable manifest.json"
    result = commit(blobs, "cluster", *args, expect=2)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"Error: cluster: not caching {folder}: ") and why in lines[0]
    assert lines[0].endswith("run the step with these arguments first")
    assert not (blobs.root / "cache").exists() or not list((blobs.root / "cache").rglob("*.npy"))


def test_a_commit_needs_the_image_digest(blobs):
    blobs("cluster")
    result = commit(blobs, "cluster", env=None, expect=2)
    assert "--commit-cache needs the image digest (CLUSTERFLOW_IMAGE_DIGEST" in result.stderr
    assert not (blobs.root / "cache").exists()


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
    commit(blobs, "cluster")
    key = cache_note(blobs, "cluster/k-means++", "t")["key"]
    calls = count_calls(monkeypatch, "clusterflow_steps.cluster.model.fit")
    args, env = (how, ENV) if isinstance(how, tuple) else ((), {**ENV, how: "1" if "NO" in how else "false"})
    blobs("prepare", "--dataset", "synthetic", "--n-samples", "300", "--n-features", "5", "--n-centers", "3",
          run_id="u")
    result = blobs("cluster", *args, run_id="u", env=env)
    assert len(calls) == 1 and "cache hit" not in result.stdout
    assert cache_note(blobs, "cluster/k-means++", "u") == {"key": key, "hit": False, "source": None,
                                                           "reason": "--no-cache"}
    commit(blobs, "cluster", *args, run_id="u", env=env)  # --no-cache: the commit replaces the entry
    assert json.loads((entry(blobs, "cluster", key) / "manifest.json").read_text())["run_id"] == "u"


def test_a_cached_failing_quality_gate_still_fails(steps, monkeypatch):
    run_pipeline(steps, "a", only=("prepare", "cluster"))
    failed = steps("evaluate", "--max-inertia", "0", run_id="a", env=ENV, expect=3)
    commit(steps, "evaluate", "--max-inertia", "0", run_id="a")  # exit 3 keeps its outputs: committed too
    reason = failed.stderr.strip().splitlines()[-1]
    assert reason.startswith("Error: quality gate failed for best variant")

    forbid_work(monkeypatch, "prepare", "cluster", "evaluate")
    run_pipeline(steps, "b", only=("prepare", "cluster"))
    for run_id in ("b", "b", "a"):  # from the store, each time
        again = steps("evaluate", "--max-inertia", "0", run_id=run_id, env=ENV, expect=3)
        assert "evaluate: cache hit" in again.stdout
        assert again.stderr.strip().splitlines()[-1] == reason
        assert steps.manifest("evaluate", run_id)["exit_status"] == 3
    assert (steps.path("evaluate/metrics.json", "b").read_bytes()
            == steps.path("evaluate/metrics.json", "a").read_bytes())


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
