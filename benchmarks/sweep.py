"""Choosing k: K-Means (k-means++) on the digits for k = 2..15, through the runner and Airflow,
against the same fits in one bare process (issue 15's measurement)."""

from __future__ import annotations

import itertools
import sys
import tempfile
from pathlib import Path

from benchmarks.measure import PEAK_RSS_WRAPPER, REPO, Stat, Table, ratio, repeat, run_process
from benchmarks.overhead import data_dir, dags_test
from tests.airflow.conftest import airflow, airflow_environment

KS = (2, 15)
QUICK_KS = (2, 4)


def local_sweep(root: Path, n: int, k: str, jobs: int) -> float:
    return run_process([str(REPO / ".venv/bin/clusterflow"), "run", "--run-id", f"sweep-{n}", "--data-dir",
                        str(data_dir(root / f"local-{n}")), "--init", "k-means++", "--k", k, "--no-cache",
                        "--jobs", str(jobs)]).seconds


def run(repeats: int, ks: tuple[int, int] = KS) -> tuple[Table, dict[str, Stat]]:
    low, high = ks
    k = f"{low}..{high}"
    conf = {"inits": ["k-means++"], "k": k, "cache": False}  # every fit done: the cache is measured elsewhere
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-sweep-") as tmp:
        root = Path(tmp)
        runs = itertools.count()
        rows: dict[str, Stat] = {"bare": repeat(lambda: run_process(
            [sys.executable, "-c", PEAK_RSS_WRAPPER, "benchmarks.bare", "sweep", str(low), str(high)]).seconds,
            repeats)}
        for jobs in (1, 2):
            def local(jobs: int = jobs) -> float:
                return local_sweep(root, next(runs), k, jobs)

            rows[f"local-{jobs}"] = repeat(local, repeats)
        env = airflow_environment(root / "airflow-home", data_dir(root / "airflow"))
        migrated = airflow(env, "db", "migrate", timeout=600)
        if migrated.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stderr[-3000:]}")
        rows["dags_test"] = repeat(lambda: dags_test(env, conf), repeats)
    n = high - low + 1
    table = Table(f"Choosing k: K-Means on the digits for k = {k} ({n} fits), bare vs the runner vs Airflow",
                  ("run", "wall time, median (min–max)", "vs bare", "per fit"))
    names = {"bare": f"bare scikit-learn, one process ({n} fits and their scores, one after the other)",
             "local-1": f"`clusterflow run --k {k} --init k-means++ --no-cache --jobs 1` ({n + 3} containers)",
             "local-2": f"the same, `--jobs 2` ({n} cluster containers, 2 at once)",
             "dags_test": f"`airflow dags test digits_kmeans` with k {k} (mapped cluster task, cache off)"}
    for key, stat in rows.items():
        table.add(names[key], stat.cell(), ratio(stat.median, rows["bare"].median), f"{stat.median / n:.2f} s")
    table.notes.append("Each container run does every fit (cache off); a re-run with one more k fits once "
                       "(tests/containers/test_sweep.py).")
    return table, rows
