"""Reproduce this step against a real engine: the digits pipeline, then `clusterflow reproduce` of a
cluster variant and of evaluate, a manifest whose output claim is false, a changed input, and the
docker run line of the report run for real next to the runner's own container."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from clusterflow import reproduce
from clusterflow_steps import launch

pytestmark = pytest.mark.container

RUN = "repro"
# The settings of a container that make it the step's sandbox (HostConfig) and what runs in it (Config).
HOST_CONFIG = ("NetworkMode", "ReadonlyRootfs", "Tmpfs", "CapDrop", "CapAdd", "SecurityOpt", "PidsLimit", "Mounts",
               "Privileged", "Binds", "IpcMode", "PidMode", "UsernsMode")
CONFIG = ("User", "Image", "Cmd", "Entrypoint", "WorkingDir")


def clusterflow(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), *args], capture_output=True,
                          text=True, timeout=600)


def reproduce_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return clusterflow("reproduce", "--data-dir", str(data_dir), "--run-id", RUN, *args)


@pytest.fixture(scope="module")
def digits_run(docker_cli, tmp_path_factory) -> Path:
    data_dir = tmp_path_factory.mktemp("reproduce") / "data"
    data_dir.mkdir()
    data_dir.chmod(0o777)
    result = clusterflow("run", "--data-dir", str(data_dir), "--run-id", RUN, "--init", "random", "--init", "k-means++")
    assert result.returncode == 0, result.stderr[-3000:]
    return data_dir


@pytest.mark.parametrize("step", [["--step", "cluster", "--variant", "random"], ["--step", "evaluate"]])
def test_a_step_reproduces_identically(digits_run, step):
    result = reproduce_cli(digits_run, *step)
    assert (result.returncode, result.stdout) == (0, "identical\n"), result.stderr[-3000:]


def copy_of(data_dir: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy, symlinks=True)
    return copy


def test_an_output_that_is_not_what_the_manifest_claims_is_named(digits_run, tmp_path):
    copy = copy_of(digits_run, tmp_path)
    path = copy / "runs" / RUN / "cluster/random/manifest.json"
    manifest = json.loads(path.read_text())
    manifest["outputs"]["labels.npy"]["sha256"] = "0" * 64
    path.write_text(json.dumps(manifest))
    result = reproduce_cli(copy, "--step", "cluster", "--variant", "random", "--keep")
    assert (result.returncode, result.stdout) == (1, "differs: labels.npy\n"), result.stderr[-3000:]
    kept = Path(result.stderr.strip().splitlines()[-1].removeprefix("scratch data root kept: "))
    try:  # --keep: the re-run's outputs stay for a look
        rerun = kept / "runs" / RUN / "cluster/random/labels.npy"
        assert rerun.read_bytes() == (copy / "runs" / RUN / "cluster/random/labels.npy").read_bytes()
    finally:
        shutil.rmtree(kept)


def test_a_changed_input_is_refused_before_anything_runs(digits_run, tmp_path):
    copy = copy_of(digits_run, tmp_path)
    features = copy / "runs" / RUN / "prepare/features.npy"
    data = features.read_bytes()
    features.write_bytes(data[:-1] + bytes([data[-1] ^ 0x40]))  # one float of the last sample changed
    result = reproduce_cli(copy, "--step", "cluster", "--variant", "random")
    assert result.returncode == 2 and "inputs changed since the run" in result.stderr, result.stderr[-3000:]
    assert len(result.stderr.strip().splitlines()) == 1 and "==>" not in result.stdout


class Recording:
    """A docker client that records how the runner created its containers."""

    def __init__(self, client: Any) -> None:
        self._client, self.created = client, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    @property
    def containers(self) -> Any:
        outer = self

        class Containers:
            def __getattr__(self, name: str) -> Any:
                return getattr(outer._client.containers, name)

            def create(self, *args: Any, **kwargs: Any) -> Any:
                container = outer._client.containers.create(*args, **kwargs)
                outer.created.append(outer._client.api.inspect_container(container.id))
                return container

        return Containers()


def test_the_docker_run_line_gives_the_runners_container(digits_run, engine, tmp_path):
    """The independent check that the rendered line is exact: run it for real (docker create), then
    compare the container the engine made of it with the one the runner made (its memory and CPU
    limits, deployment settings no manifest records, aside)."""
    manifest = json.loads((digits_run / "runs" / RUN / "cluster/random/manifest.json").read_text())
    found = reproduce.plan(manifest, RUN, "cluster", "random")
    scratch = tmp_path / "scratch"
    client = Recording(engine)
    assert reproduce.reproduce(client, digits_run, RUN, found, scratch, log=lambda line: None) == []
    [runner] = client.created
    env = {e.split("=", 1)[0]: e.split("=", 1)[1] for e in runner["Config"]["Env"] if e.startswith("CLUSTERFLOW_")}
    argv = launch.docker_run(found.image, list(found.args), data_root=str(scratch), user=runner["Config"]["User"],
                             digest=env.get("CLUSTERFLOW_IMAGE_DIGEST"))
    assert argv[:2] == ["docker", "run"]
    created = subprocess.run(["docker", "create", *argv[2:]], capture_output=True, text=True, timeout=60)
    assert created.returncode == 0, created.stderr
    container_id = created.stdout.strip()
    try:
        line = engine.api.inspect_container(container_id)
    finally:
        engine.api.remove_container(container_id, force=True)
    for key in HOST_CONFIG:
        assert line["HostConfig"].get(key) == runner["HostConfig"].get(key), key
    for key in CONFIG:
        assert line["Config"].get(key) == runner["Config"].get(key), key
    assert {e for e in line["Config"]["Env"] if e.startswith("CLUSTERFLOW_")} == \
        {e for e in runner["Config"]["Env"] if e.startswith("CLUSTERFLOW_")}
    assert line["HostConfig"]["AutoRemove"] is True  # --rm: nothing left behind on the laptop
