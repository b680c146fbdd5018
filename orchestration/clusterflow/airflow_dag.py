"""The pipeline spec rendered as an Airflow 3 DAG of DockerOperator tasks.

``orchestration/dags/digits_kmeans.py`` only calls :func:`build_dag`. Every step, flag, image and
mount comes from :mod:`clusterflow.spec`; this module adds only what is Airflow's: the schedule,
retries and timeouts, Params (derived from :class:`spec.PipelineParams`), and the docker plumbing.

Tasks::

    plan ─▶ prepare ─▶ cluster[<init>] (mapped, one per init) ─▶ evaluate ─▶ report ─▶ outcome

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
import json
import os
from pathlib import Path
from typing import Any

import docker.errors
import docker.utils
from airflow.providers.docker.exceptions import DockerContainerFailedSkipException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.docker.operators.docker_swarm import DockerSwarmOperator
from airflow.sdk import DAG, Param, TriggerRule, Variable, task
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from docker.types import Mount as DockerMount
from docker.types import Resources as SwarmResources

from clusterflow import dataroot, pinning, spec
from clusterflow.version import VERSION

DAG_ID = spec.DAG_ID
SCHEDULE = "0 22 * * *"  # nightly at 22:00 (UTC, Airflow's default timezone)
START_DATE = dt.datetime(2026, 11, 1, tzinfo=dt.timezone.utc)
MAX_ACTIVE_RUNS = 2  # runs never share a directory (see spec.safe_run_id); two bound the load

DATA_SOURCE_ENV = "CLUSTERFLOW_DATA_SOURCE"
DATA_SOURCE_VARIABLE = "clusterflow_data_source"
DEFAULT_DATA_SOURCE = "clusterflow-data"  # a named Docker volume
IMAGE_TAG_ENV = "CLUSTERFLOW_IMAGE_TAG"
# How step containers are launched: "docker" (a container on the engine, DockerOperator) or
# "swarm" (a one-shot Docker Swarm service, DockerSwarmOperator). Read when the DAG file is
# parsed, so set it in the environment of every Airflow component.
LAUNCHER_ENV = "CLUSTERFLOW_LAUNCHER"
GATE_XCOM = "quality_gate"
PLAN_XCOM = "plan"

# Per step: Airflow's retry and timeout policy (the commands themselves come from the spec).
TASK_POLICY: dict[str, dict[str, Any]] = {
    "plan": {"retries": 0, "execution_timeout": dt.timedelta(minutes=1)},
    "prepare": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
                "execution_timeout": dt.timedelta(minutes=5)},
    "cluster": {"retries": 5, "retry_delay": dt.timedelta(seconds=10), "retry_exponential_backoff": True,
                "max_retry_delay": dt.timedelta(minutes=10), "execution_timeout": dt.timedelta(minutes=20)},
    "evaluate": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
                 "execution_timeout": dt.timedelta(minutes=10)},
    "report": {"retries": 2, "retry_delay": dt.timedelta(seconds=30),
               "execution_timeout": dt.timedelta(minutes=10)},
    "outcome": {"retries": 0, "execution_timeout": dt.timedelta(minutes=1)},
}
STEP_TASKS = ("prepare", "cluster", "evaluate", "report")
# Drills and tests only (unset in production): override the step tasks' timeout / retry delay.
# Read when the DAG file is parsed, so set them in the environment of every Airflow component.
TIMEOUT_ENV = "CLUSTERFLOW_TASK_TIMEOUT_SECONDS"
RETRY_DELAY_ENV = "CLUSTERFLOW_TASK_RETRY_DELAY_SECONDS"


def task_policy(environ: Any = os.environ) -> dict[str, dict[str, Any]]:
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
        for name in STEP_TASKS:
            policy[name][key] = dt.timedelta(seconds=seconds)
    return policy

# What DockerOperator takes as arguments; the rest of the policy goes into the host config.
OPERATOR_POLICY = {"network_mode": spec.CONTAINER_POLICY["network_mode"]}
HOST_CONFIG_POLICY = {k: v for k, v in spec.CONTAINER_POLICY.items() if k not in OPERATOR_POLICY}

DOC_MD = f"""
# digits_kmeans

scikit-learn's *K-Means clustering on the handwritten digits* demo as four container steps
that talk only through files under `/data/runs/<run_id>/<step>/` (see the README, section
**Artifact contract**):

1. **prepare** loads the data set (`features.npy`, `labels.npy`);
2. **cluster** fits K-Means once per init strategy in the `inits` param: one mapped task per
   strategy (`cluster/<init>/`);
3. **evaluate** scores every variant (`metrics.json`), applies the quality gate (`min_*` /
   `max_inertia` params) and pushes a one-line summary (best variant and its metrics) as XCom;
   a breach fails it (exit {spec.QUALITY_GATE_EXIT}) with the reason in its log;
4. **report** writes `report.html`; it also runs after a quality-gate breach, to document it.

`plan` checks the params and derives the run id on the volume from Airflow's run id
(`manual__2026-11-24T10:00:00+00:00` becomes `manual__2026-11-24T10-00-00-00-00-<hash>`);
`outcome` fails the DAG run if any step failed.

Data root: the Airflow Variable `{DATA_SOURCE_VARIABLE}`, else env `{DATA_SOURCE_ENV}`, else the
named volume `{DEFAULT_DATA_SOURCE}`: an absolute host path (bind mount, writable by uid
{spec.STEP_USER.split(':')[0]}) or a Docker volume name. Images: with env `{pinning.DIGESTS_ENV}` (a digests
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


def pipeline_params(values: dict[str, Any]) -> spec.PipelineParams:
    """The run's params as the spec's dataclass (raises ValueError with a one-line reason)."""
    unknown = sorted(set(values) - set(spec.FIELDS))
    if unknown:
        raise ValueError(f"unknown param(s) {', '.join(unknown)}: use {', '.join(spec.FIELDS)}")
    return spec.PipelineParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def data_source() -> str:
    """The data root for this run: the Airflow Variable, else the env var, else the named volume.

    The Variable (UI, CLI, or ``AIRFLOW_VAR_CLUSTERFLOW_DATA_SOURCE``) is the operator's switch;
    the env var is the deployment's default (``scripts/airflow.sh`` sets it to ``./data``).
    """
    found = Variable.get(DATA_SOURCE_VARIABLE, default=None) or os.environ.get(DATA_SOURCE_ENV)
    return found or DEFAULT_DATA_SOURCE


def engine_url(environ: Any = os.environ) -> str:
    """The engine the step tasks use (DockerOperator's own default: no docker_url is given)."""
    return environ.get("DOCKER_HOST") or "unix://var/run/docker.sock"


def plan_images(environ: Any = os.environ) -> pinning.Images:
    """The run's step images, resolved once (the ``plan`` task); only a registry without a
    digests file needs the engine, to turn the tag into digests."""
    engine = functools.cache(lambda: pinning.engine_digests(docker.APIClient(base_url=engine_url(environ),
                                                                             timeout=60)))
    return pinning.resolve(environ, environ.get(IMAGE_TAG_ENV) or VERSION, lambda ref: engine()(ref))


def render_plan(values: dict[str, Any], airflow_run_id: str, source: str, images: pinning.Images,
                limits: spec.StepLimits | None = None) -> dict[str, Any]:
    """Everything a run's containers need, rendered from the spec (pure: no Airflow, no Docker).

    ``limits`` default to :func:`spec.step_limits` (the worker's env), read here, once per run.
    """
    limits = limits or spec.step_limits()
    params = pipeline_params(values)
    run_id = spec.safe_run_id(airflow_run_id)
    if not (source.startswith("/") or spec.RUN_ID.problem(source.replace("/", "")) is None):
        raise ValueError(f"data source {source!r}: give an absolute host path or a Docker volume name")
    tasks = {t.name: {"step": t.step, "variant": t.variant, "image": t.image, "command": list(t.command),
                      "commits_cache": t.commits_cache}
             for stage in spec.stages(run_id, params, images.refs) for t in stage}

    def rendered_mounts(commit: bool) -> list[dict[str, Any]]:
        return [{"source": m.source, "target": m.target, "read_only": m.read_only, "type": m.kind}
                for m in spec.mounts(source, params.dataset, commit=commit)]

    return {
        "run_id": run_id,
        "airflow_run_id": airflow_run_id,
        "params": params.as_dict(),
        "data_source": source,
        "images": images.as_json(),  # the mode and step -> ref, decided here once per run
        "limits": limits.docker_kwargs(),
        "variants": list(params.inits),
        "tasks": tasks,
        "mounts": rendered_mounts(commit=False),  # a step: the cache store read-only
        "commit_mounts": rendered_mounts(commit=True),  # its commit: only the store writable
    }


def prepare_host_data_root(source: str, run_id: str) -> None:
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


def render_container(plan: dict[str, Any], dag_id: str, step: str, variant: str | None,
                     try_number: int, digest: str | None, *, commit: bool = False) -> dict[str, Any]:
    """One step container's settings (image, command, env, labels, mounts) from a run's plan;
    with ``commit``, those of its commit container (:meth:`spec.Task.commit`)."""
    name = f"{step}[{variant}]" if variant else step
    rendered = plan["tasks"][name]
    spec_task = spec.Task(step, rendered["image"], tuple(rendered["command"]), variant)
    spec_task = spec_task.commit() if commit else spec_task
    return {
        "image": rendered["image"],
        "command": list(spec_task.command),
        "environment": spec.step_environment(rendered["image"], digest),
        "labels": spec.labels(dag_id, plan["run_id"], spec_task, try_number),
        "container_name": spec.container_name(plan["run_id"], spec_task),
        "mounts": [DockerMount(m["target"], m["source"], type=m["type"], read_only=m["read_only"])
                   for m in plan["commit_mounts" if commit else "mounts"]],
        # DockerOperator's mem_limit; its ``cpus`` is only a relative weight (cpu_shares), so the
        # hard CPU limit goes into the host config as nano_cpus (see StepOperator.cli)
        **plan["limits"],
    }


class _PolicyClient:
    """The docker API client, with the container policy the operators have no argument for:
    into the host config of a container (DockerOperator), or the container spec of a swarm
    service (DockerSwarmOperator), with the step's labels."""

    def __init__(self, client: Any, extra: dict[str, Any], labels: dict[str, str]):
        self._client, self._extra, self._labels = client, extra, labels

    def create_host_config(self, **kwargs: Any) -> Any:
        return self._client.create_host_config(**kwargs, **self._extra)

    def create_service(self, task_template: dict[str, Any], **kwargs: Any) -> Any:
        container = task_template["ContainerSpec"]
        container.update(ReadOnly=spec.CONTAINER_POLICY["read_only"], Labels=self._labels,
                         CapabilityDrop=spec.CONTAINER_POLICY["cap_drop"])
        container["Mounts"] = [*container.get("Mounts", []), *(
            DockerMount(target, None, type="tmpfs", tmpfs_size=_tmpfs_size(options))
            for target, options in spec.CONTAINER_POLICY["tmpfs"].items())]
        return self._client.create_service(task_template, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)


def _tmpfs_size(options: str) -> int | None:
    """The bytes of a tmpfs ``size=`` option (``512m``), as a swarm tmpfs mount takes it."""
    sizes = [o[len("size="):] for o in options.split(",") if o.startswith("size=")]
    return docker.utils.parse_bytes(sizes[0]) if sizes else None


class StepOperator(DockerOperator):
    """One step container, rendered at run time from the ``plan`` task's XCom."""

    nano_cpus: int | None = None  # the plan's CPU limit, set by execute
    auto_remove_policy = "force"  # DockerOperator removes the container whatever happened

    def __init__(self, *, step: str, variant: str | None = None, **kwargs: Any):
        kwargs.setdefault("image", spec.image_ref(step, VERSION))  # a placeholder: execute sets the plan's
        super().__init__(
            user=spec.STEP_USER, mount_tmp_dir=False, auto_remove=self.auto_remove_policy, **OPERATOR_POLICY,
            # evaluate: exit 3 (the gate) is told apart from a crash; every log line comes back
            **({"skip_on_exit_code": [spec.QUALITY_GATE_EXIT], "xcom_all": True} if step == "evaluate" else {}),
            **kwargs)
        self.step, self.variant = step, variant

    @property
    def cli(self) -> Any:
        try:
            client = super().cli
        except AirflowException as exc:  # the hook says only "Failed to establish connection ..."
            raise AirflowException(  # retryable: the engine may be back for the next try
                f"no Docker engine answers at {self.docker_url} (DOCKER_HOST="
                f"{os.environ.get('DOCKER_HOST') or '<unset>'}, read when the DAG was parsed): "
                f"{_engine_problem(self.docker_url) or exc}; start the engine or point DOCKER_HOST at one"
            ) from None
        cpu_limit = {"nano_cpus": self.nano_cpus} if self.nano_cpus else {}
        return _PolicyClient(client, {**HOST_CONFIG_POLICY, **cpu_limit}, self.labels or {})

    def on_kill(self) -> None:
        """Stop and remove the container (timeout, task marked failed, worker shutdown).

        DockerOperator's own on_kill raises when the container is already gone, which it is after
        an execution timeout (execute's cleanup force-removes it first); that error would then
        replace the timeout as the task's failure.
        """
        try:
            super().on_kill()
        except docker.errors.NotFound:
            self.log.info("container %s already removed", (self.container or {}).get("Id", "?")[:12])

    @property
    def task_name(self) -> str:
        return f"{self.step}[{self.variant}]" if self.variant else self.step

    def render(self, plan: dict[str, Any], try_number: int, digest: str | None, *,
               commit: bool = False) -> dict[str, Any]:
        """This task's container settings for a run's plan (what :meth:`execute` launches)."""
        return render_container(plan, self.dag_id, self.step, self.variant, try_number, digest, commit=commit)

    def image_digest(self, image: str) -> str:
        """What the step records as its image digest, as the local runner does: a pinned ref's
        manifest digest (DockerOperator pulls it by digest when the engine lacks it: its
        ``images(name=<repo>@sha256:...)`` check matches a pulled image on Engine 20.10), else
        the local image's ID."""
        pinned = pinning.pinned_digest(image)
        if pinned:
            return pinned
        try:
            found = self.cli.inspect_image(image)
        except docker.errors.ImageNotFound:  # no retry helps (other engine errors are retried)
            raise AirflowFailException(f"image {image} not found on the Docker engine at {self.docker_url}: "
                                       "build the images first with `make images`") from None
        return found["Id"]

    def execute(self, context: Any) -> Any:
        plan = context["ti"].xcom_pull(task_ids="plan", key=PLAN_XCOM)
        if self.step == "report" and not self._evaluate_reported(context):
            raise AirflowSkipException("nothing to report: evaluate produced no metrics (an earlier step failed)")
        image = plan["tasks"][self.task_name]["image"]
        digest = self.image_digest(image)
        for name, value in self.render(plan, context["ti"].try_number, digest).items():
            setattr(self, name, value)
        self.log.info("==> %s: %s %s", self.task_name, self.image, " ".join(self.command))
        try:
            lines = self.launch(context)
        except DockerContainerFailedSkipException as exc:  # evaluate's exit 3: the quality gate
            reason = _gate_reason(exc.logs or [])
            context["ti"].xcom_push(GATE_XCOM, {"passed": False, "reason": reason})
            self.commit(plan, context, digest)  # its metrics are kept, so they are cached too
            raise AirflowFailException(f"quality gate failed (exit {spec.QUALITY_GATE_EXIT}): {reason}") from None
        self.commit(plan, context, digest)
        if self.step == "evaluate":
            summary = _summary(lines or [])
            if summary is None:
                self.log.warning("evaluate printed no one-line JSON summary (a last line with 'best'): "
                                 "no summary XCom; see evaluate/metrics.json")
            context["ti"].xcom_push(GATE_XCOM, {"passed": True, "reason": None})
            return summary
        if self.step == "report":
            return f"runs/{plan['run_id']}/report/report.html"
        return None

    def commit(self, plan: dict[str, Any], context: Any, digest: str | None) -> None:
        """Launch this task's commit container, which puts the step's outputs into the cache store
        (the only container that can write it). A failure only means no cache entry: a warning."""
        if not plan["tasks"][self.task_name]["commits_cache"]:
            return
        for name, value in self.render(plan, context["ti"].try_number, digest, commit=True).items():
            setattr(self, name, value)
        self.log.info("cache commit of %s: %s", self.task_name, " ".join(self.command))
        try:
            self.launch(context)
        except (AirflowException, DockerContainerFailedSkipException, docker.errors.DockerException) as exc:
            self.log.warning("%s: the cache commit failed (%s): its outputs are not cached", self.task_name,
                             (str(exc).strip().splitlines() or [type(exc).__name__])[-1])

    def launch(self, context: Any) -> list[str] | None:
        """Run the rendered container; its log lines (evaluate) or None. Exit 3 of evaluate
        raises DockerContainerFailedSkipException, other failures AirflowException."""
        self._remove_orphan()
        return DockerOperator.execute(self, context)

    def _remove_orphan(self) -> None:
        """Remove this task's container left running by an earlier try whose process died with
        its scheduler or worker (nothing stopped it). This try redoes the work; the orphan would
        hold the name and keep writing into the run."""
        try:
            self.cli.remove_container(self.container_name, force=True)
        except docker.errors.NotFound:
            return
        self.log.warning("removed container %s, left by an earlier try of this task", self.container_name)

    @staticmethod
    def _evaluate_reported(context: Any) -> bool:
        return context["ti"].xcom_pull(task_ids="evaluate", key=GATE_XCOM) is not None


class SwarmStepOperator(StepOperator, DockerSwarmOperator):
    """One step as a one-shot Docker Swarm service (``CLUSTERFLOW_LAUNCHER=swarm``).

    DockerSwarmOperator reports neither the container's exit code nor its output, so this reads
    both from the service's task and logs before removing the service itself: evaluate's exit 3
    is the quality gate and its last line the summary, as with containers. A swarm service has no
    ``network: none``; the rest of the container policy applies (see :class:`_PolicyClient`).
    """

    auto_remove_policy = "never"  # removed by launch, once exit code and logs are read

    def __init__(self, **kwargs: Any):
        super().__init__(enable_logging=True, service_prefix="clusterflow", **kwargs)

    def launch(self, context: Any) -> list[str] | None:
        self.container_resources = SwarmResources(cpu_limit=self.nano_cpus, mem_limit=self.mem_limit)
        # a service's `command` replaces the image's entrypoint; the step's are its arguments
        self.args, self.command = self.command, None
        try:
            try:
                DockerSwarmOperator.execute(self, context)
            except AirflowException:
                if self.service is None:
                    raise
            return self._finished()
        finally:
            if self.service is not None:
                self.cli.remove_service(self.service["ID"])

    def _finished(self) -> list[str]:
        """The service's log lines, once its task ended with exit 0; raise for any other end."""
        (found,) = self.cli.tasks(filters={"service": self.service["ID"]})
        status = found["Status"]
        code = status.get("ContainerStatus", {}).get("ExitCode")
        lines = [line.decode(errors="replace").rstrip("\n") for line in
                 self.cli.service_logs(self.service["ID"], stdout=True, stderr=True)]
        if code in self.skip_on_exit_code:  # evaluate's quality gate
            raise DockerContainerFailedSkipException(f"exit {code}", logs=lines)
        if status["State"] != "complete" or code != 0:
            raise AirflowException(f"swarm service {self.service['ID'][:12]} ended {status['State']} "
                                   f"(exit {code}): {status.get('Err') or (lines or ['no output'])[-1]}")
        return lines


def step_operator(environ: Any = os.environ) -> type[StepOperator]:
    """The operator class for step tasks, by ``$CLUSTERFLOW_LAUNCHER`` (docker, the default, or swarm)."""
    launchers = {"docker": StepOperator, "swarm": SwarmStepOperator}
    choice = environ.get(LAUNCHER_ENV) or "docker"
    if choice not in launchers:
        raise ValueError(f"{LAUNCHER_ENV}={choice!r}: use docker or swarm")
    return launchers[choice]


def _engine_problem(url: str) -> str | None:
    """Why the Docker engine at ``url`` does not answer (the docker client's own words)."""
    try:
        docker.APIClient(base_url=url, timeout=10).ping()
    except docker.errors.DockerException as exc:
        return str(exc)
    return None


def _summary(lines: list[str] | str) -> dict[str, Any] | None:
    """The evaluate step's summary: its last output line that is a JSON object with ``best``."""
    for line in reversed([lines] if isinstance(lines, str) else lines):
        text = line.decode() if isinstance(line, bytes) else line
        try:
            found = json.loads(text)
        except ValueError:
            continue
        if isinstance(found, dict) and "best" in found:
            return found
    return None


def _gate_reason(lines: list[str | bytes]) -> str:
    texts = [line.decode() if isinstance(line, bytes) else line for line in lines]
    for text in reversed(texts):
        if "quality gate" in text.lower():
            return text.strip()
    return texts[-1].strip() if texts else "(the step printed no reason)"


def build_dag() -> DAG:
    policy = task_policy()
    operator = step_operator()
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
    ) as dag:

        @task(task_id="plan", **policy["plan"])
        def plan(params: dict[str, Any] | None = None, run_id: str | None = None, ti: Any = None) -> list[str]:
            """Validate the params, derive the run id on the volume, render every container.

            Pushes the rendering as XCom ``plan``; returns the variants the cluster task maps over.
            """
            try:
                rendered = render_plan(dict(params or {}), str(run_id), data_source(), plan_images())
                prepare_host_data_root(rendered["data_source"], rendered["run_id"])
            except ValueError as exc:  # bad params, or a planted symlink (dataroot.UnsafeDataRoot)
                raise AirflowFailException(str(exc)) from None
            print(f"run id on the data root: {rendered['run_id']} (data root {rendered['data_source']})")
            print(f"step container limits: {rendered['limits']}")
            print(f"step images: {rendered['images']['mode']}")
            for name, t in rendered["tasks"].items():
                print(f"{name}: {t['image']} {' '.join(t['command'])}")
            ti.xcom_push(PLAN_XCOM, rendered)
            return rendered["variants"]

        planned = plan()
        prepare = operator(task_id="prepare", step="prepare", **policy["prepare"])
        cluster = operator.partial(
            task_id="cluster", step="cluster", map_index_template="{{ task.variant }}",
            **policy["cluster"],
        ).expand(variant=planned)
        evaluate = operator(task_id="evaluate", step="evaluate", **policy["evaluate"])
        report = operator(task_id="report", step="report", trigger_rule=TriggerRule.ALL_DONE,
                          **policy["report"])

        @task(task_id="outcome", trigger_rule=TriggerRule.ONE_FAILED, **policy["outcome"])
        def outcome() -> None:
            """Runs only when a step failed, and fails the DAG run (report alone would leave it green)."""
            raise AirflowFailException("a pipeline step failed (see the failed task's log)")

        done = outcome()
        planned >> prepare >> cluster >> evaluate >> report
        [prepare, cluster, evaluate, report] >> done
    return dag
