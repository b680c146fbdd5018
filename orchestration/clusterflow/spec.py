"""The pipeline, defined once: its steps, images, commands, mounts and parameters.

Nothing here imports Airflow or Docker. The Airflow DAG and the local runner are two renderings
of :func:`stages`; neither spells out a step, a flag or a mount of its own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import typing
from dataclasses import dataclass
from pathlib import Path

from clusterflow_steps.contract import (CENTERS, CLUSTER_LABELS, FEATURES, IMAGE_DIGEST_ENV, IMAGE_ENV, LABELS, METRICS,
                                        MODEL, MODEL_ARRAYS, PROJECTION, QUALITY_GATE_EXIT, REPORT, RUN_ID, STEPS,
                                        VARIANT, Artifact, RunId)
from clusterflow_steps.contract import ASSIGN, ASSIGN_SUMMARY, ASSIGNMENTS
from clusterflow_steps.contract import IMAGES as IMAGES
from clusterflow_steps.launch import CACHE_MOUNT, DATA_MOUNT, INPUT_MOUNT
from clusterflow_steps.launch import CONTAINER_POLICY as CONTAINER_POLICY
from clusterflow_steps.launch import STEP_GID as STEP_GID
from clusterflow_steps.launch import STEP_UID as STEP_UID
from clusterflow_steps.launch import STEP_USER as STEP_USER
from clusterflow_steps.params import BUILTIN_DATASETS as BUILTIN_DATASETS
from clusterflow_steps.params import COMMIT_CACHE_FLAG as COMMIT_CACHE_FLAG
from clusterflow_steps.params import FIELDS as FIELDS
from clusterflow_steps.params import INITS as INITS
from clusterflow_steps.params import OPTIONS
from clusterflow_steps.params import RUN_ID_FLAG as RUN_ID_FLAG
from clusterflow_steps.params import PipelineParams as PipelineParams
from clusterflow_steps.params import param_schema as param_schema

CACHE_SOURCE_ENV = "CLUSTERFLOW_CACHE_SOURCE"
# The steps' data root as the launcher sees it (a volume name or an absolute host path), and the
# tag of the local step images: read by the DAG, the launch gate and the UI.
DATA_SOURCE_ENV = "CLUSTERFLOW_DATA_SOURCE"
IMAGE_TAG_ENV = "CLUSTERFLOW_IMAGE_TAG"
IMAGE_REPOSITORY = "clusterflow"
LABEL_PREFIX = "io.clusterflow"

DAG_ID = "digits_kmeans"  # the Airflow rendering's DAG (its runs are what the UI plugin shows)

# The most tasks of one stage (the cluster variants x k) that run at once unless told otherwise:
# the local runner's --jobs default and the DAG's mapped cluster task's max_active_tis_per_dagrun.
PARALLEL_TASKS = 8

# Resource limits of every step container: deployment settings (env of the runner / the Airflow
# worker), not run params; read once per run (see :func:`step_limits`).
STEP_MEMORY_ENV = "CLUSTERFLOW_STEP_MEMORY"
STEP_CPUS_ENV = "CLUSTERFLOW_STEP_CPUS"
DEFAULT_STEP_MEMORY = "2g"
DEFAULT_STEP_CPUS = 2.0
_MEMORY = re.compile(r"(\d+(?:\.\d+)?)\s*([bkmg]?)b?", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
_MIN_MEMORY = 6 << 20  # Docker refuses less


@dataclass(frozen=True)
class StepLimits:
    """Memory (bytes) and CPUs of one step container."""

    memory: int
    cpus: float

    @property
    def nano_cpus(self) -> int:
        return round(self.cpus * 1e9)

    def docker_kwargs(self) -> dict[str, int]:
        """As docker SDK ``containers.create`` / ``create_host_config`` keywords."""
        return {"mem_limit": self.memory, "nano_cpus": self.nano_cpus}


def step_limits(env: typing.Mapping[str, str] | None = None) -> StepLimits:
    """The step containers' limits: ``CLUSTERFLOW_STEP_MEMORY`` (default ``2g``; ``512m``, bytes...)
    and ``CLUSTERFLOW_STEP_CPUS`` (default 2, or the host's cores when fewer). Raises ValueError
    with a one-line fix for an unusable value."""
    env = os.environ if env is None else env
    memory_text = (env.get(STEP_MEMORY_ENV) or "").strip() or DEFAULT_STEP_MEMORY
    match = _MEMORY.fullmatch(memory_text)
    memory = int(float(match.group(1)) * _UNITS[match.group(2).lower()]) if match else 0
    if memory < _MIN_MEMORY:
        raise ValueError(f"{STEP_MEMORY_ENV}={memory_text!r}: give a size of at least 6m, e.g. 512m or 2g")
    cpus_text = (env.get(STEP_CPUS_ENV) or "").strip()
    if not cpus_text:
        return StepLimits(memory, min(DEFAULT_STEP_CPUS, float(os.cpu_count() or 1)))
    try:
        cpus = float(cpus_text)
    except ValueError:
        cpus = 0.0
    if not 0.01 <= cpus < float("inf"):
        raise ValueError(f"{STEP_CPUS_ENV}={cpus_text!r}: give a number of CPUs of at least 0.01, e.g. 1.5")
    return StepLimits(memory, cpus)


@dataclass(frozen=True)
class Mount:
    """A bind mount (``source`` is an absolute host path) or a named volume."""

    source: str
    target: str
    read_only: bool = False

    @property
    def kind(self) -> str:
        return "bind" if self.source.startswith("/") else "volume"


@dataclass(frozen=True)
class Role:
    """What a step's tasks are to the renderings besides a command: read from :data:`ROLES`,
    so neither the runner nor the DAG branches on a step's name."""

    outputs: tuple[Artifact, ...]  # the contract files it writes (a commit caches them)
    per_variant: bool = False  # one task per variant (PipelineParams.variants), named ``step[<variant>]``
    gate_exit_code: int | None = None  # exit code of "outputs written, the quality gate breached"
    prints_summary: bool = False  # its last output line is the run's one-line JSON summary
    runs_after_gate_failure: bool = False  # it runs (to document the breach) after a gate failure
    commits_cache: bool = True  # its outputs go into the cache store (the report's show run ids)
    result: Artifact | None = None  # the file a finished run hands back (the local CLI, the DAG's XCom)


ROLES = {
    "prepare": Role((FEATURES, LABELS)),
    "cluster": Role((MODEL, MODEL_ARRAYS, CLUSTER_LABELS, CENTERS), per_variant=True),
    "evaluate": Role((METRICS, PROJECTION), gate_exit_code=QUALITY_GATE_EXIT, prints_summary=True),
    "report": Role((REPORT,), runs_after_gate_failure=True, commits_cache=False, result=REPORT),
}
# Every step image's role: the training stages' and assign's (a task of its own, see :func:`assign_task`).
IMAGE_ROLES = {**ROLES, ASSIGN: Role((ASSIGNMENTS, ASSIGN_SUMMARY), result=ASSIGN_SUMMARY)}


@dataclass(frozen=True)
class Task:
    """One container launch: a step (and, for cluster, one variant)."""

    step: str
    image: str
    command: tuple[str, ...]
    variant: str | None = None

    @property
    def role(self) -> Role:
        return IMAGE_ROLES[self.step]

    @property
    def name(self) -> str:
        return task_name(self.step, self.variant)

    @property
    def is_commit(self) -> bool:
        return COMMIT_CACHE_FLAG in self.command

    def keeps_outputs(self, exit_code: int) -> bool:
        """Whether a run that exited ``exit_code`` left outputs to commit: success, or its role's
        quality-gate exit (evaluate writes its metrics, then exits 3)."""
        return exit_code == 0 or exit_code == self.role.gate_exit_code

    def commit(self) -> Task:
        """The container that, after this task succeeded, puts its outputs into the cache store:
        the same command (so the step derives the same cache key) with ``--commit-cache``."""
        return dataclasses.replace(self, command=(*self.command, COMMIT_CACHE_FLAG))


def task_name(step: str, variant: str | None = None) -> str:
    """A task's name in both renderings (logs, labels, the DAG's plan): ``step`` or ``step[variant]``."""
    return f"{step}[{variant}]" if variant else step


def image_ref(step: str, tag: str) -> str:
    """A step image as this engine built it (``clusterflow/<step>:<tag>``): the local form."""
    return f"{IMAGE_REPOSITORY}/{step}:{tag}"


def local_images(tag: str, steps: tuple[str, ...] = STEPS) -> dict[str, str]:
    """The local images of ``steps`` (no registry): what :func:`stages` gets without pins."""
    return {step: image_ref(step, tag) for step in steps}


def dataset_in_container(dataset: str) -> str:
    """Where a user's dataset file appears inside the step container."""
    if dataset in BUILTIN_DATASETS or dataset.startswith(DATA_MOUNT + "/"):
        return dataset
    return f"{INPUT_MOUNT}/{Path(dataset).name}"


def cache_source(data_source: str, environ: typing.Mapping[str, str] | None = None) -> str:
    """Where the cache store lives: ``$CLUSTERFLOW_CACHE_SOURCE``, else beside the data root
    (``<path>/cache`` for a host path, the volume ``<name>-cache`` for a named volume)."""
    explicit = ((os.environ if environ is None else environ).get(CACHE_SOURCE_ENV) or "").strip()
    if explicit:
        return explicit
    return f"{data_source.rstrip('/')}/cache" if data_source.startswith("/") else f"{data_source}-cache"


def mounts(data_source: str, dataset: str = "digits", *, cache: str | None = None,
           commit: bool = False) -> list[Mount]:
    """The data root at ``/data`` and the cache store over ``/data/cache`` (read-only for a step;
    for a ``commit`` container the other way round); a user dataset outside the data root
    read-only under ``/input``."""
    found = [Mount(data_source, DATA_MOUNT, read_only=commit),
             Mount(cache or cache_source(data_source), CACHE_MOUNT, read_only=not commit)]
    if dataset_in_container(dataset) != dataset:
        found.append(Mount(str(Path(dataset).resolve()), dataset_in_container(dataset), read_only=True))
    return found


def command(step: str, run_id: RunId, params: PipelineParams, variant: str | None = None) -> tuple[str, ...]:
    """Arguments after the image's entrypoint (the step CLI); a dataset file as the container sees it.
    A per-variant step's come from the params of its variant (:meth:`PipelineParams.for_variant`)."""
    if ROLES[step].per_variant:
        params = params.for_variant(VARIANT.check(variant))
    args = [RUN_ID_FLAG, run_id, *params.flags(step)]
    if OPTIONS["dataset"].flag in args:
        args[args.index(OPTIONS["dataset"].flag) + 1] = dataset_in_container(params.dataset)
    if variant is not None and ROLES[step].per_variant:
        args += params.variant_flags(variant)
    return tuple(args)


def assign_task(run_id: RunId, dataset: str, image: str, *, allow_failed_gate: bool = False) -> Task:
    """The container that scores ``dataset`` with the best model of the finished run ``run_id``,
    writing into that run (``runs/<run_id>/assign/``); mount it with :func:`mounts` of ``dataset``."""
    args = [RUN_ID_FLAG, run_id, OPTIONS["dataset"].flag, dataset_in_container(dataset)]
    if allow_failed_gate:
        args.append(OPTIONS["allow_failed_gate"].flag)
    return Task(ASSIGN, image, tuple(args))


def stages(run_id: RunId, params: PipelineParams, images: typing.Mapping[str, str]) -> list[list[Task]]:
    """The pipeline in order, a stage per step; tasks within a stage are independent of each
    other. ``images``: step -> the reference its containers are created from (resolved once per
    run, see :func:`clusterflow.pinning.resolve`, or :func:`local_images`)."""
    missing = [step for step in STEPS if not images.get(step)]
    if missing:
        raise ValueError(f"no image for step {missing[0]}: give one per step ({', '.join(STEPS)})")
    return [[Task(step, images[step], command(step, run_id, params, variant), variant)
             for variant in (params.variants if ROLES[step].per_variant else (None,))] for step in STEPS]


def labels(dag_id: str, run_id: str, task: Task, try_number: int = 1) -> dict[str, str]:
    """Docker labels that tie a container to its pipeline run (for cleanup and audit)."""
    return {f"{LABEL_PREFIX}.dag_id": dag_id, f"{LABEL_PREFIX}.run_id": run_id,
            f"{LABEL_PREFIX}.task_id": task.name, f"{LABEL_PREFIX}.try_number": str(try_number)}


def container_name(run_id: RunId, task: Task) -> str:
    """The one name a task's container has in a run (the DAG's), so a retry finds an earlier try's."""
    name = f"clusterflow.{run_id}." + re.sub(r"[^A-Za-z0-9_.-]", "-", task.name.replace("[", ".").rstrip("]"))
    return f"{name}.commit" if task.is_commit else name


def step_environment(image: str, digest: str | None) -> dict[str, str]:
    """Tells a step which image it runs in, so its manifest records it."""
    env = {IMAGE_ENV: image}
    if digest:
        env[IMAGE_DIGEST_ENV] = digest
    return env


def safe_run_id(value: str) -> RunId:
    """A run id that obeys the contract's rule, for any string (e.g. an Airflow run id).

    A value that already obeys :data:`RUN_ID` is returned as it is. Any other value (Airflow's
    ``manual__2026-11-24T10:00:00+00:00``) has its disallowed characters replaced by ``-``, is
    trimmed to fit, and gets ``-`` and a short hash of the original appended, so two different
    values never share a run directory (``manual__2026-11-24T10-00-00-00-00-<hash>``).
    """
    if RUN_ID.problem(value) is None:
        return RunId(value)
    digest = hashlib.sha256(value.encode()).hexdigest()[:12]
    body = re.sub(r"\.{2,}", ".", re.sub(r"[^A-Za-z0-9._-]+", "-", value)).lstrip(".-")
    body = body[:RUN_ID.longest - len(digest) - 1].rstrip(".-")
    return RunId(f"{body}-{digest}" if body else digest)
