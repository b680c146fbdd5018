"""The pipeline spec rendered as an Airflow 3 DAG of step containers.

``orchestration/dags/digits_kmeans.py`` only calls :func:`build_dag`. Every step, flag, image and
mount comes from :mod:`clusterflow.spec` (rendered by :mod:`clusterflow.plan`, launched by
:mod:`clusterflow.operators`); this module adds only what is Airflow's: the schedule, retries and
timeouts, Params (derived from :class:`spec.PipelineParams`) and the task order.

Tasks::

    plan ─▶ prepare ─▶ cluster[<variant>] (mapped, one per variant x k) ─▶ evaluate ─▶ report ─▶ outcome

``plan`` validates the run's params, derives the run id on the volume from Airflow's run id and
resolves the run's settings once (data root, step images: by digest when pinned, see
:func:`clusterflow.pinning.resolve`); every container task reads them from its XCom, so retries
and concurrent runs stay consistent. ``outcome`` fails the DAG run when any step
failed: ``report`` runs after a quality-gate breach in ``evaluate`` and would otherwise leave the
run green.
"""

from __future__ import annotations

import datetime as dt
import functools
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import docker
from airflow.sdk import DAG, Asset, Param, TriggerRule, Variable, task
from airflow.sdk.exceptions import AirflowFailException
from clusterflow_steps.contract import FEATURES, LABELS, METRICS, QUALITY_GATE_EXIT, REPORT, RunId

from clusterflow import dataroot, engine, lineage, notifier, notify, pinning, spec
from clusterflow.operators import LAUNCHER_ENV, PLAN_TASK, PLAN_XCOM, step_operator
from clusterflow.plan import render_plan
from clusterflow.version import VERSION

DAG_ID = spec.DAG_ID
SCHEDULE = "0 22 * * *"  # nightly at 22:00 (UTC, Airflow's default timezone)
START_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
MAX_ACTIVE_RUNS = 2  # runs never share a directory (see spec.safe_run_id); two bound the load
METRICS_ASSET = Asset(name=lineage.METRICS_ASSET_NAME, uri=lineage.METRICS_ASSET_URI)  # every scored run
MODEL_ASSET = Asset(name=lineage.MODEL_ASSET_NAME, uri=lineage.MODEL_ASSET_URI)  # a run whose gate passed

DATA_SOURCE_ENV = spec.DATA_SOURCE_ENV
DATA_SOURCE_VARIABLE = "clusterflow_data_source"
DEFAULT_DATA_SOURCE = "clusterflow-data"  # a named Docker volume
IMAGE_TAG_ENV = spec.IMAGE_TAG_ENV

# Per task: Airflow's retry and timeout policy (the commands themselves come from the spec).
TASK_POLICY: dict[str, dict[str, Any]] = {
    PLAN_TASK: {"retries": 0, "execution_timeout": dt.timedelta(minutes=1)},
    "prepare": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
                "execution_timeout": dt.timedelta(minutes=5)},
    "cluster": {"retries": 5, "retry_delay": dt.timedelta(seconds=10), "retry_exponential_backoff": True,
                "max_retry_delay": dt.timedelta(minutes=10), "execution_timeout": dt.timedelta(minutes=20),
                "max_active_tis_per_dagrun": spec.PARALLEL_TASKS},  # a sweep over k: not all at once
    "evaluate": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
                 "execution_timeout": dt.timedelta(minutes=10)},
    "report": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
               "execution_timeout": dt.timedelta(minutes=10)},
    "outcome": {"retries": 0, "execution_timeout": dt.timedelta(minutes=1)},
}
# Drills and tests only (unset in production): override the step tasks' timeout / retry delay.
# Read when the DAG file is parsed, so set them in the environment of every Airflow component.
TIMEOUT_ENV = "CLUSTERFLOW_TASK_TIMEOUT_SECONDS"
RETRY_DELAY_ENV = "CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS"


def task_policy(environ: Mapping[str, str] = os.environ) -> dict[str, dict[str, Any]]:
    """:data:`TASK_POLICY`, with ``$CLUSTERFLOW_TASK_TIMEOUT_SECONDS`` as every step task's
    ``execution_timeout`` and ``$CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS`` as its ``retry_delay``
    when set (positive seconds; anything else fails the DAG's import with the reason)."""
    policy = {name: dict(values) for name, values in TASK_POLICY.items()}
    for env, key in ((TIMEOUT_ENV, "execution_timeout"), (RETRY_DELAY_ENV, "retry_delay")):
        raw = environ.get(env)
        if not raw:
            continue
        try:
            seconds = float(raw)
        except ValueError:
            seconds = 0.0
        if not seconds > 0:
            raise ValueError(f"{env}={raw!r}: give a positive number of seconds, or unset it")
        for name in spec.STEPS:
            policy[name][key] = dt.timedelta(seconds=seconds)
    return policy


DOC_MD = f"""
# digits_kmeans

scikit-learn's *K-Means clustering on the handwritten digits* demo as four container steps
that talk only through files under `/data/runs/<run_id>/<step>/` (see the README, section
**Artifact contract**):

1. **prepare** loads the data set (`{FEATURES.name}`, `{LABELS.name}`);
2. **cluster** fits the `algorithm` (K-Means: once per init strategy in the `inits` param), for each
   number of clusters of `k` (`2..15`, `2,5,10`), or each variant spec of `sweep` (a list of
   `{{"algorithm": ..., "k": ..., <its options>}}`): one mapped task per variant (`cluster/<variant>/`),
   at most {spec.PARALLEL_TASKS} at once;
3. **evaluate** scores every variant (`{METRICS.name}`), applies the quality gate (`min_*` /
   `max_inertia` params) and pushes a one-line summary (best variant and its metrics) as XCom;
   a breach fails it (exit {QUALITY_GATE_EXIT}) with the reason in its log;
4. **report** writes `{REPORT.name}`; it also runs after a quality-gate breach, to document it.

Assets: evaluate updates `{lineage.MODEL_ASSET_URI}` when the quality gate passed (its chosen model),
report updates `{lineage.METRICS_ASSET_URI}` for every scored run; each event's extra holds the run
id, best variant and metrics, the image digest and cache key. `{lineage.ASSIGN_DAG_ID}` is scheduled
on the model Asset.

`plan` checks the params and derives the run id on the volume from Airflow's run id
(`manual__2026-11-24T10:00:00+00:00` becomes `manual__2026-11-24T10-00-00-00-00-<hash>`);
`outcome` fails the DAG run if any step failed.

Email: on success, a quality-gate breach and any other failure, once the Variable
`{notify.SMTP_CONN_VARIABLE}` names an SMTP connection and `{notify.RECIPIENTS_VARIABLE}` lists the
recipients (comma-separated): run id, outcome, best variant and its metrics, the gate's verdict and
a link to the run's Report tab.

Data root: the Airflow Variable `{DATA_SOURCE_VARIABLE}`, else env `{DATA_SOURCE_ENV}`, else the
named volume `{DEFAULT_DATA_SOURCE}`: an absolute host path (bind mount, writable by uid
{spec.STEP_UID}) or a Docker volume name. Images: with env `{pinning.DIGESTS_ENV}` (a digests
file of a publish) every step image is `<registry>/clusterflow/<step>@sha256:...`; with only
`{pinning.REGISTRY_ENV}`, `plan` resolves `<registry>/clusterflow/<step>:<tag>` to its digest once per run;
otherwise the local builds `clusterflow/<step>:<tag>`. Tag from env `{IMAGE_TAG_ENV}` (default the
project version). A missing pinned image is pulled by digest. Engine: `DOCKER_HOST`, else the local socket;
env `{LAUNCHER_ENV}=swarm` runs each step as a one-shot Docker Swarm service instead of a container.
Every step runs as {spec.STEP_USER} with a read-only root filesystem, a tmpfs `/tmp` and all
capabilities dropped; as a container (the default) also with no network and `no-new-privileges`,
which a Swarm service spec on Engine 20.10 cannot express.
"""


def dag_params() -> dict[str, Param]:
    """One Param per :class:`spec.PipelineParams` field; defaults reproduce the demo."""
    defaults = spec.PipelineParams().as_dict()
    return {name: Param(defaults[name], **spec.param_schema(name)) for name in spec.FIELDS}


def data_source(variable: str | None, environ: Mapping[str, str] = os.environ) -> str:
    """The data root for this run: the Airflow Variable's value, else the env var, else the named volume.

    The Variable (UI, CLI, or ``AIRFLOW_VAR_CLUSTERFLOW_DATA_SOURCE``) is the operator's switch;
    the env var is the deployment's default (``scripts/airflow.sh`` sets it to ``./data``).
    """
    return variable or environ.get(DATA_SOURCE_ENV) or DEFAULT_DATA_SOURCE


def plan_images(environ: Mapping[str, str] = os.environ, steps: tuple[str, ...] = spec.STEPS) -> pinning.Images:
    """The run's images of ``steps``, resolved once (the ``plan`` task); only a registry without a
    digests file needs the engine, to turn the tag into digests."""
    @functools.cache
    def engine_lookup() -> Callable[[str], str]:  # the client is made at the first lookup, and once
        return pinning.engine_digests(docker.APIClient(base_url=engine.engine_url(environ), timeout=60))

    def registry_digest(ref: str) -> str:
        return engine_lookup()(ref)

    return pinning.resolve(environ, environ.get(IMAGE_TAG_ENV) or VERSION, registry_digest, steps)


def prepare_host_data_root(source: str, run_id: RunId) -> None:
    """A bind-mounted data root on this host: ready the run directory for the steps' user.

    Named volumes need nothing: Docker initialises an empty volume from the image's ``/data``,
    which that user owns.
    """
    if not source.startswith("/"):
        return
    try:
        dataroot.prepare_run_dir(Path(source), run_id)
    except OSError:
        return  # e.g. the engine's host is another machine: the steps say what is wrong


@task(task_id=PLAN_TASK)
def plan(params: dict[str, Any] | None = None, run_id: str | None = None, ti: Any = None) -> list[str]:
    """Validate the params, derive the run id on the volume, render every container.

    Pushes the rendering as XCom ``plan``; returns the variants the cluster task maps over.
    """
    source = data_source(Variable.get(DATA_SOURCE_VARIABLE, default=None))
    try:
        rendered = render_plan(dict(params or {}), str(run_id), source, plan_images())
        prepare_host_data_root(rendered.data_source, rendered.run_id)
    except ValueError as exc:  # bad params, or a planted symlink (dataroot.UnsafeDataRoot)
        raise AirflowFailException(str(exc)) from None
    print(f"run id on the data root: {rendered.run_id} (data root {rendered.data_source})")
    print(f"step container limits: {rendered.limits.docker_kwargs()}")
    print(f"step images: {rendered.images.mode}")
    for t in rendered.tasks:
        print(f"{t.name}: {t.image} {' '.join(t.command)}")
    ti.xcom_push(PLAN_XCOM, rendered.to_xcom())
    return rendered.variants


@task(task_id="outcome", trigger_rule=TriggerRule.ONE_FAILED)
def outcome() -> None:
    """Runs only when a step failed, and fails the DAG run (report alone would leave it green)."""
    raise AirflowFailException("a pipeline step failed (see the failed task's log)")


def build_dag() -> DAG:
    policy = task_policy()
    step = step_operator()
    with DAG(
        dag_id=DAG_ID,
        description="scikit-learn's K-Means digits demo as container steps (prepare, cluster, evaluate, report)",
        doc_md=DOC_MD,
        schedule=SCHEDULE,
        start_date=START_DATE,
        catchup=False,
        max_active_runs=MAX_ACTIVE_RUNS,
        dagrun_timeout=dt.timedelta(hours=2),
        params=dag_params(),
        tags=["clusterflow"],
        default_args={"owner": "clusterflow"},
        # the run's email (success, quality gate failed, failed): off until configured, see clusterflow.notifier
        on_success_callback=notifier.on_success,
        on_failure_callback=notifier.on_failure,
    ) as dag:
        planned = plan.override(**policy[PLAN_TASK])()
        prepare = step(task_id="prepare", step="prepare", **policy["prepare"])
        cluster = step.partial(
            task_id="cluster", step="cluster", map_index_template="{{ task.variant }}", **policy["cluster"],
        ).expand(variant=planned)
        # Assets: evaluate succeeds only when the gate passed (the model); report runs after a breach too
        evaluate = step(task_id="evaluate", step="evaluate", outlets=[MODEL_ASSET], **policy["evaluate"])
        report = step(task_id="report", step="report", trigger_rule=TriggerRule.ALL_DONE, outlets=[METRICS_ASSET],
                      **policy["report"])
        failed = outcome.override(**policy["outcome"])()

        planned >> prepare >> cluster >> evaluate >> report
        [prepare, cluster, evaluate, report] >> failed
    return dag
