"""Airflow tests: the digits_kmeans DAG under a real Airflow 3 (in .venv-airflow) and Docker engine.

Airflow lives in its own venv (``scripts/airflow.sh install``; see orchestration/airflow/), so
these tests, which run on the project venv like the rest of the suite, drive it through
subprocesses: ``tests/airflow/dag_probe.py`` for what the DagBag holds, ``scripts/airflow.sh``
for ``airflow`` commands. They never skip: a missing Airflow is installed by the session fixture,
and a failed install fails every test here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.containers.conftest import data_dir, docker_cli, engine  # noqa: F401  (shared fixtures)

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_SH = REPO / "scripts" / "airflow.sh"
VENV = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow"))
PROBE = Path(__file__).with_name("dag_probe.py")
MARKER = "DAG-PROBE-JSON: "
DAG_ID = "digits_kmeans"


@pytest.fixture(scope="session")
def airflow_venv() -> Path:
    """The Airflow venv, installed (or found up to date) by ``scripts/airflow.sh install``."""
    result = subprocess.run([str(AIRFLOW_SH), "install"], capture_output=True, text=True, timeout=900)
    if result.returncode:
        pytest.fail(f"installing Airflow failed (scripts/airflow.sh install):\n{result.stderr[-4000:]}",
                    pytrace=False)
    return VENV


def airflow_environment(home: Path, data_source: str | Path, **extra: str) -> dict[str, str]:
    """The environment ``scripts/airflow.sh`` completes (DAG folder, ports, ...) for one test home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(AIRFLOW_HOME=str(home), AIRFLOW_VENV=str(VENV), CLUSTERFLOW_DATA_SOURCE=str(data_source),
               AIRFLOW__CORE__LOAD_EXAMPLES="False", **extra)
    env.pop("CLUSTERFLOW_IMAGE_TAG", None)
    return env


def airflow(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """``airflow ARGS`` in that environment (through scripts/airflow.sh)."""
    return subprocess.run([str(AIRFLOW_SH), "airflow", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


@pytest.fixture(scope="session")
def probe(airflow_venv: Path, tmp_path_factory: pytest.TempPathFactory) -> Callable[..., dict[str, Any]]:
    """Load the DAG folder with Airflow's DagBag in the Airflow venv; return what dag_probe.py saw."""
    home = tmp_path_factory.mktemp("probe-home")

    def run(**request: Any) -> dict[str, Any]:
        env = airflow_environment(home, "/unused", PYTHONPATH=str(REPO))
        result = subprocess.run([str(airflow_venv / "bin" / "python"), str(PROBE)], input=json.dumps(request),
                                env=env, capture_output=True, text=True, timeout=120)
        lines = [line for line in result.stdout.splitlines() if line.startswith(MARKER)]
        assert result.returncode == 0 and lines, f"dag_probe.py failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
        return json.loads(lines[-1][len(MARKER):])

    return run


def local_runner(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``clusterflow run`` of the project venv (the other rendering of the spec)."""
    command = [sys.executable, "-c", "from clusterflow.cli import main; main()"]
    return subprocess.run([*command, "run", "--data-dir", str(data_dir), *args], capture_output=True, text=True,
                          timeout=600)


def without_timings(value: Any) -> Any:
    """``value`` with every timing (``*_seconds``) left out, for comparing two runs."""
    if isinstance(value, dict):
        return {k: without_timings(v) for k, v in value.items() if not k.endswith("seconds")}
    if isinstance(value, list):
        return [without_timings(v) for v in value]
    return value


def leftover_containers(engine: Any, **labels: str) -> list:
    """Containers (running or not) carrying all of these ``io.clusterflow.*`` labels."""
    filters = {"label": [f"io.clusterflow.{k}={v}" for k, v in labels.items()]}
    return engine.containers.list(all=True, filters=filters)
