"""What the training DAG tells Airflow it produced, and what the scoring DAG reads back (pure: no Airflow).

Two Assets, named here once: the run's metrics (every scored run, a quality-gate breach too) and
the chosen model (only a run whose gate passed). Their URIs are logical, ``clusterflow://<dag>/<what>``,
not ``file://`` paths of the data root: that root is a Docker volume name or a path on the engine's
host (not the scheduler's), and it is a deployment setting, so the URI stays one Asset across
deployments and runs; where a run's files are is in each event's ``extra`` (:func:`event_extra`).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from clusterflow_steps.launch import DATA_MOUNT

from clusterflow import spec

ASSET_SCHEME = "clusterflow"
METRICS_ASSET_NAME = f"{spec.DAG_ID}_metrics"
MODEL_ASSET_NAME = f"{spec.DAG_ID}_model"
METRICS_ASSET_URI = f"{ASSET_SCHEME}://{spec.DAG_ID}/metrics"
MODEL_ASSET_URI = f"{ASSET_SCHEME}://{spec.DAG_ID}/model"

ASSIGN_DAG_ID = f"{spec.DAG_ID}_assign"
# The scoring DAG's dataset when its run names none: the Variable, else the env var, else digits.
ASSIGN_DATASET_VARIABLE = "clusterflow_assign_dataset"
ASSIGN_DATASET_ENV = "CLUSTERFLOW_ASSIGN_DATASET"
DEFAULT_ASSIGN_DATASET = "digits"


def event_extra(*, run_id: str, airflow_run_id: str, data_source: str, summary: Mapping[str, Any] | None,
                image: str, image_digest: str | None, cache_key: str | None) -> dict[str, Any]:
    """An Asset event's ``extra``: which run (on the data root and in Airflow), its best variant and
    headline metrics (evaluate's one-line summary), and the image digest and cache key of the step
    that wrote the Asset's files (JSON-able, as Airflow stores it)."""
    found = summary or {}
    gate = found.get("quality_gate")
    # plain str: Airflow serialises extra with msgpack, which refuses str subclasses such as RunId
    return {"run_id": str(run_id), "airflow_run_id": str(airflow_run_id), "data_source": str(data_source),
            "best": found.get("best"), "ranked_by": found.get("ranked_by"), "metrics": found.get("metrics"),
            "quality_gate_passed": gate.get("passed") if isinstance(gate, Mapping) else None,
            "image": image, "image_digest": image_digest, "cache_key": cache_key}


class NoModel(ValueError):
    """No model whose quality gate passed to score with; ``str()`` is the one-line reason."""


def newest_model(extras: Iterable[Mapping[str, Any] | None]) -> Mapping[str, Any]:
    """The newest model event's extra (events oldest first) whose gate passed and that names its run;
    :class:`NoModel` when there is none."""
    for extra in reversed(list(extras)):
        if extra and extra.get("quality_gate_passed") is True and extra.get("run_id"):
            return extra
    raise NoModel(f"no model whose quality gate passed (no {MODEL_ASSET_URI} event): "
                  f"run {spec.DAG_ID} until its quality gate passes, then score")


def assign_dataset(param: str | None, variable: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The dataset to score: the run's param, else the Variable, else the env var, else digits."""
    return param or variable or environ.get(ASSIGN_DATASET_ENV) or DEFAULT_ASSIGN_DATASET


def dataset_problem(dataset: str) -> str | None:
    """Why ``dataset`` cannot be scored from here (a host file that is not there), else None.

    A built-in dataset, or a file on the data root (``/data/...``, which the step container sees and
    checks), is left to the step."""
    if dataset in spec.BUILTIN_DATASETS or dataset.startswith(DATA_MOUNT + "/") or Path(dataset).is_file():
        return None
    return (f"dataset {dataset!r} is missing: give a built-in one ({', '.join(spec.BUILTIN_DATASETS)}), "
            f"a file on this host, or one on the data root as {DATA_MOUNT}/<path>")
