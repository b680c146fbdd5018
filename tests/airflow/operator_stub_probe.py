"""Runs in the Airflow venv (not collected by pytest): each step's StepOperator.execute with its
container launch stubbed out (no Docker engine), printing what it returned, pushed and launched
as JSON on stdout. What a step does around its container comes from its spec.Role. Also the real
``plan`` task and the DAG's operators under three environments (:func:`settings_once`)."""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from airflow.providers.docker.exceptions import DockerContainerFailedSkipException
from airflow.sdk import DAG, Asset

from clusterflow import dag, pinning, spec
from clusterflow.dag import METRICS_ASSET, MODEL_ASSET
from clusterflow.operators import PLAN_TASK, PLAN_XCOM, StepOperator
from clusterflow.plan import render_plan

MARKER = "OPERATOR-PROBE-JSON: "
GATE_LINE = "Error: quality gate failed for best variant pca"
GATE_SUMMARY = json.dumps({"best": "pca", "quality_gate": {"passed": False}})
PLAN = render_plan({"inits": ["pca"]}, "r1", "/srv/d", pinning.local("t"), spec.StepLimits(1 << 30, 1.0)).to_xcom()


class TaskInstance:
    try_number = 1

    def __init__(self, task_id: str, pushed: dict[str, Any]):
        self.task_id, self.pushed = task_id, {f"{PLAN_TASK}/{PLAN_XCOM}": PLAN, **pushed}

    def xcom_pull(self, task_ids: str, key: str) -> Any:
        return self.pushed.get(f"{task_ids}/{key}")

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[f"{self.task_id}/{key}"] = value


class OutletEvent:
    extra: dict[str, Any] | None = None


def execute(step: str, variant: str | None = None, lines: list[str] | None = None, gate: bool = False,
            pushed: dict[str, Any] | None = None, outlets: list[Asset] | None = None) -> dict[str, Any]:
    with DAG(spec.DAG_ID, start_date=dt.datetime(2026, 1, 1), schedule=None):
        operator = StepOperator(task_id=step, step=step, variant=variant, outlets=outlets or [])
    launched: list[list[str]] = []

    def launch(context: Any) -> list[str] | None:
        command = list(operator.command or [])
        launched.append(command)
        if gate and spec.COMMIT_CACHE_FLAG not in command:
            raise DockerContainerFailedSkipException("exit 3", logs=["scoring", GATE_SUMMARY, GATE_LINE])
        return lines

    operator.launch = launch  # type: ignore[method-assign]
    operator.image_digest = lambda image: "sha256:" + "a" * 64  # type: ignore[method-assign]
    ti = TaskInstance(step, pushed or {})
    events = {outlet: OutletEvent() for outlet in outlets or []}
    try:
        returned, error = operator.execute({"ti": ti, "outlet_events": events}), None
    except Exception as exc:  # what the task fails or skips with
        returned, error = None, f"{type(exc).__name__}: {exc}"
    return {"returned": returned, "error": error, "launched": launched, "pushed": ti.pushed,
            "extras": {outlet.uri: event.extra for outlet, event in events.items()},
            "container_name": operator.container_name, "nano_cpus": operator.nano_cpus}


# The deployment's settings as they are when the DAG file is parsed, when plan runs, and when a step's
# tries run later (the env changed by then: a redeploy). Only plan's may reach a container.
SETTINGS = {when: {spec.DATA_SOURCE_ENV: f"{when}-volume", spec.IMAGE_TAG_ENV: f"{when}-tag",
                   spec.STEP_MEMORY_ENV: memory, spec.STEP_CPUS_ENV: cpus}
            for when, memory, cpus in (("parsed", "3g", "0.25"), ("planned", "1g", "1"), ("later", "512m", "0.5"))}


@contextmanager
def environment(settings: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.update(settings)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def settings_once() -> dict[str, Any]:
    """The DAG parsed under one env, its plan task run under another, then each step's first and
    second try under a third: what each container was launched with."""
    with environment(SETTINGS["parsed"]):
        parsed = dag.build_dag()
        operators = [parsed.get_task(step) for step in ("prepare", "evaluate", "report")]
        with parsed:  # the mapped cluster task, as its expansion for one variant builds it
            operators.insert(1, StepOperator(task_id="cluster-pca", step="cluster", variant="pca"))
    with environment(SETTINGS["planned"]):
        planner = TaskInstance(PLAN_TASK, {})
        dag.plan.function(params={"inits": ["pca"]}, run_id="r1", ti=planner)
    launched: dict[str, list[dict[str, Any]]] = {}
    # later, the operator also set the data root's Airflow Variable (it would win at the next plan)
    with environment({**SETTINGS["later"], f"AIRFLOW_VAR_{dag.DATA_SOURCE_VARIABLE.upper()}": "later-variable"}):
        for operator in operators:
            def launch(context: Any, op: StepOperator = operator) -> list[str]:
                launched.setdefault(op.task_name, []).append({
                    "try_number": context["ti"].try_number, "image": op.image, "mounts": list(op.mounts),
                    "mem_limit": op.mem_limit, "nano_cpus": op.nano_cpus, "environment": op.environment})
                return ['{"best": "pca"}']

            operator.launch = launch  # type: ignore[method-assign]
            operator.image_digest = lambda image: "sha256:" + "a" * 64  # type: ignore[method-assign]
            for try_number in (1, 2):
                ti = TaskInstance(operator.task_id, {**planner.pushed,
                                                     "evaluate/quality_gate": {"passed": True, "reason": None}})
                ti.try_number = try_number
                operator.execute({"ti": ti, "outlet_events": {outlet: OutletEvent() for outlet in operator.outlets}})
    return {"settings": SETTINGS, "launched": launched}


def main() -> None:
    summary = json.dumps({"best": "pca"})
    print(MARKER + json.dumps({
        "prepare": execute("prepare"),
        "cluster": execute("cluster", "pca"),
        "evaluate": execute("evaluate", lines=["scoring", summary]),
        "gated": execute("evaluate", gate=True),
        "report": execute("report", pushed={"evaluate/quality_gate": {"passed": False, "reason": GATE_LINE}}),
        "report_alone": execute("report"),
        "evaluate_model": execute("evaluate", lines=["scoring", summary], outlets=[MODEL_ASSET]),
        "report_metrics": execute("report", outlets=[METRICS_ASSET], pushed={
            "evaluate/quality_gate": {"passed": False, "reason": GATE_LINE},
            "evaluate/return_value": json.loads(GATE_SUMMARY)}),
        "settings_once": settings_once(),
    }, default=str))


if __name__ == "__main__":
    main()
