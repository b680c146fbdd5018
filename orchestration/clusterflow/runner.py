"""The local runner: the pipeline spec rendered as ``docker run`` calls, one step after another."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import docker
import docker.errors
from docker.types import Mount as DockerMount

from clusterflow import dataroot, spec

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

    def container_user(self) -> str:
        """The host user (so files in the data dir are theirs); the image's user when that is root."""
        uid, gid = os.getuid(), os.getgid()
        return spec.STEP_USER if uid == 0 else f"{uid}:{gid}"

    def image_digest(self, image: str) -> str:
        try:
            found = self.client.images.get(image)
        except docker.errors.ImageNotFound:
            raise PipelineImageMissing(image) from None
        return (found.attrs.get("RepoDigests") or [found.id])[0]

    def run_task(self, task: spec.Task, run_id: str, mounts: list[spec.Mount]) -> int:
        container = self.client.containers.create(
            task.image, list(task.command), user=self.container_user(),
            environment=spec.step_environment(task.image, self.image_digest(task.image)),
            labels=spec.labels(LOCAL_DAG_ID, run_id, task),
            mounts=[DockerMount(m.target, m.source, type=m.kind, read_only=m.read_only) for m in mounts],
            **spec.CONTAINER_POLICY, **self.limits.docker_kwargs(),
        )
        try:
            container.start()
            for chunk in container.logs(stream=True, follow=True):
                for line in chunk.decode(errors="replace").splitlines():
                    self.log(f"[{task.name}] {line}")
            return int(container.wait()["StatusCode"])
        finally:
            container.remove(force=True)

    def run(self, run_id: str, params: spec.PipelineParams, tag: str,
            repository: str = spec.IMAGE_REPOSITORY) -> Path:
        """Run every stage; return the report's path or raise :class:`PipelineFailed`."""
        spec.validate_run_id(run_id)
        self.data_dir = self.data_dir.resolve()
        dataroot.prepare_run_dir(self.data_dir, run_id)
        mounts = spec.mounts(str(self.data_dir), params.dataset)
        gate_failure: PipelineFailed | None = None
        for stage in spec.stages(run_id, params, tag, repository):
            for task in stage:
                if gate_failure and not task.runs_after_gate_failure:
                    continue
                self.log(f"==> {task.name}: {task.image} {' '.join(task.command)}")
                code = self.run_task(task, run_id, mounts)
                if code == spec.QUALITY_GATE_EXIT and task.step == "evaluate":
                    gate_failure = PipelineFailed(task, code, after=["report"])
                elif code:
                    raise PipelineFailed(task, code)
        if gate_failure:
            raise gate_failure
        return self.data_dir / "runs" / run_id / "report" / "report.html"


class PipelineImageMissing(Exception):
    def __init__(self, image: str):
        super().__init__(f"image {image} not found: build the images first with `make images`")
