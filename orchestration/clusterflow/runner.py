"""The local runner: the pipeline spec rendered as ``docker run`` calls, stage after stage.

The tasks of one stage (the cluster variants, times each k of a sweep) run concurrently, as the
DAG's do: up to ``jobs`` at once (default :data:`spec.PARALLEL_TASKS`). After a task's
container succeeded (evaluate: also the quality gate's exit 3, whose outputs are kept), its commit
container (:meth:`spec.Task.commit`: the store read-write, the data root read-only) puts its
outputs into the cache store; a failed commit only means no cache entry.

The step images are resolved before (:func:`pinning.resolve`); a pinned one the engine lacks is
pulled by its digest when the run starts, a local one it lacks is an error
(:class:`engine.PipelineImageMissing`).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from clusterflow_steps.contract import ASSIGN, RunId, RunLayout, cache_hit_line

from clusterflow import dataroot, engine, pinning, spec
from clusterflow.engine import PipelineImageMissing

LOCAL_DAG_ID = "local"


def caller_steps_user() -> tuple[int, int]:
    """Whom a run's steps run as by default: the caller (so the files in the data dir are theirs),
    or the images' user when the caller is root."""
    uid, gid = os.getuid(), os.getgid()
    return (spec.STEP_UID, spec.STEP_GID) if uid == 0 else (uid, gid)


class PipelineFailed(Exception):
    """A step exited non-zero; carries its name and exit code."""

    def __init__(self, task: spec.Task, exit_code: int, after: list[str] | None = None):
        self.task, self.exit_code = task, exit_code
        ran = f" (then ran {', '.join(after)})" if after else ""
        super().__init__(f"step {task.name} failed with exit code {exit_code}{ran}")


@dataclass
class LocalRunner:
    """Runs each task of :func:`spec.stages` as a container over a host data directory."""

    client: docker.DockerClient
    data_dir: Path
    log: Callable[[str], None] = print
    # memory and CPU limits of every step container: read once, when the runner is made
    limits: spec.StepLimits = field(default_factory=spec.step_limits)
    # how many tasks of one stage run at once (None: all of them, at most spec.PARALLEL_TASKS)
    jobs: int | None = None
    # (uid, gid) the steps run as; None: see steps_run_as. A launch gate admits only the images' user.
    run_as: tuple[int, int] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _running: set = field(default_factory=set, init=False, repr=False)  # containers started, not removed
    _hits: set = field(default_factory=set, init=False, repr=False)  # tasks whose step logged a cache hit
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)  # no new commits

    def _log(self, line: str) -> None:
        with self._lock:  # concurrent tasks: whole lines, never interleaved halves
            self.log(line)

    def steps_run_as(self) -> tuple[int, int]:
        """``run_as`` when given, else :func:`caller_steps_user`."""
        return self.run_as or caller_steps_user()

    def container_user(self) -> str:
        return "{}:{}".format(*self.steps_run_as())

    def ensure_image(self, ref: str) -> str:
        """What the steps of image ``ref`` record (:func:`engine.image_digest`), pulling a pinned
        image the engine lacks (by digest)."""
        digest = pinning.pinned_digest(ref)
        if digest:
            try:
                self.client.images.get(ref)
            except docker.errors.ImageNotFound:
                self.pull(ref, digest)
        return engine.image_digest(ref, lambda found: str(self.client.images.get(found).id))

    def pull(self, ref: str, digest: str) -> None:
        """Pull a pinned image by its digest (never a tag), logging how long it took."""
        started = time.monotonic()
        try:
            self.client.images.pull(ref[:-len(digest) - 1], tag=digest)
        except docker.errors.DockerException as exc:
            reason = " ".join(str(getattr(exc, "explanation", None) or exc).split())[:200]
            raise PipelineImageMissing(ref, f"the pull failed ({reason}): check that the registry "
                                            "answers and the engine trusts it") from None
        self._log(f"pulled {ref} in {time.monotonic() - started:.1f} s")

    def run_task(self, task: spec.Task, run_id: RunId, mounts: list[spec.Mount], digest: str) -> int:
        """Run ``task``'s container to its end (``digest``: its image's, see :meth:`ensure_image`); its exit code."""
        container = self.client.containers.create(
            task.image, list(task.command), user=self.container_user(),
            environment=spec.step_environment(task.image, digest),
            labels=spec.labels(LOCAL_DAG_ID, run_id, task),
            mounts=[engine.docker_mount(m) for m in mounts],
            **spec.CONTAINER_POLICY, **self.limits.docker_kwargs(),
        )
        with self._lock:
            self._running.add(container)
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    self._log(f"[{task.name}] {line}")
                    if line.startswith(cache_hit_line(task.step)):
                        with self._lock:
                            self._hits.add(task)
            return int(container.wait()["StatusCode"])
        finally:
            with self._lock:
                self._running.discard(container)
            container.remove(force=True)

    def run(self, run_id: RunId, params: spec.PipelineParams, images: pinning.Images) -> Path:
        """Run every stage with ``images``; return the run's result (the report) or raise :class:`PipelineFailed`."""
        stages = spec.stages(run_id, params, images.refs)
        # before any step, once per image: pulls are logged once, every task gets its image's digest
        digests = {ref: self.ensure_image(ref) for ref in dict.fromkeys(images.refs.values())}
        self._stopping.clear()
        self.data_dir = self.data_dir.resolve()
        dataroot.prepare_run_dir(self.data_dir, run_id, self.steps_run_as())
        mounts = {commit: spec.mounts(str(self.data_dir), params.dataset, commit=commit) for commit in (False, True)}
        tasks = [t for stage in stages for t in stage]
        after_gate = [t.name for t in tasks if t.role.runs_after_gate_failure]
        gate_failure: PipelineFailed | None = None
        for stage in stages:
            ready = [t for t in stage if not gate_failure or t.role.runs_after_gate_failure]
            # every task of the stage finishes before a failure is raised: none is left running
            for task, code in zip(ready, self._run_stage(ready, run_id, mounts, digests), strict=True):
                if code and code == task.role.gate_exit_code:
                    gate_failure = PipelineFailed(task, code, after=after_gate)
                elif code:
                    raise PipelineFailed(task, code)
        if gate_failure:
            raise gate_failure
        (result,) = [t.role.result for t in tasks if t.role.result]
        return RunLayout(self.data_dir, run_id).path(result)

    def assign(self, run_id: RunId, dataset: str, images: pinning.Images, *, allow_failed_gate: bool = False) -> Path:
        """Score ``dataset`` with the best model of the finished run ``run_id`` (:func:`spec.assign_task`,
        then its cache commit); return its summary or raise :class:`PipelineFailed`."""
        task = spec.assign_task(run_id, dataset, images.refs[ASSIGN], allow_failed_gate=allow_failed_gate)
        digest = self.ensure_image(task.image)
        self._stopping.clear()
        self.data_dir = self.data_dir.resolve()
        dataroot.prepare_run_dir(self.data_dir, run_id, self.steps_run_as())
        mounts = {commit: spec.mounts(str(self.data_dir), dataset, commit=commit) for commit in (False, True)}
        (code,) = self._run_stage([task], run_id, mounts, {task.image: digest})
        if code:
            raise PipelineFailed(task, code)
        assert task.role.result is not None
        return RunLayout(self.data_dir, run_id).path(task.role.result)

    def _run_stage(self, tasks: list[spec.Task], run_id: RunId, mounts: dict[bool, list[spec.Mount]],
                   digests: dict[str, str]) -> list[int]:
        """Each task's exit code, in order; up to :attr:`jobs` of them run at once.

        If waiting is interrupted (Ctrl-C) or a launch fails, the stage's other containers are
        removed at once rather than left to finish unattended.
        """
        def launch(task: spec.Task) -> int:
            self._log(f"==> {task.name}: {task.image} {' '.join(task.command)}")
            code = self.run_task(task, run_id, mounts[False], digests[task.image])
            # a hit's outputs are the store's own (a step that lies about one only loses its entry)
            if task.role.commits_cache and task.keeps_outputs(code) and task not in self._hits \
                    and not self._stopping.is_set():
                committed = self.run_task(task.commit(), run_id, mounts[True], digests[task.image])
                if committed:
                    self._log(f"warning: {task.name}: the cache commit exited {committed}: "
                              "its outputs are not cached (the run goes on)")
            return code

        if len(tasks) <= 1:
            return [launch(task) for task in tasks]
        pool = ThreadPoolExecutor(max_workers=min(self.jobs or spec.PARALLEL_TASKS, len(tasks)))
        futures = [pool.submit(launch, task) for task in tasks]
        try:
            for future in as_completed(futures):
                future.result()  # a launch error surfaces as soon as it happens
            return [future.result() for future in futures]
        except BaseException:
            self._stopping.set()
            for future in futures:
                future.cancel()
            with self._lock:
                running = list(self._running)
            for container in running:
                container.remove(force=True)
            raise
        finally:
            pool.shutdown(wait=True)
