"""Row 2: per step, container start-up (``--help``) apart from the work, and cache hits."""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker

from benchmarks.containers import StepTiming, run_pipeline
from benchmarks.measure import Stat, Table, repeat, stats, timed
from clusterflow import spec
from clusterflow.version import VERSION

PROBES = {"container only (`true`)": ["true"], "+ interpreter (`python -c pass`)": ["python", "-c", "pass"]}


def container_seconds(client: docker.DockerClient, image: str, command: list[str],
                      entrypoint: list[str] | None = None) -> float:
    """create + start + wait + remove of one container."""
    return timed(lambda: client.containers.run(image, command, entrypoint=entrypoint, remove=True,
                                               network_mode="none"))


def startup(client: docker.DockerClient, repeats: int) -> tuple[Table, dict[str, Stat]]:
    """The start-up table, and each step's ``--help`` container :class:`Stat`."""
    table = Table("Per step: container start-up and import, no work",
                  ("image", *PROBES, "`<step> --help` (imports the step)"))
    helps = {}
    for step in spec.STEPS:
        image = spec.image_ref(step, VERSION)
        cells = [repeat(lambda image=image, command=command: container_seconds(client, image, [], command),
                        repeats).cell()
                 for command in PROBES.values()]
        helps[step] = repeat(lambda image=image: container_seconds(client, image, ["--help"]), repeats)
        table.add(step, *cells, helps[step].cell())
    table.notes.append("`--help` parses the step's CLI: its import cost is what a cache hit pays before hashing.")
    return table, helps


def _per_step(runs: list[list[StepTiming]], field: str) -> dict[str, Stat]:
    return stats([{t.name: getattr(t, field) for t in run} for run in runs])


def work(client: docker.DockerClient, repeats: int) -> tuple[Table, dict[str, dict[str, Stat]]]:
    """The digits pipeline through the runner, cache off then all hits: wall vs the step's own time."""
    misses, hits = [], []
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-") as tmp:
        data = Path(tmp) / "data"
        data.mkdir()
        data.chmod(0o777)
        for i in range(repeats):
            misses.append(run_pipeline(client, data, f"miss-{i}", spec.PipelineParams(cache=False))[1])
            hits.append(run_pipeline(client, data, f"hit-{i}", spec.PipelineParams())[1])
    if any(t.hit for run in misses for t in run):
        raise RuntimeError("a --no-cache run reported a cache hit")
    rerendered = {t.name for run in hits for t in run if not t.hit}  # the report: it shows run ids
    measured = {"wall": _per_step(misses, "wall"), "work": _per_step(misses, "work"),
                "hit": _per_step(hits, "wall"), "hit_work": _per_step(hits, "work")}
    table = Table("Per step: work vs overhead (digits, local runner, one task at a time), and cache hits",
                  ("task", "container wall", "step's own time (manifest)", "overhead (wall − own)",
                   "cache hit: container wall", "cache hit: step's own time"))
    for name, wall in measured["wall"].items():
        overhead = Stat(tuple(w - s for w, s in zip(wall.values, measured["work"][name].values, strict=True)))
        again = " (no hit: re-rendered)" if name in rerendered else ""
        table.add(name, wall.cell(), measured["work"][name].cell(), overhead.cell(),
                  measured["hit"][name].cell() + again, measured["hit_work"][name].cell() + again)
    table.notes += ["Container wall = the runner's time for the task (image digest lookup, create, start, "
                       "log streaming, wait, remove); the step's own time runs from its first line of work "
                       "(after imports) to its manifest.",
                       "Cache hits: a second run (new run id) of the same params; the report keys on its "
                       "upstream manifests' exact bytes and its run id, so it re-renders (README, Step cache)."]
    measured["hit_work"] = {k: v for k, v in measured["hit_work"].items() if k not in rerendered}
    return table, measured
