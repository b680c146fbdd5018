"""Row 1: the bare digits demo vs the same pipeline through containers, Airflow and a scheduler."""

from __future__ import annotations

import itertools
import json
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from benchmarks.measure import PEAK_RSS_WRAPPER, REPO, Stat, Table, ratio, repeat, run_process, timed
from tests.airflow.conftest import DAG_ID, airflow, airflow_environment, standalone_airflow

NO_CACHE = {"cache": False}  # every run does the work; cache hits are measured in the steps section


def bare_demo() -> float:
    return run_process([sys.executable, "-c", PEAK_RSS_WRAPPER, "benchmarks.bare", "digits"]).seconds


def data_dir(parent: Path) -> Path:
    data = parent / "data"
    data.mkdir(parents=True)
    data.chmod(0o777)  # the steps' uid 10001 writes here when the harness runs as root
    return data


def local_run(root: Path, n: int) -> float:
    return run_process([str(REPO / ".venv/bin/clusterflow"), "run", "--run-id", f"bench-{n}",
                        "--data-dir", str(data_dir(root / f"local-{n}")), "--no-cache"]).seconds


def dags_test(env: dict[str, str], conf: Mapping[str, object] = NO_CACHE) -> float:
    def run() -> None:
        result = airflow(env, "dags", "test", DAG_ID, "-c", json.dumps(conf), timeout=1800)
        if result.returncode or "state=success" not in result.stdout + result.stderr:
            raise RuntimeError(f"airflow dags test failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")

    return timed(run)


def run(repeats: int) -> tuple[Table, dict[str, Stat]]:
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-") as tmp:
        root = Path(tmp)
        rows: dict[str, Stat] = {"bare": repeat(bare_demo, repeats)}
        runs = itertools.count()
        rows["local"] = repeat(lambda: local_run(root, next(runs)), repeats)
        env = airflow_environment(root / "airflow-home", data_dir(root / "airflow"))
        migrated = airflow(env, "db", "migrate", timeout=600)
        if migrated.returncode:
            raise RuntimeError(f"airflow db migrate failed:\n{migrated.stderr[-3000:]}")
        rows["dags_test"] = repeat(lambda: dags_test(env), repeats)
        (root / "standalone-home").mkdir()
        with standalone_airflow(root / "standalone-home", data_dir(root / "standalone")) as standalone:
            def scheduled() -> float:
                started = time.perf_counter()
                finished = standalone.finished(standalone.trigger(NO_CACHE), 900)
                if finished["state"] != "success":
                    raise RuntimeError(f"scheduled run {finished['dag_run_id']} {finished['state']}")
                return time.perf_counter() - started

            rows["scheduler"] = repeat(scheduled, repeats)
    table = Table("Overhead: the digits pipeline (3 cluster variants), bare vs containers vs Airflow",
                  ("run", "wall time, median (min–max)", "vs bare demo", "minus bare demo"))
    names = {"bare": "bare scikit-learn demo, one process (3 fits, table, figure)",
             "local": "`clusterflow run --no-cache` (6 step containers)",
             "dags_test": "`airflow dags test digits_kmeans` (cache off)",
             "scheduler": "scheduler-driven run: REST trigger → success (cache off)"}
    for key, stat in rows.items():
        table.add(names[key], stat.cell(), ratio(stat.median, rows["bare"].median),
                  f"{stat.median - rows['bare'].median:+.2f} s")
    table.notes.append("Each container run does all the work (cache off); the bare demo includes interpreter "
                       "start-up and imports, as `python demo.py` would.")
    return table, rows
