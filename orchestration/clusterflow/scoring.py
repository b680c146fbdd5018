"""The scoring DAG: a dataset scored with the newest model whose quality gate passed (Airflow 3).

``orchestration/dags/digits_kmeans_assign.py`` only calls :func:`build_assign_dag`. It runs on
every update of the training DAG's model Asset (:data:`clusterflow.dag.MODEL_ASSET`, only updated
by a run whose gate passed) and by hand with a ``dataset`` param. Tasks::

    plan ─▶ assign

``plan`` picks the model (the triggering Asset event's extra; by hand, the newest event of that
Asset), checks the dataset and renders the assign container (:func:`spec.assign_task`, its image
resolved once like the training run's, :func:`pinning.resolve` of ``(ASSIGN,)``) as a one-task
:class:`clusterflow.plan.Plan`; ``assign`` launches it with the training DAG's StepOperator, so
the same container policy, engine, digest record and cache commit apply. The output is
``runs/<model run>/assign/``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from airflow.sdk import DAG, Param, Variable, task
from airflow.sdk.exceptions import AirflowFailException
from clusterflow_steps.contract import ASSIGN, RunId

from clusterflow import lineage, spec
from clusterflow.dag import MODEL_ASSET, START_DATE, plan_images, prepare_host_data_root
from clusterflow.operators import PLAN_TASK, PLAN_XCOM, step_operator
from clusterflow.plan import Plan, check_data_source

DOC_MD = f"""
# {lineage.ASSIGN_DAG_ID}

Scores a dataset with the newest `{spec.DAG_ID}` model whose quality gate passed, writing
`runs/<that run>/assign/` (the cluster of every sample, and a summary). Runs on every update of the
Asset `{lineage.MODEL_ASSET_URI}` (a training run whose gate passed) and when triggered by hand.

Param `dataset`: a built-in dataset, a file on the Airflow host, or `/data/<path>` on the data root;
empty: the Variable `{lineage.ASSIGN_DATASET_VARIABLE}`, else env `{lineage.ASSIGN_DATASET_ENV}`,
else `{lineage.DEFAULT_ASSIGN_DATASET}`. Fails in one line when no model passed its gate or the
dataset is missing. Data root and images as for `{spec.DAG_ID}`.
"""


def assign_plan(model: dict[str, Any], dataset: str, airflow_run_id: str, images: Any) -> Plan:
    """The one-task plan that scores ``dataset`` with the run of ``model`` (an Asset event's extra)."""
    run_id, source = RunId(model["run_id"]), check_data_source(str(model["data_source"]))
    assigned = spec.assign_task(run_id, dataset, images.refs[ASSIGN])
    return Plan(run_id=run_id, airflow_run_id=airflow_run_id, params=spec.PipelineParams(dataset=dataset),
                data_source=source, images=images, limits=spec.step_limits(), tasks=(assigned,),
                mounts=tuple(spec.mounts(source, dataset)), commit_mounts=tuple(spec.mounts(source, dataset,
                                                                                           commit=True)))


@task(task_id=PLAN_TASK, inlets=[MODEL_ASSET])
def plan(params: dict[str, Any] | None = None, run_id: str | None = None, ti: Any = None,
         triggering_asset_events: Any = None, inlet_events: Any = None) -> str:
    """Pick the model and the dataset, render the assign container; push it as XCom ``plan``."""
    triggered = list((triggering_asset_events or {}).get(MODEL_ASSET, []))
    events = triggered or list((inlet_events or {})[MODEL_ASSET])  # by hand: the newest of all
    dataset = lineage.assign_dataset((params or {}).get("dataset"),
                                     Variable.get(lineage.ASSIGN_DATASET_VARIABLE, default=None))
    try:
        model = dict(lineage.newest_model(event.extra for event in events))
        if problem := lineage.dataset_problem(dataset):
            raise ValueError(problem)
        rendered = assign_plan(model, dataset, str(run_id), plan_images(steps=(ASSIGN,)))
        prepare_host_data_root(rendered.data_source, rendered.run_id)
    except ValueError as exc:  # no model, a missing dataset, bad image pins (pinning), a bad data root
        raise AirflowFailException(str(exc)) from None
    print(f"scoring {dataset} with the model of run {rendered.run_id} (best variant {model.get('best')}, "
          f"image {model.get('image_digest')}, data root {rendered.data_source})")
    ti.xcom_push(PLAN_XCOM, rendered.to_xcom())
    return str(rendered.run_id)


def build_assign_dag() -> DAG:
    with DAG(
        dag_id=lineage.ASSIGN_DAG_ID,
        description=f"Score a dataset with the newest {spec.DAG_ID} model whose quality gate passed",
        doc_md=DOC_MD,
        schedule=[MODEL_ASSET],
        start_date=START_DATE,
        catchup=False,
        max_active_runs=1,  # one assign container per model run's name (spec.container_name)
        dagrun_timeout=dt.timedelta(hours=1),
        params={"dataset": Param(None, type=["null", "string"],
                                 description="what to score (empty: the configured dataset, else digits)")},
        tags=["clusterflow"],
        default_args={"owner": "clusterflow"},
    ) as dag:
        planned = plan.override(retries=0, execution_timeout=dt.timedelta(minutes=1))()
        assign = step_operator()(task_id=ASSIGN, step=ASSIGN, retries=2, retry_delay=dt.timedelta(seconds=30),
                                 execution_timeout=dt.timedelta(minutes=30))
        planned >> assign
    return dag
