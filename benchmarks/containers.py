"""Step containers as the local runner launches them, timed per step (and measured, on request)."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker

from benchmarks.measure import PEAK_RSS_WRAPPER, _peak_rss
from clusterflow import pinning, spec
from clusterflow.runner import LocalRunner
from clusterflow.version import VERSION
from clusterflow_steps.contract import MANIFEST, RunLayout


class _PeakRssContainers:
    """``client.containers`` whose containers run their step under the peak-RSS wrapper."""

    def __init__(self, containers: Any):
        self._containers = containers

    def create(self, image: str, command: list[str], **kwargs: Any) -> Any:
        step = image.split("/")[-1].split(":")[0]
        entrypoint = ["python", "-c", PEAK_RSS_WRAPPER, f"clusterflow_steps.{step}"]
        return self._containers.create(image, command, entrypoint=entrypoint, **kwargs)


class _PeakRssClient:
    def __init__(self, client: docker.DockerClient):
        self.images, self.containers = client.images, _PeakRssContainers(client.containers)


@dataclass(frozen=True)
class StepTiming:
    name: str
    wall: float  # the runner's time for the task: digest lookup, create, start, logs, wait, remove
    work: float  # the step's own duration_seconds (its manifest)
    hit: bool
    peak_rss: int  # bytes; 0 unless measured


def run_pipeline(client: docker.DockerClient, data_dir: Path, run_id: str, params: spec.PipelineParams,
                 *, peak_rss: bool = False) -> tuple[float, list[StepTiming]]:
    """One local-runner run, tasks one after another: its wall time and each task's timing."""
    marks: list[tuple[float, str]] = []
    output: dict[str, list[str]] = {}

    def log(line: str) -> None:
        if line.startswith("==> "):
            marks.append((time.perf_counter(), line[4:].split(":", 1)[0]))
        elif line.startswith("[") and "] " in line:  # "[<task name>] <line>"; names may hold brackets
            output.setdefault(line[1:].split("] ", 1)[0], []).append(line)

    # One task at a time (jobs=1): a task's wall runs from its start to the next task's start.
    runner = LocalRunner(_PeakRssClient(client) if peak_rss else client, data_dir, log=log, jobs=1)
    started = time.perf_counter()
    runner.run(run_id, params, pinning.local(VERSION))
    ended = time.perf_counter()
    ends = [t for t, _ in marks[1:]] + [ended]
    run_dir = RunLayout(data_dir.resolve(), run_id).run_dir
    timings = []
    for (start, name), end in zip(marks, ends, strict=True):
        manifest = json.loads((run_dir / _step_dir(name) / MANIFEST).read_text())
        timings.append(StepTiming(name, end - start, manifest["duration_seconds"], manifest["cache"]["hit"],
                                  _peak_rss("\n".join(output.get(name, [])))))
    return ended - started, timings


def _step_dir(task_name: str) -> str:
    """``cluster[k-means++]`` -> ``cluster/k-means++``."""
    return task_name.replace("[", "/").rstrip("]")
