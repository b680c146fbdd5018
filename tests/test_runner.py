"""The local runner's scheduling, against a fake engine: stages in order, a stage's tasks at once."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import docker.errors
import pytest

from clusterflow import pinning, spec
from clusterflow.runner import LocalRunner, PipelineFailed, PipelineImageMissing


class FakeEngine:
    """Just enough of ``docker.DockerClient``: each container runs ``seconds`` (``slow`` ones 30 s), exits.

    With ``clusters_together=N`` a started cluster container first waits (at most 30 s) until N
    containers have run at once: whether the runner starts the variants side by side no longer
    depends on how fast threads get scheduled, and a runner that ran them one by one shows it as
    ``most_at_once`` below N."""

    def __init__(self, seconds: float = 0.2, exit_codes: dict[str, int] | None = None,
                 fail_start: str | None = None, slow: tuple[str, ...] = (), lines: dict[str, str] | None = None,
                 present: set[str] | None = None, clusters_together: int = 0):
        self.seconds, self.exit_codes, self.fail_start = seconds, exit_codes or {}, fail_start
        self.slow = slow  # these tasks run 30 s
        self.clusters_together = clusters_together
        self.lines = lines or {}  # what a task logs (default: "<task> done")
        self.lock = threading.Condition()
        self.running = self.most_at_once = 0
        self.started: list[str] = []
        self.removed: list[str] = []
        self.commit_mounts: dict[str, dict[str, bool]] = {}
        self.present = present  # the image refs the engine has (None: every one)
        self.pulls: list[tuple[str, str]] = []
        self.environments: dict[str, dict[str, str]] = {}
        self.images = self
        self.containers = self

    def get(self, image: str):  # images.get
        if self.present is not None and image not in self.present:
            raise docker.errors.ImageNotFound(image)
        return type("Image", (), {"attrs": {"RepoDigests": ["elsewhere/x@sha256:" + "e" * 64]},
                                  "id": "sha256:" + "0" * 64})()

    def pull(self, repository: str, tag: str):  # images.pull
        self.pulls.append((repository, tag))
        self.present.add(f"{repository}@{tag}")

    def create(self, image: str, command: list[str], **kwargs):  # containers.create
        task = kwargs["labels"][f"{spec.LABEL_PREFIX}.task_id"]
        self.environments[task] = kwargs["environment"]
        if spec.COMMIT_CACHE_FLAG in command:
            task += " commit"
            self.commit_mounts[task] = {m["Target"]: m["ReadOnly"] for m in kwargs["mounts"]}
        return FakeContainer(self, task)

    @property
    def steps_started(self) -> list[str]:
        return [t for t in self.started if not t.endswith(" commit")]


class FakeContainer:
    def __init__(self, engine: FakeEngine, task: str):
        self.engine, self.task, self.gone = engine, task, threading.Event()

    def start(self) -> None:
        if self.task == self.engine.fail_start:
            raise RuntimeError(f"engine refused to start {self.task}")
        with self.engine.lock:
            self.engine.started.append(self.task)
            self.engine.running += 1
            self.engine.most_at_once = max(self.engine.most_at_once, self.engine.running)
            self.engine.lock.notify_all()

    def logs(self, **kwargs):
        # "runs" until its time is up or it is removed
        if self.task.startswith("cluster[") and not self.task.endswith(" commit"):
            with self.engine.lock:
                self.engine.lock.wait_for(lambda: self.gone.is_set()
                                          or self.engine.most_at_once >= self.engine.clusters_together, timeout=30)
        self.gone.wait(30 if self.task in self.engine.slow else self.engine.seconds)
        with self.engine.lock:
            self.engine.running -= 1
        yield (self.engine.lines.get(self.task, f"{self.task} done") + "\n").encode()

    def wait(self) -> dict[str, int]:
        return {"StatusCode": self.engine.exit_codes.get(self.task, 0)}

    def remove(self, force: bool = False) -> None:
        self.gone.set()
        with self.engine.lock:
            self.engine.removed.append(self.task)
            self.engine.lock.notify_all()


VARIANTS = ["cluster[k-means++]", "cluster[random]", "cluster[pca]"]


LOCAL = pinning.local("test")


def run(engine: FakeEngine, tmp_path: Path, jobs: int | None = None, images: pinning.Images = LOCAL) -> list[str]:
    lines: list[str] = []
    LocalRunner(engine, tmp_path, log=lines.append, jobs=jobs).run("r1", spec.PipelineParams(), images)
    return lines


def pinned(registry: str = "127.0.0.1:5000") -> pinning.Images:
    return pinning.Images(pinning.DIGESTS, {step: f"{registry}/clusterflow/{step}@sha256:{str(i) * 64}"
                                            for i, step in enumerate(spec.STEPS, start=1)})


def test_a_missing_pinned_image_is_pulled_by_digest_once_before_any_step_runs(tmp_path):
    images = pinned()
    engine = FakeEngine(seconds=0.01, present={images.refs["prepare"]})
    lines = run(engine, tmp_path, images=images)
    assert engine.pulls == [(f"127.0.0.1:5000/clusterflow/{step}", f"sha256:{str(i) * 64}")
                            for i, step in enumerate(spec.STEPS, start=1) if step != "prepare"]
    pulled = [line for line in lines if line.startswith("pulled ")]
    assert [line.split()[1] for line in pulled] == [images.refs[s] for s in ("cluster", "evaluate", "report")]
    assert all(re.fullmatch(r"pulled \S+ in \d+\.\d s", line) for line in pulled), pulled
    assert lines.index(pulled[-1]) < next(i for i, line in enumerate(lines) if line.startswith("==> "))


def test_a_pinned_step_records_its_manifest_digest_a_local_one_the_image_id_never_repo_digests(tmp_path):
    images = pinned()
    engine = FakeEngine(seconds=0.01)
    run(engine, tmp_path, images=images)
    env = engine.environments["cluster[pca]"]
    assert env == {"CLUSTERFLOW_IMAGE": images.refs["cluster"], "CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "2" * 64}
    engine = FakeEngine(seconds=0.01)
    run(engine, tmp_path)
    assert engine.environments["cluster[pca]"] == {"CLUSTERFLOW_IMAGE": "clusterflow/cluster:test",
                                                   "CLUSTERFLOW_IMAGE_DIGEST": "sha256:" + "0" * 64}


def test_a_missing_local_image_is_an_error_before_any_container_and_never_pulled(tmp_path):
    engine = FakeEngine(present=set(spec.local_images("test").values()) - {"clusterflow/report:test"})
    with pytest.raises(PipelineImageMissing, match=r"^image clusterflow/report:test not found: build the images"):
        run(engine, tmp_path)
    assert engine.pulls == [] and engine.started == []


def test_a_failed_pull_names_the_image_and_what_to_check(tmp_path):
    class Unreachable(FakeEngine):
        def pull(self, repository: str, tag: str):
            raise docker.errors.APIError("500", explanation="Get http://127.0.0.1:5000/v2/: connection refused")

    engine = Unreachable(present=set())
    with pytest.raises(PipelineImageMissing, match=r"^image 127.0.0.1:5000/clusterflow/prepare@sha256:1{64} the pull "
                                                   r"failed \(Get .*connection refused\): check that the registry"):
        run(engine, tmp_path, images=pinned())
    assert engine.started == []


def test_the_cluster_variants_run_at_once_and_the_stages_in_order(tmp_path):
    engine = FakeEngine(clusters_together=3)
    lines = run(engine, tmp_path)
    assert engine.most_at_once == 3
    started = engine.steps_started
    assert started[0] == "prepare" and sorted(started[1:4]) == sorted(VARIANTS)
    assert started[4:] == ["evaluate", "report"]
    assert sorted(engine.removed) == sorted(engine.started)
    assert all(line.startswith(("==> ", "[")) for line in lines)  # whole lines, never interleaved


def test_jobs_caps_how_many_run_at_once(tmp_path):
    engine = FakeEngine(seconds=0.05)
    run(engine, tmp_path, jobs=1)
    assert engine.most_at_once == 1 and len(engine.steps_started) == 6


def test_a_failed_variant_lets_the_others_finish_then_stops_the_run(tmp_path):
    engine = FakeEngine(exit_codes={"cluster[random]": 1})
    with pytest.raises(PipelineFailed, match=r"step cluster\[random\] failed with exit code 1"):
        run(engine, tmp_path)
    assert sorted(engine.steps_started) == sorted(["prepare", *VARIANTS])  # no evaluate, no report
    assert "cluster[random] commit" not in engine.started  # a failed step's outputs are not cached
    assert sorted(engine.removed) == sorted(engine.started)


def test_a_launch_error_removes_the_running_variants_at_once(tmp_path):
    engine = FakeEngine(fail_start="cluster[pca]", slow=("cluster[k-means++]", "cluster[random]"))
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="engine refused to start cluster"):
        run(engine, tmp_path)
    assert time.monotonic() - started < 10  # not the 30 s the other variants would have run
    assert set(engine.removed) == {"prepare", "prepare commit", *VARIANTS}  # no commit of a removed variant


def test_each_task_but_the_report_is_followed_by_its_commit_with_the_store_writable_only_there(tmp_path):
    engine = FakeEngine(seconds=0.01)
    run(engine, tmp_path)
    for task in ["prepare", *VARIANTS, "evaluate"]:
        assert engine.started.index(f"{task} commit") == engine.started.index(task) + 1 or task in VARIANTS
        assert engine.started.index(f"{task} commit") > engine.started.index(task)
        # the commit: data root read-only, store read-write (the steps get it the other way round)
        assert engine.commit_mounts[f"{task} commit"] == {spec.DATA_MOUNT: True, spec.CACHE_MOUNT: False}
    assert "report commit" not in engine.started
    assert sorted(engine.removed) == sorted(engine.started)


def test_a_failed_commit_is_a_warning_and_the_run_goes_on(tmp_path):
    engine = FakeEngine(seconds=0.01, exit_codes={"prepare commit": 2})
    lines = run(engine, tmp_path)
    assert engine.steps_started[-1] == "report"
    assert "warning: prepare: the cache commit exited 2: its outputs are not cached (the run goes on)" in lines


def test_evaluate_is_committed_after_a_quality_gate_failure_and_the_run_still_fails(tmp_path):
    engine = FakeEngine(seconds=0.01, exit_codes={"evaluate": spec.QUALITY_GATE_EXIT})
    with pytest.raises(PipelineFailed, match="step evaluate failed with exit code 3"):
        run(engine, tmp_path)
    assert "evaluate commit" in engine.started and engine.steps_started[-1] == "report"


def test_a_task_whose_step_logged_a_cache_hit_gets_no_commit(tmp_path):
    engine = FakeEngine(seconds=0.01, lines={"prepare": "prepare: cache hit 0123456789ab (first computed in run x); "
                                                        "outputs reused"})
    run(engine, tmp_path)
    assert "prepare commit" not in engine.started and "evaluate commit" in engine.started


def test_a_sweep_runs_one_task_per_variant_and_k_at_most_the_default_cap_at_once(tmp_path):
    engine = FakeEngine(seconds=0.05, clusters_together=spec.PARALLEL_TASKS)
    params = spec.PipelineParams(k="2..6", inits=("k-means++", "random"))  # 10 cluster tasks
    LocalRunner(engine, tmp_path, log=lambda line: None).run("r1", params, LOCAL)
    clusters = [t for t in engine.steps_started if t.startswith("cluster[")]
    assert sorted(clusters) == sorted(f"cluster[{v}]" for v in params.variants) and len(clusters) == 10
    assert engine.most_at_once == spec.PARALLEL_TASKS
