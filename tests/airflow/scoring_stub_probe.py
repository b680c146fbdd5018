"""Runs in the Airflow venv (not collected by pytest): the scoring DAG's plan task, called with
stub Asset events and Variables (no Airflow API, no Docker), printing the plan it pushed or the
one-line failure, as JSON on stdout."""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

from clusterflow import lineage, scoring
from clusterflow.dag import MODEL_ASSET

MARKER = "SCORING-PROBE-JSON: "


class Event:
    def __init__(self, extra: dict[str, Any]):
        self.extra = extra


class TaskInstance:
    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def model(run_id: str, root: str, passed: bool = True) -> Event:
    return Event(lineage.event_extra(run_id=run_id, airflow_run_id=f"manual__{run_id}", data_source=root,
                                     summary={"best": "pca", "quality_gate": {"passed": passed}},
                                     image="clusterflow/cluster:t", image_digest="sha256:ab", cache_key="c"))


def plan(variable: str | None = None, **kwargs: Any) -> dict[str, Any]:
    scoring.Variable.get = lambda key, default=None: variable  # type: ignore[method-assign]
    ti = TaskInstance()
    try:
        returned, error = scoring.plan.function(run_id="manual__s1", ti=ti, **kwargs), None
    except Exception as exc:  # what the task fails with
        returned, error = None, f"{type(exc).__name__}: {exc}"
    return {"returned": returned, "error": error, "plan": ti.pushed.get("plan")}


def main() -> None:
    root = tempfile.mkdtemp()
    older, newer = model("r1", root), model("r2", root)
    print(MARKER + json.dumps({
        "triggered": plan(triggering_asset_events={MODEL_ASSET: [older, newer]}, params={}),
        "by_hand": plan(inlet_events={MODEL_ASSET: [older, newer, model("r3", root, passed=False)]},
                        params={"dataset": "synthetic"}),
        "variable": plan("/data/inputs/new.csv", triggering_asset_events={MODEL_ASSET: [newer]}, params={}),
        "no_model": plan(inlet_events={MODEL_ASSET: []}, params={}),
        "missing": plan(triggering_asset_events={MODEL_ASSET: [newer]}, params={"dataset": "/nonexistent/x.csv"}),
    }, default=str))


if __name__ == "__main__":
    sys.exit(main())
