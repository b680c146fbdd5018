"""Choosing k with the cache, in-process: each variant x k is its own cluster task with its own
cache key, so a re-run with one more k fits once (the commands are the spec's own renderings)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clusterflow import spec
from clusterflow_steps.cluster import model
from tests.steps.conftest import Steps

ENV = {"CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "a" * 64}
DATA = {"dataset": "synthetic", "n_samples": 300, "n_features": 5, "n_centers": 3, "inits": ("k-means++",)}


def run_sweep(steps: Steps, run_id: str, k: str) -> dict[str, Any]:
    """prepare, every cluster task and evaluate as the spec renders them for ``k``, each committed
    as the orchestrators do; evaluate's metrics."""
    params = spec.PipelineParams(**DATA, k=k)
    for stage in spec.stages(spec.RunId(run_id), params, spec.local_images("test"))[:3]:
        for task in stage:
            args = task.command[2:]  # after --run-id <run_id>, which Steps gives
            steps(task.step, *args, run_id=run_id, env=ENV)
            steps(task.step, *task.commit().command[2:], run_id=run_id, env=ENV)
    return json.loads(steps.path("evaluate/metrics.json", run_id).read_text())


def test_a_rerun_with_one_more_k_fits_exactly_once(steps: Steps, monkeypatch: pytest.MonkeyPatch) -> None:
    first = run_sweep(steps, "a", "2..4")
    assert sorted(first["variants"]) == [f"kmeans-k-means++-k{k}" for k in (2, 3, 4)]
    fits: list[int] = []
    real_fit = model.fit

    def counted(*args: Any, **kwargs: Any) -> Any:
        fits.append(1)
        return real_fit(*args, **kwargs)

    monkeypatch.setattr(model, "fit", counted)
    second = run_sweep(steps, "b", "2..5")
    assert len(fits) == 1
    hits = {k: steps.manifest(f"cluster/kmeans-k-means++-k{k}", "b")["cache"]["hit"] for k in (2, 3, 4, 5)}
    assert hits == {2: True, 3: True, 4: True, 5: False}
    assert sorted(second["variants"]) == [f"kmeans-k-means++-k{k}" for k in (2, 3, 4, 5)]
    assert second["ranked_by"] == "adjusted_mutual_info" and second["best"] in second["variants"]
    assert second["best"] == "kmeans-k-means++-k3"  # 3 well-separated blobs


def test_a_k_above_the_samples_is_refused_by_the_cluster_step(steps: Steps) -> None:
    steps("prepare", "--dataset", "synthetic", "--n-samples", "20", "--n-features", "2", "--n-centers", "2")
    (task,) = spec.stages(spec.RunId("t"), spec.PipelineParams(k="50", inits=("random",)),
                          spec.local_images("test"))[1]
    result = steps("cluster", *task.command[2:], expect=2)
    assert "50" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not steps.path("cluster/kmeans-random-k50").exists()
