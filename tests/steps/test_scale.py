"""What keeps steps fast and large runs bounded: lazy imports, thread limits, progress, in-place scaling."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.preprocessing import StandardScaler

from clusterflow_steps import progress, threads
from clusterflow_steps.cluster import model

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("sklearn", "scipy", "joblib", "matplotlib", "threadpoolctl")


def run_in_fresh_python(step: str, args: list[str], env: dict[str, str]) -> list[str]:
    """Run ``step``'s CLI in a new interpreter; the heavy modules it had imported when it finished."""
    code = (f"import atexit, sys; atexit.register(lambda: print('LOADED', sorted(m for m in {HEAVY!r} "
            f"if m in sys.modules))); from clusterflow_steps.{step}.cli import main; main(prog_name={step!r})")
    result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=120,
                            env={**env, "PYTHONPATH": str(REPO / "steps")})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1].removeprefix("LOADED ").replace("'", '"'))


def test_a_cache_hit_never_imports_scikit_learn(tmp_path):
    env = {"CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "c" * 64, "PATH": "/usr/bin:/bin"}
    for step, args in (("prepare", ["--dataset", "synthetic", "--n-samples", "60", "--n-features", "3"]),
                       ("cluster", ["--init", "random"]), ("evaluate", [])):
        argv = ["--run-id", "r", "--data-root", str(tmp_path), *args]
        assert "sklearn" in run_in_fresh_python(step, argv, env), step  # the first run does the work
        run_in_fresh_python(step, [*argv, "--commit-cache"], env)  # the orchestrator's commit stores it
        assert run_in_fresh_python(step, argv, env) == [], step  # the next is a hit: numpy and click only


def test_preparing_the_digits_imports_no_scikit_learn(tmp_path):
    """The digits come from scikit-learn's data file, read without its ~1 s import."""
    argv = ["--run-id", "r", "--data-root", str(tmp_path), "--no-cache"]
    assert run_in_fresh_python("prepare", argv, {"PATH": "/usr/bin:/bin"}) == []
    assert (tmp_path / "runs" / "r" / "prepare" / "features.npy").is_file()


@pytest.mark.parametrize("cpu_max, expected", [("150000 100000", 1), ("400000 100000", 4), ("max 100000", None)])
def test_the_cpu_limit_comes_from_the_cgroup_quota(tmp_path, monkeypatch, cpu_max, expected):
    monkeypatch.setattr(threads.os, "sched_getaffinity", lambda pid: set(range(8)))
    (tmp_path / "cpu.max").write_text(cpu_max + "\n")
    assert threads.cpu_limit(tmp_path) == (expected or 8)


def test_small_work_gets_one_thread_and_large_work_the_limit():
    assert threads.for_work(1797 * 64, limit=2) == 1
    assert threads.for_work(1_000_000 * 64, limit=2) == 2
    assert threads.for_work(0, limit=4) == 1


def test_minibatch_is_fitted_on_the_features_standardised_by_chunks(monkeypatch):
    monkeypatch.setattr(model, "CHUNK_BYTES", 1024)  # many chunks
    features = np.random.default_rng(0).normal(5, 3, size=(500, 4)).astype(np.float32)
    original = features.copy()
    expected = StandardScaler().fit(features)
    fitted = model.fit(features, model.make_kmeans(features, 3, "k-means++", 2, 0, minibatch=True, batch_size=64))
    np.testing.assert_array_equal(features, original)  # not overwritten unless asked
    scaler = fitted.pipeline[0]
    np.testing.assert_allclose(scaler.mean_, expected.mean_, rtol=1e-6)
    np.testing.assert_allclose(scaler.scale_, expected.scale_, rtol=1e-6)
    np.testing.assert_array_equal(fitted.pipeline.predict(original), fitted.labels)
    model.fit(features, model.make_kmeans(features, 3, "k-means++", 2, 0, minibatch=True), overwrite=True)
    np.testing.assert_allclose(features, expected.transform(original), atol=1e-5)  # scaled in place


def test_large_runs_report_their_phases_on_stderr_and_evaluate_still_ends_with_json(steps, monkeypatch):
    monkeypatch.setattr(progress, "MIN_ELEMENTS", 1)
    prepared = steps("prepare", "--dataset", "synthetic", "--n-samples", "200", "--n-features", "3")
    clustered = steps("cluster", "--minibatch", "--batch-size", "50")
    evaluated = steps("evaluate")
    assert "prepare: loaded and checked dataset synthetic (" in prepared.stderr and "s elapsed)" in prepared.stderr
    assert "cluster: fitted MiniBatchKMeans (1 threads)" in clustered.stderr
    assert "evaluate: scored 1 variants" in evaluated.stderr
    assert json.loads(evaluated.stdout.splitlines()[-1])["best"] == "k-means++"


def test_small_runs_stay_quiet(blobs):
    assert blobs("cluster").stderr == ""
