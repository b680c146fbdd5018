"""The operators of the DAG's step tasks: one step container (DockerOperator) or one-shot Swarm
service (DockerSwarmOperator), rendered at run time from the ``plan`` task's XCom
(:class:`clusterflow.plan.Plan`), under the container policy the operators have no argument for.

What a step does besides running its command (the quality gate's exit code, a summary line, its
cache commit, the file it hands on) is its :class:`spec.Role`, never its name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import docker.errors
import docker.utils
from airflow.providers.docker.exceptions import DockerContainerFailedSkipException
from airflow.providers.docker.operators.docker import DockerOperator
from airflow.providers.docker.operators.docker_swarm import DockerSwarmOperator
from airflow.sdk.bases.xcom import BaseXCom
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException
from docker.types import Mount as DockerMount
from docker.types import Resources as SwarmResources

from clusterflow_steps.contract import RUNS

from clusterflow import engine, lineage, spec
from clusterflow.ui import files
from clusterflow.plan import Plan, render_container
from clusterflow.version import VERSION

GATE_XCOM = "quality_gate"
XCOM_RETURN_KEY = BaseXCom.XCOM_RETURN_KEY
PLAN_XCOM = "plan"
PLAN_TASK = "plan"
# How step containers are launched: "docker" (a container on the engine, DockerOperator) or
# "swarm" (a one-shot Docker Swarm service, DockerSwarmOperator). Read when the DAG file is
# parsed, so set it in the environment of every Airflow component.
LAUNCHER_ENV = "CLUSTERFLOW_LAUNCHER"

# What DockerOperator takes as arguments; the rest of the policy goes into the host config.
OPERATOR_POLICY = {"network_mode": spec.CONTAINER_POLICY["network_mode"]}
HOST_CONFIG_POLICY = {k: v for k, v in spec.CONTAINER_POLICY.items() if k not in OPERATOR_POLICY}


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
    auto_remove_policy: Literal["never", "success", "force"] = "force"  # removed whatever happened

    def __init__(self, *, step: str, variant: str | None = None, **kwargs: Any):
        kwargs.setdefault("image", spec.image_ref(step, VERSION))  # a placeholder: execute sets the plan's
        gate = spec.IMAGE_ROLES[step].gate_exit_code
        # the gate's exit code is told apart from a crash; every log line comes back (its reason, a summary)
        gated: dict[str, Any] = {"skip_on_exit_code": [gate], "xcom_all": True} if gate is not None else {}
        super().__init__(user=spec.STEP_USER, mount_tmp_dir=False, auto_remove=self.auto_remove_policy,
                         **OPERATOR_POLICY, **gated, **kwargs)
        self.step, self.variant = step, variant

    @property
    def cli(self) -> Any:
        try:
            client = super().cli
        except AirflowException as exc:  # the hook says only "Failed to establish connection ..."
            where = (f"at {self.docker_url} (DOCKER_HOST={os.environ.get('DOCKER_HOST') or '<unset>'}, "
                     "read when the DAG was parsed)")
            # retryable: the engine may be back for the next try
            problem = engine.ping_problem(str(self.docker_url)) or exc
            raise AirflowException(engine.unreachable(where, problem)) from None
        cpu_limit = {"nano_cpus": self.nano_cpus} if self.nano_cpus else {}
        labels = self.labels if isinstance(self.labels, dict) else {}  # render sets a dict
        return _PolicyClient(client, {**HOST_CONFIG_POLICY, **cpu_limit}, labels)

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
        return spec.task_name(self.step, self.variant)

    def render(self, plan: Plan, try_number: int, digest: str | None, *, commit: bool = False) -> None:
        """Set this task's container settings for a run's plan (what :meth:`launch` launches)."""
        settings = render_container(plan, self.dag_id, plan.task(self.step, self.variant), try_number, digest,
                                    commit=commit)
        settings["mounts"] = [engine.docker_mount(m) for m in settings["mounts"]]
        for name, value in self.operator_settings(settings).items():
            setattr(self, name, value)

    def operator_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A rendered container's settings as this operator's attributes."""
        return settings

    def image_digest(self, image: str) -> str:
        """What the step records as its image digest, as the local runner does
        (:func:`engine.image_digest`); DockerOperator pulls a pinned image by digest when the engine
        lacks it (its ``images(name=<repo>@sha256:...)`` check matches a pulled image on Engine 20.10)."""
        try:
            return engine.image_digest(image, lambda ref: str(self.cli.inspect_image(ref)["Id"]),
                                       f" on the Docker engine at {self.docker_url}")
        except engine.PipelineImageMissing as exc:  # no retry helps (other engine errors are retried)
            raise AirflowFailException(str(exc)) from None

    def execute(self, context: Any) -> Any:
        plan = Plan.from_xcom(context["ti"].xcom_pull(task_ids=PLAN_TASK, key=PLAN_XCOM))
        task = plan.task(self.step, self.variant)
        if task.role.runs_after_gate_failure and not self._gate_decided(context, plan):
            raise AirflowSkipException(f"nothing to {self.task_name}: {_gated(plan).name} produced no metrics "
                                       "(an earlier step failed)")
        digest = self.image_digest(task.image)
        self.render(plan, context["ti"].try_number, digest)
        self.log.info("==> %s: %s %s", self.task_name, task.image, " ".join(task.command))
        try:
            lines = self.launch(context)
        except DockerContainerFailedSkipException as exc:  # the role's gate exit code: the quality gate
            reason = _gate_reason(exc.logs or [])
            context["ti"].xcom_push(GATE_XCOM, {"passed": False, "reason": reason})
            if task.role.prints_summary:  # printed before the breach: the email and the Assets need it
                context["ti"].xcom_push(XCOM_RETURN_KEY, _summary(exc.logs or []))
            self.commit(plan, task, context, digest)  # its metrics are kept, so they are cached too
            raise AirflowFailException(f"quality gate failed (exit {task.role.gate_exit_code}): {reason}") from None
        self.commit(plan, task, context, digest)
        if task.role.gate_exit_code is not None:
            context["ti"].xcom_push(GATE_XCOM, {"passed": True, "reason": None})
        summary = _summary(lines or []) if task.role.prints_summary else None
        self.annotate_assets(context, plan, task, summary)
        if task.role.prints_summary:
            if summary is None:
                self.log.warning("%s printed no one-line JSON summary (a last line with 'best'): "
                                 "no summary XCom; see %s", self.task_name, task.role.outputs[0].relative())
            return summary
        if task.role.result:
            return f"{RUNS}/{plan.run_id}/{task.role.result.relative(task.variant)}"
        return None

    def annotate_assets(self, context: Any, plan: Plan, task: spec.Task, summary: dict[str, Any] | None) -> None:
        """Fill the ``extra`` of this task's Asset events (its outlets; Airflow emits them as it
        succeeds): the run, its best variant and metrics, and the producing step's image digest and
        cache key. The gated step (evaluate) produces the model, so its events describe the best
        variant's fit; a later step (report) the run's metrics, so those describe evaluate's."""
        if not self.outlets:
            return
        if task.role.gate_exit_code is None:  # a later step: it documents the gated step's metrics
            summary = context["ti"].xcom_pull(task_ids=_gated(plan).name, key=XCOM_RETURN_KEY)
            produced = _gated(plan)
        else:  # the gated step: it chose the model, the best variant's fit
            best = (summary or {}).get("best")
            produced = _variant_task(plan, best) if best else task
        extra = lineage.event_extra(
            run_id=plan.run_id, airflow_run_id=plan.airflow_run_id, data_source=plan.data_source, summary=summary,
            image=produced.image, image_digest=self.image_digest(produced.image),
            cache_key=_cache_key(plan, produced))
        for outlet in self.outlets:
            context["outlet_events"][outlet].extra = extra

    def commit(self, plan: Plan, task: spec.Task, context: Any, digest: str | None) -> None:
        """Launch this task's commit container, which puts the step's outputs into the cache store
        (the only container that can write it). A failure only means no cache entry: a warning."""
        if not task.role.commits_cache:
            return
        self.render(plan, context["ti"].try_number, digest, commit=True)
        self.log.info("cache commit of %s: %s", self.task_name, " ".join(task.commit().command))
        try:
            self.launch(context)
        except (AirflowException, DockerContainerFailedSkipException, docker.errors.DockerException) as exc:
            self.log.warning("%s: the cache commit failed (%s): its outputs are not cached", self.task_name,
                             (str(exc).strip().splitlines() or [type(exc).__name__])[-1])

    def launch(self, context: Any) -> list[str] | str | None:
        """Run the rendered container; its log lines (with ``xcom_all``) or None. The role's gate
        exit code raises DockerContainerFailedSkipException, other failures AirflowException."""
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
    def _gate_decided(context: Any, plan: Plan) -> bool:
        """Whether the gated step (evaluate) got as far as its verdict: it scored the run."""
        return context["ti"].xcom_pull(task_ids=_gated(plan).name, key=GATE_XCOM) is not None


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

    def operator_settings(self, settings: dict[str, Any]) -> dict[str, Any]:
        """A service's ``command`` replaces the image's entrypoint: the step's command is its ``args``."""
        return {**settings, "command": None, "args": settings["command"]}

    def launch(self, context: Any) -> list[str] | str | None:
        self.container_resources = SwarmResources(cpu_limit=self.nano_cpus, mem_limit=self.mem_limit)
        try:
            try:
                DockerSwarmOperator.execute(self, context)
            except AirflowException:
                if self.service is None:
                    raise
            if self.service is None:  # execute returns only once it created the service
                raise AirflowException("the swarm service was not created")
            return self._finished(self.service["ID"])
        finally:
            if self.service is not None:
                self.cli.remove_service(self.service["ID"])

    def _finished(self, service: str) -> list[str]:
        """The service's log lines, once its task ended with exit 0; raise for any other end."""
        (found,) = self.cli.tasks(filters={"service": service})
        status = found["Status"]
        code = status.get("ContainerStatus", {}).get("ExitCode")
        lines = [line.decode(errors="replace").rstrip("\n") for line in
                 self.cli.service_logs(service, stdout=True, stderr=True)]
        if code in self.skip_on_exit_code:  # the role's gate exit code
            raise DockerContainerFailedSkipException(f"exit {code}", logs=lines)
        if status["State"] != "complete" or code != 0:
            raise AirflowException(f"swarm service {service[:12]} ended {status['State']} "
                                   f"(exit {code}): {status.get('Err') or (lines or ['no output'])[-1]}")
        return lines


def step_operator(environ: Mapping[str, str] = os.environ) -> type[StepOperator]:
    """The operator class for step tasks, by ``$CLUSTERFLOW_LAUNCHER`` (docker, the default, or swarm)."""
    launchers: dict[str, type[StepOperator]] = {"docker": StepOperator, "swarm": SwarmStepOperator}
    choice = environ.get(LAUNCHER_ENV) or "docker"
    if choice not in launchers:
        raise ValueError(f"{LAUNCHER_ENV}={choice!r}: use docker or swarm")
    return launchers[choice]


def _gated(plan: Plan) -> spec.Task:
    """The run's task whose role has the quality gate's exit code (evaluate)."""
    (found,) = [t for t in plan.tasks if t.role.gate_exit_code is not None]
    return found


def _variant_task(plan: Plan, variant: str | None) -> spec.Task:
    """The per-variant (cluster) task of ``variant``: the one that fitted the run's chosen model."""
    (found,) = [t for t in plan.tasks if t.role.per_variant and t.variant == variant]
    return found


def _cache_key(plan: Plan, task: spec.Task) -> str | None:
    """The cache key in ``task``'s manifest, when this host sees the data root (a host path, or
    ``$CLUSTERFLOW_DATA_ROOT``); None when it does not (a named volume only the engine mounts)."""
    root = Path(plan.data_source) if plan.data_source.startswith("/") else files.data_root()
    try:
        manifest = json.loads(files.read(root, plan.run_id, files.manifest(task.step, task.variant)))
    except (files.NotServed, OSError, ValueError):
        return None
    # as clusterflow_steps.cache.key_of reads it (that module needs numpy, which Airflow's venv lacks)
    note = manifest.get("cache") if isinstance(manifest, dict) else None
    return note.get("key") if isinstance(note, dict) else None


def _summary(lines: Sequence[str | bytes] | str) -> dict[str, Any] | None:
    """The step's summary: its last output line that is a JSON object with ``best``."""
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
    """The quality gate's reason: the step's last log line that names it, else its last line."""
    texts = [line.decode() if isinstance(line, bytes) else line for line in lines]
    for text in reversed(texts):
        if "quality gate" in text.lower() and _summary(text) is None:
            return text.strip()
    return texts[-1].strip() if texts else "(the step printed no reason)"
