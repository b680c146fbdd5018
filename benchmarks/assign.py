"""Scoring new data: ``assign`` of N x 64 rows (1,000,000 by default) through the runner's container
vs the same rule in one bare process, and scikit-learn's own ``predict`` of the same fitted model.

    python -m benchmarks --section assign [--assign-rows N]
    python -m benchmarks.assign bare DATA MODEL_NPZ      # the bare process (run under PEAK_RSS_WRAPPER)
    python -m benchmarks.assign sklearn DATA MODEL_JOBLIB

The model: a k-means++ run on 10,000 synthetic samples (the scale runs' blobs); the new data are more
blobs from the same centers (``make_blobs`` draws the centers first, from the same seed), float32.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import docker
import numpy as np

from benchmarks.containers import _PeakRssClient, run_pipeline
from benchmarks.measure import PEAK_RSS_WRAPPER, Stat, Table, _peak_rss, ratio, run_process, stats
from benchmarks.scale_params import N_CENTERS, N_FEATURES, N_INIT, SEED
from clusterflow import pinning, spec
from clusterflow.runner import LocalRunner
from clusterflow.version import VERSION
from clusterflow_steps.contract import ASSIGN, ASSIGN_SUMMARY, CACHE, MODEL, MODEL_ARRAYS, RunLayout

MB = 1 << 20
ROWS = 1_000_000
TRAIN_ROWS = 10_000
RUN_ID = "assign-model"


def new_data(path: Path, n_rows: int) -> Path:
    from sklearn.datasets import make_blobs

    features, _ = make_blobs(n_samples=n_rows, n_features=N_FEATURES, centers=N_CENTERS, random_state=SEED + 1)
    np.save(path, features.astype(np.float32))
    path.chmod(0o644)
    return path


def one(client: docker.DockerClient, data: Path, dataset: Path) -> dict[str, float]:
    """One assign container (and its commit) without a cache entry: wall, the step's own time, peak RSS."""
    shutil.rmtree(data / CACHE / ASSIGN, ignore_errors=True)  # every repeat computes (no hit)
    lines: list[str] = []
    runner = LocalRunner(_PeakRssClient(client), data, log=lines.append)
    started = time.perf_counter()
    summary = runner.assign(spec.RunId(RUN_ID), str(dataset), pinning.local(VERSION, (ASSIGN,)))
    wall = time.perf_counter() - started
    manifest = json.loads((summary.parent / "manifest.json").read_text())
    step_lines = [line for line in lines if line.startswith(f"[{ASSIGN}] ")]
    return {"runner": wall, "work": manifest["duration_seconds"], "rss": _peak_rss("\n".join(step_lines)) / MB}


def run(client: docker.DockerClient, repeats: int, n_rows: int = ROWS) -> tuple[Table, dict[str, Stat]]:
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-assign-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        data.chmod(0o777)
        run_pipeline(client, data, RUN_ID, spec.PipelineParams(
            dataset="synthetic", n_samples=TRAIN_ROWS, n_features=N_FEATURES, n_centers=N_CENTERS,
            inits=("k-means++",), n_init=N_INIT, seed=SEED, cache=False))
        dataset = new_data(Path(tmp) / "new.npy", n_rows)
        layout = RunLayout(data.resolve(), RUN_ID)
        samples = []
        for _ in range(repeats):
            sample = one(client, data, dataset)
            bare = run_process([sys.executable, "-c", PEAK_RSS_WRAPPER, "benchmarks.assign", "bare", str(dataset),
                                str(layout.path(MODEL_ARRAYS, "k-means++"))])
            predict = run_process([sys.executable, "-c", PEAK_RSS_WRAPPER, "benchmarks.assign", "sklearn",
                                   str(dataset), str(layout.path(MODEL, "k-means++"))])
            samples.append({**sample, "bare": bare.seconds, "bare_rss": bare.peak_rss_bytes / MB,
                            "sklearn": predict.seconds, "sklearn_rss": predict.peak_rss_bytes / MB})
        agreed = json.loads(layout.path(ASSIGN_SUMMARY).read_text())["n_samples"] == n_rows
    measured = stats(samples)
    features = n_rows * N_FEATURES * 4 / MB
    table = Table(f"Assign: {n_rows:,} x {N_FEATURES} float32 ({features:.0f} MiB) scored by a k-means++ model "
                  f"of {TRAIN_ROWS:,} samples", ("what", "wall", "peak RSS", "vs bare"))
    table.add("`clusterflow assign`'s container and its cache commit (runner)", measured["runner"].cell(),
              f"{measured['rss'].median:.0f} MiB (the step)", ratio(measured["runner"].median,
                                                                   measured["bare"].median))
    table.add("the assign step's own time (its manifest)", measured["work"].cell(), "",
              ratio(measured["work"].median, measured["bare"].median))
    table.add("bare process: np.load + the same numpy rule + summary", measured["bare"].cell(),
              f"{measured['bare_rss'].median:.0f} MiB", "1.00×")
    table.add("scikit-learn: joblib.load + pipeline.predict, one process", measured["sklearn"].cell(),
              f"{measured['sklearn_rss'].median:.0f} MiB", ratio(measured["sklearn"].median,
                                                                 measured["bare"].median))
    table.notes.append(f"every row assigned and summed up: {'yes' if agreed else 'NO'}; each repeat computes "
                       "(the cache entry is removed before it), the runner's time includes hashing the input "
                       "twice (step and commit).")
    return table, measured


def _bare(dataset: str, model_npz: str) -> None:
    from clusterflow_steps.assign import model, summary

    fitted = model.load(Path(model_npz), "cluster")
    labels, distances = fitted.assign(np.load(dataset))
    summary.summarize(labels, distances, fitted.n_clusters)


def _sklearn(dataset: str, model_joblib: str) -> None:
    import joblib

    joblib.load(model_joblib).predict(np.load(dataset))


if __name__ == "__main__":
    {"bare": _bare, "sklearn": _sklearn}[sys.argv[1]](*sys.argv[2:4])
