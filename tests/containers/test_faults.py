"""Faults against real step containers: hardening and limits as created, SIGKILL mid-write, a full
or read-only data root, no engine, and concurrent runs.

``CLUSTERFLOW_STRESS_TRIALS=20 make test PYTEST_ARGS="-k kill"`` runs the kill test with 20 trials
(default 4); it prints its figures (``-s`` or the ``-ra`` summary shows them on failure).
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import random
import shutil
import signal
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import docker.errors
import docker.models.containers
import pytest

from clusterflow import dataroot, spec
from clusterflow_steps.contract import RunLayout
from clusterflow.runner import LocalRunner
from clusterflow.version import VERSION
from tests.containers.conftest import image
from tests.containers.test_pipeline import clusterflow_run, leftover_containers
from tests.fixtures.root import needs_root

pytestmark = pytest.mark.container

STRESS_ENV = "CLUSTERFLOW_STRESS_TRIALS"
MANIFEST = "manifest.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def output_hashes(folder: Path) -> dict[str, str]:
    """sha256 of every output file (the manifest, which holds timings, aside)."""
    return {p.relative_to(folder).as_posix(): sha256(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != MANIFEST}


def complete(folder: Path) -> dict:
    """``folder``'s manifest, after checking it names exactly the files present, each intact."""
    manifest = json.loads((folder / MANIFEST).read_text())
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    assert present == set(manifest["outputs"]), f"{folder}: files {present} vs manifest {manifest['outputs']}"
    for name, record in manifest["outputs"].items():
        assert (folder / name).stat().st_size == record["bytes"], f"{folder / name}: truncated"
        assert sha256(folder / name) == record["sha256"], f"{folder / name}: altered"
    return manifest


def prepare_task(run_id: str, **params) -> spec.Task:
    return spec.stages(run_id, spec.PipelineParams(**params), spec.local_images(VERSION))[0][0]


def docker_cmd(docker_cli: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([docker_cli, *args], capture_output=True, text=True, timeout=300)


# --- hardening and limits, as the engine created the container ------------------------------------

@pytest.mark.parametrize(("env", "memory", "nano_cpus"), [
    ({}, 2 << 30, round(min(2, os.cpu_count() or 1) * 1e9)),
    ({spec.STEP_MEMORY_ENV: "768m", spec.STEP_CPUS_ENV: "1.5"}, 768 << 20, 1_500_000_000),
])
def test_the_runner_creates_hardened_limited_containers(engine, data_dir, monkeypatch, env, memory, nano_cpus):
    for name in (spec.STEP_MEMORY_ENV, spec.STEP_CPUS_ENV):
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    inspected = []
    real_remove = docker.models.containers.Container.remove

    def remove(container, **kwargs):  # what `docker inspect` says, just before the runner removes it
        container.reload()
        inspected.append(container.attrs)
        return real_remove(container, **kwargs)

    monkeypatch.setattr(docker.models.containers.Container, "remove", remove)
    runner = LocalRunner(engine, data_dir, log=lambda line: None)
    dataroot.prepare_run_dir(data_dir, "hardened")
    task = prepare_task("hardened", dataset="synthetic", n_samples=200)
    assert runner.run_task(task, "hardened", spec.mounts(str(data_dir)), runner.ensure_image(task.image)) == 0
    attrs, = inspected
    host = attrs["HostConfig"]
    assert host["NetworkMode"] == "none"
    assert host["ReadonlyRootfs"] is True
    assert host["Tmpfs"] == {"/tmp": "rw,nosuid,nodev,noexec,size=512m"}
    assert host["PidsLimit"] == 256
    assert host["CapDrop"] == ["ALL"]
    assert host["SecurityOpt"] == ["no-new-privileges"]
    assert host["Privileged"] is False
    assert host["Memory"] == memory and host["NanoCpus"] == nano_cpus
    assert attrs["Config"]["User"] == runner.container_user() != "" and not attrs["Config"]["User"].startswith("0")
    assert attrs["State"]["ExitCode"] == 0 and attrs["State"]["OOMKilled"] is False
    assert leftover_containers(engine, "hardened") == []


def test_the_memory_limit_is_enforced_and_leaves_nothing_partial(engine, data_dir, monkeypatch):
    monkeypatch.setenv(spec.STEP_MEMORY_ENV, "64m")
    runner = LocalRunner(engine, data_dir, log=lambda line: None)
    dataroot.prepare_run_dir(data_dir, "oom")
    task = prepare_task("oom", dataset="synthetic", n_samples=400_000)  # ~200 MB of blobs
    digest = runner.ensure_image(task.image)
    assert runner.run_task(task, "oom", spec.mounts(str(data_dir)), digest) == 137  # SIGKILL by the OOM killer
    assert not (data_dir / "runs/oom/prepare").exists()


# --- SIGKILL at random moments ---------------------------------------------------------------------

KILL_PARAMS = {"dataset": "synthetic", "n_samples": 400_000, "seed": 0, "cache": False}  # ~100 MB written
PREVIOUS_PARAMS = {"dataset": "synthetic", "n_samples": 2_000, "seed": 1, "cache": False}


def step_container(engine, run_id: str, deadline: float, task: str | None = None):
    labels = [f"{spec.LABEL_PREFIX}.dag_id=local", f"{spec.LABEL_PREFIX}.run_id={run_id}",
              *([f"{spec.LABEL_PREFIX}.task_id={task}"] if task else [])]
    while time.monotonic() < deadline:
        found = engine.api.containers(all=True, filters={"label": labels})  # no inspect: no race
        if found:
            return found[0]["Id"]
        time.sleep(0.01)
    raise AssertionError(f"no container for run {run_id}")


# The mid-write trials' step runs at this many CPUs: ~10 s of imports before its first file, then
# seconds of writing (not the ~0.3 s it takes at full speed), so this process, however starved by
# a loaded machine, stops it mid-write (20 runs in a row beside a CPU hog).
SLOW_CPUS = 0.1


class Started:
    """The engine's client for a runner: each container it starts is reported, with its process,
    by the runner's own thread right after the start (no later look-up that the step can outrun)."""

    def __init__(self, engine: docker.DockerClient):
        self.engine, self.started = engine, queue.Queue()

    @property
    def containers(self) -> Started:
        return self

    def create(self, *args, **kwargs) -> docker.models.containers.Container:
        container = self.engine.containers.create(*args, **kwargs)
        start = container.start

        def started(**options) -> None:
            start(**options)
            container.reload()
            self.started.put((container.id, container.attrs["State"]["Pid"]))

        container.start = started
        return container

    def __getattr__(self, name: str):
        return getattr(self.engine, name)


def slowed(engine: docker.DockerClient, data_dir: Path) -> tuple[Started, LocalRunner]:
    """A runner whose steps run at :data:`SLOW_CPUS`, and what reports each container it starts."""
    reporting = Started(engine)
    return reporting, LocalRunner(reporting, data_dir, log=lambda line: None,  # type: ignore[arg-type]
                                  limits=spec.StepLimits(spec.step_limits().memory, SLOW_CPUS))


def stop_at_first_file(pid: int, run_dir: Path) -> None:
    """SIGSTOP the step's process (the container's PID 1, python) as soon as a file is in its
    temporary output directory: it still has ~100 MB to write, fsync and rename then, so the kill
    that follows lands mid-write however loaded the machine is, not 0-60 ms after by luck."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if list(run_dir.glob(".prepare.tmp-*/*")):
            os.kill(pid, signal.SIGSTOP)
            return
        time.sleep(0.002)
    raise AssertionError(f"prepare of {run_dir.name} wrote no file within 120 s")


def test_a_killed_step_leaves_the_previous_output_or_nothing(engine, data_dir):
    trials = int(os.environ.get(STRESS_ENV) or 4)
    rng = random.Random(os.environ.get("CLUSTERFLOW_STRESS_SEED", "0"))
    runner = LocalRunner(engine, data_dir, log=lambda line: None)
    reporting, slow = slowed(engine, data_dir)
    mounts = spec.mounts(str(data_dir))
    digest = runner.ensure_image(prepare_task("reference").image)

    dataroot.prepare_run_dir(data_dir, "reference")
    started = time.monotonic()
    assert runner.run_task(prepare_task("reference", **KILL_PARAMS), "reference", mounts, digest) == 0
    undisturbed = time.monotonic() - started
    reference = output_hashes(data_dir / "runs/reference/prepare")
    dataroot.prepare_run_dir(data_dir, "previous")
    assert runner.run_task(prepare_task("previous", **PREVIOUS_PARAMS), "previous", mounts, digest) == 0
    previous = complete(data_dir / "runs/previous/prepare")

    figures = {"trials": trials, "killed": 0, "finished_before_kill": 0, "killed_mid_write": 0,
               "truncated_files_left_in_tmp": 0, "killed_between_renames": 0, "left_previous": 0, "left_nothing": 0,
               "left_new": 0, "partial_artifacts": 0, "reruns_identical": 0}
    for trial in range(trials):
        run_id = f"kill-{trial}"
        run_dir = dataroot.prepare_run_dir(data_dir, run_id)
        had_previous = trial % 2 == 1
        if had_previous:
            shutil.copytree(data_dir / "runs/previous/prepare", run_dir / "prepare")
            uid, gid = (int(n) for n in runner.container_user().split(":"))  # the steps' user's, as a step wrote it
            for path in (run_dir / "prepare", *(run_dir / "prepare").iterdir()):
                os.chown(path, uid, gid, follow_symlinks=False)
        task = prepare_task(run_id, **KILL_PARAMS)
        codes: list[int] = []
        launcher = runner if trial % 2 == 0 else slow
        worker = threading.Thread(target=lambda codes=codes, task=task, run_id=run_id, digest=digest, launcher=launcher:
                                  codes.append(launcher.run_task(task, run_id, mounts, digest)))
        worker.start()
        if trial % 2 == 0:  # any moment of the step's life
            container = step_container(engine, run_id, time.monotonic() + 30)
            time.sleep(rng.uniform(0, undisturbed))
        else:  # mid-write, by construction: stopped (SIGSTOP) as its first file appears, then killed
            container, pid = reporting.started.get(timeout=60)
            stop_at_first_file(pid, run_dir)
        try:
            engine.api.kill(container)  # SIGKILL
        except docker.errors.APIError:
            pass  # it had already exited
        worker.join(60)
        assert codes and codes[0] in (0, 137), codes
        figures["killed" if codes[0] == 137 else "finished_before_kill"] += 1
        written = [p for p in run_dir.glob(".prepare.tmp-*/*") if p.is_file()]
        if written:  # a killed writer's leftover holding files: the kill landed mid-write
            figures["killed_mid_write"] += 1
            reference_sizes = {p.name: p.stat().st_size for p in (data_dir / "runs/reference/prepare").iterdir()}
            if any(p.stat().st_size < reference_sizes[p.name] for p in written):
                figures["truncated_files_left_in_tmp"] += 1
        if list(run_dir.glob(".prepare.old-*")):
            figures["killed_between_renames"] += 1
        target = run_dir / "prepare"
        try:
            if target.exists():
                manifest = complete(target)
                state = "new" if manifest["params"]["seed"] == KILL_PARAMS["seed"] else "previous"
                assert state == "new" or had_previous
                if state == "previous":
                    assert manifest["outputs"] == previous["outputs"]
            else:
                state = "nothing"
            for entry in (data_dir / "cache").glob("prepare/*"):  # the store, where a killed step got that far
                if not entry.name.startswith("."):
                    complete(entry)
        except AssertionError:
            figures["partial_artifacts"] += 1
            raise
        figures[f"left_{state}"] += 1
        assert runner.run_task(task, run_id, mounts, digest) == 0  # the re-run
        complete(target)
        assert output_hashes(target) == reference
        figures["reruns_identical"] += 1
    print(f"\nkill figures (undisturbed step {undisturbed:.1f} s): {json.dumps(figures)}")
    assert figures["partial_artifacts"] == 0 and figures["reruns_identical"] == trials
    assert figures["killed"] >= trials // 2 and figures["killed_mid_write"] >= trials // 2, figures
    assert leftover_containers(engine, "kill-0") == []


# --- SIGKILL at chosen system calls: cluster, evaluate and report -----------------------------------

@pytest.fixture(scope="module")
@needs_root  # strace attaches to a process of the steps' user
def strace() -> str:
    found = shutil.which("strace")
    if not found:
        pytest.fail("the atomicity tests need strace: apt-get install strace", pytrace=False)
    return found


def run_killed_at(engine, runner: LocalRunner, task, run_id: str, mounts, digest: str, strace: str,
                  syscall: str, when: int) -> int:
    """Run ``task`` with its step stopped (SIGSTOP) as soon as its container has a process, strace
    attached to it, then resumed: the kernel kills it (SIGKILL, the call not made) on its
    ``when``-th ``syscall``, a point in its life chosen beforehand. The step's exit code."""
    codes: list[int] = []
    worker = threading.Thread(target=lambda: codes.append(runner.run_task(task, run_id, mounts, digest)), daemon=True)
    worker.start()
    container = step_container(engine, run_id, time.monotonic() + 30, task.name)
    pid = 0
    while not pid:
        try:
            pid = engine.api.inspect_container(container)["State"]["Pid"]
        except docker.errors.NotFound:  # it ended (and was removed) before it could be stopped
            worker.join(60)
            raise AssertionError(f"{task.name} ended before it was stopped, exit code {codes}") from None
        time.sleep(0.001)
    os.kill(pid, signal.SIGSTOP)  # still importing: nothing of its output written yet
    calls = "rename,renameat,renameat2" if syscall == "rename" else syscall
    tracer = subprocess.Popen([strace, "-f", "-qq", "-p", str(pid), "-e", f"trace={calls}",
                               "-e", f"inject={calls}:error=EIO:signal=KILL:when={when}", "-o", "/dev/null"],
                              stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while f"TracerPid:\t{tracer.pid}" not in Path(f"/proc/{pid}/status").read_text():
        assert time.monotonic() < deadline and tracer.poll() is None, tracer.stderr.read() if tracer.stderr else ""
        time.sleep(0.005)
    os.kill(pid, signal.SIGCONT)
    worker.join(120)
    tracer.wait(30)
    return codes[0]


# (syscall, its n-th call): written but not fsynced; fsynced but not renamed; with a previous
# output, the previous one moved aside but the new one not yet in its place.
KILL_POINTS_FIRST = (("fsync", 1), ("rename", 1))
KILL_POINT_BETWEEN_RENAMES = ("rename", 2)


@pytest.mark.parametrize("step", ["cluster", "evaluate", "report"])
def test_a_later_step_killed_at_a_chosen_call_leaves_the_previous_output_or_nothing(engine, data_dir, strace,
                                                                                  step):
    """SIGKILL atomicity beyond prepare (whose kills land at random moments above): each later
    step is killed where it matters, deterministically, and what is left at its target is its
    previous output, whole, or nothing; its re-run writes the bytes an undisturbed run wrote."""
    runner = LocalRunner(engine, data_dir, log=lambda line: None)
    run_id = f"atomic-{step}"
    stages = spec.stages(run_id, spec.PipelineParams(inits=("pca",), cache=False), spec.local_images(VERSION))
    before = [task for stage in stages for task in stage][:[t.name.split("[")[0] for stage in stages
                                                              for t in stage].index(step)]
    (task,) = [t for stage in stages for t in stage if t.name.split("[")[0] == step]
    mounts = spec.mounts(str(data_dir))
    digest = runner.ensure_image(task.image)
    dataroot.prepare_run_dir(data_dir, run_id)
    for upstream in before:
        assert runner.run_task(upstream, run_id, mounts, runner.ensure_image(upstream.image)) == 0, upstream.name
    target = RunLayout(data_dir, run_id).step_dir(step, task.variant)

    for syscall, when in KILL_POINTS_FIRST:  # no previous output: nothing is left
        assert run_killed_at(engine, runner, task, run_id, mounts, digest, strace, syscall, when) == 137
        assert not target.exists(), (syscall, when, sorted(target.parent.iterdir()))
        leftovers = list(target.parent.glob(f".{target.name}.tmp-*/*"))
        assert leftovers, (syscall, when)  # it got as far as writing: the kill landed where chosen
    assert runner.run_task(task, run_id, mounts, digest) == 0
    # what an undisturbed run wrote (the report's own, bar the time it states it was generated at)
    reference = output_hashes(target) if step != "report" else complete(target)["outputs"].keys()
    complete(target)

    assert run_killed_at(engine, runner, task, run_id, mounts, digest, strace, "rename", 1) == 137
    assert same_outputs(target, reference)  # the previous output, whole
    assert run_killed_at(engine, runner, task, run_id, mounts, digest, strace, *KILL_POINT_BETWEEN_RENAMES) == 137
    assert not target.exists() and list(target.parent.glob(f".{target.name}.old-*"))  # moved aside: nothing

    assert runner.run_task(task, run_id, mounts, digest) == 0
    assert same_outputs(target, reference)
    # The dead writers' leftovers go once a minute old (a live writer could have just made its
    # directory), so this re-run kept them; aged, the next one removes them all.
    leftovers = siblings(target)
    assert len(leftovers) == 5, leftovers  # 4 temporary directories and the previous output moved aside
    age(*leftovers)
    assert runner.run_task(task, run_id, mounts, digest) == 0
    assert same_outputs(target, reference)
    assert siblings(target) == []
    assert leftover_containers(engine, run_id) == []


def same_outputs(target: Path, reference) -> bool:
    """``target`` is whole (its manifest's files, each intact) and holds ``reference``: the
    undisturbed run's hashes, or for the report (which states when it was generated) its files."""
    files = complete(target)["outputs"].keys()
    return output_hashes(target) == reference if isinstance(reference, dict) else files == reference


def siblings(target: Path) -> list[Path]:
    return sorted(target.parent.glob(f".{target.name}.*-*"))


def age(*trees: Path, seconds: float = 120) -> None:
    """Make every file and directory in ``trees`` ``seconds`` old."""
    then = time.time() - seconds
    for tree in trees:
        for path in (tree, *tree.rglob("*")):
            os.utime(path, (then, then), follow_symlinks=False)


def test_a_live_writers_directory_is_kept_however_old_while_a_dead_ones_goes(engine, data_dir):
    """flock liveness across containers: a prepare stopped mid-write holds the lock on its
    temporary directory; another prepare of the same target, in its own container (another pid
    namespace), removes a dead writer's old leftover and keeps the live one's, aged alike."""
    runner = LocalRunner(engine, data_dir, log=lambda line: None)
    reporting, slow = slowed(engine, data_dir)
    mounts = spec.mounts(str(data_dir))
    task = prepare_task("live", **KILL_PARAMS)
    digest = runner.ensure_image(task.image)
    run_dir = dataroot.prepare_run_dir(data_dir, "live")
    codes: list[int] = []
    stalled = threading.Thread(target=lambda: codes.append(slow.run_task(task, "live", mounts, digest)),
                               daemon=True)
    stalled.start()
    container, pid = reporting.started.get(timeout=60)
    try:
        stop_at_first_file(pid, run_dir)
        (live,) = siblings(run_dir / "prepare")
        dead = run_dir / ".prepare.tmp-7-0badf00d"  # a killed writer's: nobody holds its lock
        dead.mkdir()
        (dead / "features.npy").write_bytes(b"half")
        for path in (dead, dead / "features.npy"):  # a step's, as a step wrote it
            os.chown(path, *runner.steps_run_as())
        age(dead, live)
        assert runner.run_task(prepare_task("live", **PREVIOUS_PARAMS), "live", mounts, digest) == 0
        assert siblings(run_dir / "prepare") == [live]  # the dead one removed, the live one kept
        assert complete(run_dir / "prepare")["params"]["seed"] == PREVIOUS_PARAMS["seed"]
    finally:
        engine.api.kill(container)
        stalled.join(60)
    assert codes == [137]


# --- a data root that refuses writes -------------------------------------------------------------

@pytest.fixture
@needs_root  # mount
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs as the data root."""
    root = tmp_path / "full"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0777", "tmpfs", str(root)], check=True)
    yield root
    subprocess.run(["umount", str(root)], check=True)


def snapshot(root: Path) -> dict[str, bytes | None]:
    return {p.relative_to(root).as_posix(): None if p.is_dir() else p.read_bytes() for p in root.rglob("*")}


def test_a_full_data_root_exits_2_in_one_line_and_keeps_the_previous_output(docker_cli, small_tmpfs):
    volume = f"{small_tmpfs}:/data"
    first = docker_cmd(docker_cli, "run", "--rm", "-v", volume, image("prepare"), "--run-id", "r",
                   "--dataset", "synthetic", "--n-samples", "300")
    assert first.returncode == 0, first.stderr
    before = snapshot(small_tmpfs)
    result = docker_cmd(docker_cli, "run", "--rm", "-v", volume, image("prepare"), "--run-id", "r",
                    "--dataset", "synthetic", "--n-samples", "20000")  # 5 MB of features
    assert result.returncode == 2, result.stderr
    line, = result.stderr.strip().splitlines()
    assert line == "Error: no space left under /data/runs/r: free space or use a bigger data root"
    assert snapshot(small_tmpfs) == before  # previous output intact, temporary directory gone


def test_a_read_only_data_root_exits_2_in_one_line(docker_cli, data_dir):
    first = docker_cmd(docker_cli, "run", "--rm", "-v", f"{data_dir}:/data", image("prepare"), "--run-id", "r",
                   "--dataset", "synthetic", "--n-samples", "300")
    assert first.returncode == 0, first.stderr
    before = snapshot(data_dir)
    for run_id in ("r", "new"):
        result = docker_cmd(docker_cli, "run", "--rm", "-v", f"{data_dir}:/data:ro", image("prepare"),
                        "--run-id", run_id, "--dataset", "synthetic", "--n-samples", "400")
        assert result.returncode == 2, result.stderr
        line, = result.stderr.strip().splitlines()
        assert line == (f"Error: the data root is read-only (writing under /data/runs/{run_id}): "
                        "mount it read-write (not :ro)")
    assert snapshot(data_dir) == before


# --- no engine -------------------------------------------------------------------------------------

def test_no_engine_at_start_is_one_line_naming_docker_host(tmp_path, monkeypatch):
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    result = clusterflow_run(tmp_path / "data", "--run-id", "r")
    assert result.returncode == 1
    line, = result.stderr.strip().splitlines()
    assert line.startswith("Error: no Docker engine answers at DOCKER_HOST=unix:///nonexistent.sock (")
    assert line.endswith("start one (scripts/ensure-docker.sh) or point DOCKER_HOST at one")
    assert "Traceback" not in result.stderr and not (tmp_path / "data").exists()


# --- concurrent runs -------------------------------------------------------------------------------

SMALL = ("--dataset", "synthetic", "--n-samples", "400", "--n-features", "6", "--n-centers", "4")
CONCURRENT = {  # c0, c1 and c3 share their prepare output (and cache entry)
    "c0": ("--seed", "0", "--init", "k-means++"),
    "c1": ("--seed", "0", "--init", "random", "--n-clusters", "3"),
    "c2": ("--seed", "1", "--init", "pca"),
    "c3": ("--seed", "0", "--init", "k-means++", "--n-clusters", "5"),
    "c4": ("--seed", "2", "--init", "random", "--n-init", "2"),
}


def scores(data_dir: Path, run_id: str) -> dict:
    metrics = json.loads((data_dir / "runs" / run_id / "evaluate/metrics.json").read_text())
    for figures in metrics["variants"].values():
        figures.pop("fit_seconds")
    return metrics


def test_five_concurrent_runs_are_isolated_and_equal_sequential_ones(engine, tmp_path):
    together, alone = tmp_path / "together", tmp_path / "alone"
    with ThreadPoolExecutor(len(CONCURRENT)) as pool:
        results = dict(zip(CONCURRENT, pool.map(lambda r: clusterflow_run(together, "--run-id", r, *SMALL,
                                                                            *CONCURRENT[r]), CONCURRENT), strict=True))
    runner = LocalRunner(engine, alone, log=lambda line: None)
    mounts = spec.mounts(str(alone.resolve()))
    for run_id, args in CONCURRENT.items():
        assert results[run_id].returncode == 0, results[run_id].stderr[-2000:]
        # the same containers one after another, alone (report aside: it adds no metrics)
        dataroot.prepare_run_dir(alone, run_id)
        params = {"dataset": "synthetic", "n_samples": 400, "n_features": 6, "n_centers": 4,
                  **{k.strip("-").replace("-", "_"): v for k, v in zip(args[::2], args[1::2], strict=True)}}
        params["inits"] = (params.pop("init"),)
        params = {k: v if k in ("dataset", "inits") else int(v) for k, v in params.items()}
        for stage in spec.stages(run_id, spec.PipelineParams(**params), spec.local_images(VERSION))[:3]:
            for task in stage:
                assert runner.run_task(task, run_id, mounts, runner.ensure_image(task.image)) == 0, task.name
        assert scores(together, run_id) == scores(alone, run_id), run_id
        for manifest in (together / "runs" / run_id).rglob(MANIFEST):
            assert json.loads(manifest.read_text())["run_id"] == run_id
            complete(manifest.parent)
        assert leftover_containers(engine, run_id) == []
    assert sorted(p.name for p in (together / "runs").iterdir()) == sorted(CONCURRENT)
    assert [p for p in together.rglob(".*")] == [], "stray temporary directories"
