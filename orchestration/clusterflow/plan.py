"""A DAG run's plan: everything its containers need, rendered once from the spec (pure: no Airflow).

The DAG's ``plan`` task renders it (:func:`render_plan`) and pushes it as XCom
(:meth:`Plan.to_xcom`); every step task, on every try, reads it back (:meth:`Plan.from_xcom`) and
renders its container from it (:func:`render_container`), so retries and concurrent runs stay
consistent whatever changes between them (a publish, the worker's env).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from clusterflow_steps.contract import RUN_ID, RunId

from clusterflow import pinning, spec


@dataclass(frozen=True)
class Plan:
    """One DAG run, rendered: its run id on the data root, params, data root, step images
    (decided once), container limits, tasks, and the mounts of a step and of its cache commit."""

    run_id: RunId
    airflow_run_id: str
    params: spec.PipelineParams
    data_source: str
    images: pinning.Images
    limits: spec.StepLimits
    tasks: tuple[spec.Task, ...]
    mounts: tuple[spec.Mount, ...]  # a step: the cache store read-only
    commit_mounts: tuple[spec.Mount, ...]  # its commit: only the store writable

    @property
    def variants(self) -> list[str]:
        """What the per-variant (cluster) task maps over."""
        return list(self.params.variants)

    def task(self, step: str, variant: str | None = None) -> spec.Task:
        (found,) = [t for t in self.tasks if t.name == spec.task_name(step, variant)]
        return found

    def to_xcom(self) -> dict[str, Any]:
        """As JSON-able XCom; :meth:`from_xcom` turns it back into this plan."""
        return {
            "run_id": self.run_id,
            "airflow_run_id": self.airflow_run_id,
            "params": self.params.as_dict(),
            "data_source": self.data_source,
            "images": self.images.as_json(),
            "limits": self.limits.docker_kwargs(),
            "variants": self.variants,
            # per task its command and, for whoever reads the XCom, its role's cache flag
            "tasks": {t.name: {"step": t.step, "variant": t.variant, "image": t.image, "command": list(t.command),
                               "commits_cache": t.role.commits_cache} for t in self.tasks},
            "mounts": [_mount_json(m) for m in self.mounts],
            "commit_mounts": [_mount_json(m) for m in self.commit_mounts],
        }

    @classmethod
    def from_xcom(cls, found: dict[str, Any]) -> Plan:
        limits = found["limits"]
        return cls(
            run_id=RunId(found["run_id"]),
            airflow_run_id=found["airflow_run_id"],
            params=pipeline_params(found["params"]),
            data_source=found["data_source"],
            # the images of exactly the steps the plan launches (the training steps, or assign alone)
            images=pinning.from_json(found["images"], tuple(dict.fromkeys(t["step"] for t in found["tasks"].values()))),
            limits=spec.StepLimits(limits["mem_limit"], limits["nano_cpus"] / 1e9),
            tasks=tuple(spec.Task(t["step"], t["image"], tuple(t["command"]), t["variant"])
                        for t in found["tasks"].values()),
            mounts=tuple(_mount(m) for m in found["mounts"]),
            commit_mounts=tuple(_mount(m) for m in found["commit_mounts"]),
        )


def _mount_json(mount: spec.Mount) -> dict[str, Any]:
    return {"source": mount.source, "target": mount.target, "read_only": mount.read_only, "type": mount.kind}


def _mount(found: dict[str, Any]) -> spec.Mount:
    return spec.Mount(found["source"], found["target"], found["read_only"])


def pipeline_params(values: dict[str, Any]) -> spec.PipelineParams:
    """The run's params as the spec's dataclass (raises ValueError with a one-line reason)."""
    unknown = sorted(set(values) - set(spec.FIELDS))
    if unknown:
        raise ValueError(f"unknown param(s) {', '.join(unknown)}: use {', '.join(spec.FIELDS)}")
    converted: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}  # JSON lists
    return spec.PipelineParams(**converted)


def check_data_source(source: str) -> str:
    """``source`` if it is an absolute host path or a Docker volume name, else ValueError saying so."""
    if not (source.startswith("/") or RUN_ID.problem(source.replace("/", "")) is None):
        raise ValueError(f"data source {source!r}: give an absolute host path or a Docker volume name")
    return source


def render_plan(values: dict[str, Any], airflow_run_id: str, source: str, images: pinning.Images,
                limits: spec.StepLimits | None = None) -> Plan:
    """Everything a run's containers need, rendered from the spec (pure: no Airflow, no Docker).

    ``limits`` default to :func:`spec.step_limits` (the worker's env), read here, once per run.
    """
    limits = limits or spec.step_limits()
    params = pipeline_params(values)
    run_id = spec.safe_run_id(airflow_run_id)
    check_data_source(source)
    return Plan(
        run_id=run_id, airflow_run_id=airflow_run_id, params=params, data_source=source, images=images,
        limits=limits, tasks=tuple(t for stage in spec.stages(run_id, params, images.refs) for t in stage),
        mounts=tuple(spec.mounts(source, params.dataset, commit=False)),
        commit_mounts=tuple(spec.mounts(source, params.dataset, commit=True)),
    )


def render_container(plan: Plan, dag_id: str, task: spec.Task, try_number: int, digest: str | None, *,
                     commit: bool = False) -> dict[str, Any]:
    """One step container's settings (image, command, env, labels, mounts) for the run of ``plan``;
    with ``commit``, those of its commit container (:meth:`spec.Task.commit`). Keys are
    DockerOperator's attributes; mounts stay :class:`spec.Mount` (the operator converts them)."""
    launched = task.commit() if commit else task
    return {
        "image": task.image,
        "command": list(launched.command),
        "environment": spec.step_environment(task.image, digest),
        "labels": spec.labels(dag_id, plan.run_id, launched, try_number),
        "container_name": spec.container_name(plan.run_id, launched),
        "mounts": list(plan.commit_mounts if commit else plan.mounts),
        # DockerOperator's mem_limit; its ``cpus`` is only a relative weight (cpu_shares), so the
        # hard CPU limit goes into the host config as nano_cpus (see StepOperator.cli)
        **plan.limits.docker_kwargs(),
    }
