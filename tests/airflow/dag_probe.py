"""Runs in the Airflow venv (not collected by pytest): loads the DAG folder with Airflow's own
DagBag and prints what the tests in this folder check, as JSON on stdout.

stdin: {"render": [{"params": {...}, "run_id": ..., "data_source": ..., "tag": ..., "env": {...}}, ...],
        "conf": [{...}, ...]}     (confs to validate against the DAG's Params)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from airflow.dag_processing.dagbag import DagBag
from airflow.sdk.definitions.param import ParamsDict

from clusterflow import dag as airflow_dag
from clusterflow import lineage
from clusterflow.engine import docker_mount
from clusterflow.plan import Plan, render_container, render_plan

MARKER = "DAG-PROBE-JSON: "


def seconds(delta):
    return delta.total_seconds() if delta is not None else None


def task_facts(task) -> dict:
    partial = getattr(task, "partial_kwargs", {}) or {}

    def get(name):
        return partial.get(name, getattr(task, name, None)) if task.is_mapped else getattr(task, name, None)

    facts = {
        "class": type(task).__name__ if not task.is_mapped else task.operator_class.__name__,
        "mapped": bool(task.is_mapped),
        "upstream": sorted(task.upstream_task_ids),
        "downstream": sorted(task.downstream_task_ids),
        "trigger_rule": str(getattr(get("trigger_rule"), "value", get("trigger_rule"))),
        "retries": get("retries"),
        "retry_exponential_backoff": bool(get("retry_exponential_backoff")),
        "execution_timeout": seconds(get("execution_timeout")),
        "retry_delay": seconds(get("retry_delay")),
    }
    if task.is_mapped:
        facts["expand"] = sorted(task.expand_input.value)
    return facts


def main() -> None:
    request = json.load(sys.stdin)
    folder = Path(airflow_dag.__file__).resolve().parents[1] / "dags"
    bag = DagBag(str(folder))
    out: dict = {"import_errors": bag.import_errors, "dag_ids": sorted(bag.dags)}
    dag = bag.dags.get(airflow_dag.DAG_ID)
    if dag is None:
        print(MARKER + json.dumps(out))
        return
    out["dag"] = {
        "schedule": getattr(dag.timetable, "_expression", None) or str(dag.timetable),
        "timetable": type(dag.timetable).__name__,
        "catchup": dag.catchup,
        "max_active_runs": dag.max_active_runs,
        "start_date": dag.start_date.isoformat(),
        "doc_md": dag.doc_md,
        "fileloc": dag.fileloc,
    }
    out["tasks"] = {t.task_id: task_facts(t) for t in dag.tasks}
    out["outlets"] = {t.task_id: [a.uri for a in t.outlets] for t in dag.tasks}
    scoring = bag.dags.get(lineage.ASSIGN_DAG_ID)
    if scoring is not None:
        out["assign_dag"] = {
            "fileloc": scoring.fileloc, "timetable": type(scoring.timetable).__name__,
            "schedule_assets": [a.uri for a in scoring.timetable.asset_condition.objects],
            "tasks": {t.task_id: task_facts(t) for t in scoring.tasks},
            "inlets": {t.task_id: [a.uri for a in t.inlets] for t in scoring.tasks},
            "params": {name: {"default": p.value, "schema": p.schema} for name, p in scoring.params.items()},
            "assign_class": type(scoring.get_task("assign")).__name__,
            "assign_network_mode": scoring.get_task("assign").network_mode,
            "assign_user": scoring.get_task("assign").user,
        }
    out["params"] = {name: {"default": p.value, "schema": p.schema, "description": p.description}
                     for name, p in dag.params.items()}
    out["docker"] = {}
    for task_id in ("prepare", "evaluate", "report"):
        op = dag.get_task(task_id)
        out["docker"][task_id] = {
            "user": op.user, "network_mode": op.network_mode, "mount_tmp_dir": op.mount_tmp_dir,
            "auto_remove": op.auto_remove, "docker_url": op.docker_url,
            "host_config_extra": op.cli._extra,
            "skip_on_exit_code": list(op.skip_on_exit_code),
        }
    renders = []
    for case in request.get("render", []):
        try:
            images = airflow_dag.plan_images({**case.get("env", {}), airflow_dag.IMAGE_TAG_ENV: case["tag"]})
        except ValueError as exc:
            out["render_error"] = str(exc)
            break
        plan = render_plan(case["params"], case["run_id"], case["data_source"], images)
        plan = Plan.from_xcom(plan.to_xcom())  # what every step task reads back
        rendered = {}
        for t in plan.tasks:
            op = dag.get_task(t.step)
            step = op.partial_kwargs["step"] if op.is_mapped else op.step
            settings = render_container(plan, dag.dag_id, plan.task(step, t.variant),
                                        case.get("try_number", 1), case.get("digest"))
            settings["mounts"] = [dict(docker_mount(m)) for m in settings["mounts"]]
            rendered[t.name] = settings
        renders.append({"plan": plan.to_xcom(), "containers": rendered})
    out["render"] = renders
    retry = request.get("retry")
    if retry:  # what a later try launches from the plan it pulls from XCom
        image = retry["plan"]["tasks"][f"{retry['step']}[{retry['variant']}]"]["image"]
        digest = dag.get_task("prepare").image_digest(image)  # StepOperator's (the same for every step)
        plan = Plan.from_xcom(retry["plan"])
        settings = render_container(plan, dag.dag_id, plan.task(retry["step"], retry["variant"]),
                                    retry["try_number"], digest)
        out["retry"] = {"image": settings["image"], "environment": settings["environment"]}
    validations = []
    for conf in request.get("conf", []):
        params = ParamsDict(dag.params)  # a copy, as a triggered run gets
        try:
            params.update(conf)
            params.validate()
            validations.append(None)
        except Exception as exc:  # ParamValidationError
            validations.append(f"{type(exc).__name__}: {exc}")
    out["conf"] = validations
    print(MARKER + json.dumps(out, default=str))


if __name__ == "__main__":
    main()
