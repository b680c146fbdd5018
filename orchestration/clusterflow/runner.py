"""The local runner: the pipeline spec rendered as ``docker run`` calls, stage after stage.

The tasks of one stage (the cluster variants) run concurrently, as the DAG's do. After a task's
container succeeded (evaluate: also the quality gate's exit 3, whose outputs are kept), its commit
container (:meth:`spec.Task.commit`: the store read-write, the data root read-only) puts its
outputs into the cache store; a failed commit only means no cache entry.

The step images are resolved before (:func:`pinning.resolve`); a pinned one the engine lacks is
pulled by its digest when the run starts, a local one it lacks is an error.
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
from docker.types import Mount as DockerMount

from clusterflow import dataroot, pinning, spec

LOCAL_DAG_ID = "local"


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
    # how many tasks of one stage run at once (None: all of them)
    jobs: int | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _running: set = field(default_factory=set, init=False, repr=False)  # containers started, not removed
    _hits: set = field(default_factory=set, init=False, repr=False)  # tasks whose step logged a cache hit
    _stopping: threading.Event = field(default_factory=threading.Event, init=False, repr=False)  # no new commits
    _digests: dict = field(default_factory=dict, init=False, repr=False)  # image ref -> what its steps record

    def _log(self, line: str) -> None:
        with self._lock:  # concurrent tasks: whole lines, never interleaved halves
            self.log(line)

    def container_user(self) -> str:
        """The host user (so files in the data dir are theirs); the image's user when that is root."""
        uid, gid = os.getuid(), os.getgid()
        return spec.STEP_USER if uid == 0 else f"{uid}:{gid}"

    def ensure_image(self, ref: str) -> str:
        """What the steps of image ``ref`` record as ``CLUSTERFLOW_IMAGE_DIGEST``, pulling a pinned
        image the engine lacks (by digest); remembered for the rest of the run.

        A pinned ref records its manifest digest, the same on every engine that pulled it (so cache
        keys match across engines); a local one this engine's image ID (only this engine has it).
        ``RepoDigests`` is neither: it lists ``repo@digest`` of whatever registries the image came
        from, in no set order.
        """
        digest = pinning.pinned_digest(ref)
        try:
            local_id = self.client.images.get(ref).id
        except docker.errors.ImageNotFound:
            if digest is None:
                raise PipelineImageMissing(ref) from None
            self.pull(ref, digest)
        self._digests[ref] = digest or local_id
        return self._digests[ref]

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

    def run_task(self, task: spec.Task, run_id: str, mounts: list[spec.Mount]) -> int:
        container = self.client.containers.create(
            task.image, list(task.command), user=self.container_user(),
            environment=spec.step_environment(task.image, self._digests.get(task.image) or self.ensure_image(task.image)),
            labels=spec.labels(LOCAL_DAG_ID, run_id, task),
            mounts=[DockerMount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in mounts],
            **spec.CONTAINER_POLICY, **self.limits.docker_kwargs(),
        )
        with self._lock:
            self._running.add(container)
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    self._log(f"[{task.name}] {line}")
                    if line.startswith(f"{task.step}: cache hit "):
                        with self._lock:
                            self._hits.add(task)
            return int(container.wait()["StatusCode"])
        finally:
            with self._lock:
                self._running.discard(container)
            container.remove(force=True)

    def run(self, run_id: str, params: spec.PipelineParams, images: pinning.Images) -> Path:
        """Run every stage with ``images``; return the report's path or raise :class:`PipelineFailed`."""
        spec.validate_run_id(run_id)
        stages = spec.stages(run_id, params, images.refs)
        for ref in dict.fromkeys(images.refs.values()):  # before any step: pulls are logged once
            self.ensure_image(ref)
        self._stopping.clear()
        self.data_dir = self.data_dir.resolve()
        dataroot.prepare_run_dir(self.data_dir, run_id)
        mounts = {commit: spec.mounts(str(self.data_dir), params.dataset, commit=commit) for commit in (False, True)}
        gate_failure: PipelineFailed | None = None
        for stage in stages:
            tasks = [t for t in stage if not gate_failure or t.runs_after_gate_failure]
            # every task of the stage finishes before a failure is raised: none is left running
            for task, code in zip(tasks, self._run_stage(tasks, run_id, mounts)):
                if code == spec.QUALITY_GATE_EXIT and task.step == "evaluate":
                    gate_failure = PipelineFailed(task, code, after=["report"])
                elif code:
                    raise PipelineFailed(task, code)
        if gate_failure:
            raise gate_failure
        return self.data_dir / "runs" / run_id / "report" / "report.html"

    def _run_stage(self, tasks: list[spec.Task], run_id: str, mounts: dict[bool, list[spec.Mount]]) -> list[int]:
        """Each task's exit code, in order; up to :attr:`jobs` of them run at once.

        If waiting is interrupted (Ctrl-C) or a launch fails, the stage's other containers are
        removed at once rather than left to finish unattended.
        """
        def launch(task: spec.Task) -> int:
            self._log(f"==> {task.name}: {task.image} {' '.join(task.command)}")
            code = self.run_task(task, run_id, mounts[False])
            # a hit's outputs are the store's own (a step that lies about one only loses its entry)
            if task.commits_cache and task.keeps_outputs(code) and task not in self._hits \
                    and not self._stopping.is_set():
                committed = self.run_task(task.commit(), run_id, mounts[True])
                if committed:
                    self._log(f"warning: {task.name}: the cache commit exited {committed}: "
                              "its outputs are not cached (the run goes on)")
            return code

        if len(tasks) <= 1:
            return [launch(task) for task in tasks]
        pool = ThreadPoolExecutor(max_workers=min(self.jobs or len(tasks), len(tasks)))
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


class PipelineImageMissing(Exception):
    """A step image the engine does not have and cannot get."""

    def __init__(self, image: str, why: str = "not found: build the images first with `make images`"):
        super().__init__(f"image {image} {why}")
