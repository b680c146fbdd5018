"""The gate in front of the real Docker engine: escapes are refused, a step container runs through
it end to end (the local runner's docker SDK calls and DockerOperator's attach-before-start), and
the same holds for the gate running in its own image, with the socket and its group only."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from clusterflow import dataroot, runner, spec
from clusterflow.gate import config
from clusterflow.version import VERSION
from tests.gate.conftest import free_port, serve

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"
SOCKET = "/var/run/docker.sock"
PREPARE = f"clusterflow/prepare:{VERSION}"


@pytest.fixture
def data_dir(data_dir: Path) -> Path:
    """The shared data root (the gate's step user 10001 can write it), with the run ``r1`` ready."""
    dataroot.prepare_run_dir(data_dir, "r1")
    return data_dir


LIMITS = {"CLUSTERFLOW_STEP_MEMORY": "1g", "CLUSTERFLOW_STEP_CPUS": "1"}


def gate_env(data_dir: Path) -> dict[str, str]:
    return {config.SOCKET_ENV: SOCKET, config.DATA_SOURCE_ENV: str(data_dir), config.IMAGE_TAG_ENV: VERSION, **LIMITS}


@pytest.fixture
def gate(docker_cli: str, data_dir: Path) -> Iterator[docker.DockerClient]:
    for url in serve(gate_env(data_dir)):
        yield docker.DockerClient(base_url=url.replace("http://", "tcp://"))


@pytest.fixture(scope="session")
def gate_image(docker_cli: str) -> str:
    build = subprocess.run([str(REPO / "scripts/build-stack-images.sh"), "--gate"], capture_output=True, text=True,
                           timeout=900)
    if build.returncode:
        pytest.fail(f"building the launch gate image failed:\n{build.stderr[-4000:]}", pytrace=False)
    return build.stdout.strip().removeprefix("LAUNCH_GATE_IMAGE=")


def assert_escapes_refused(client: docker.DockerClient, data_dir: Path) -> None:
    with pytest.raises(docker.errors.APIError, match="HostConfig.Privileged not allowed") as raised:
        client.containers.create(PREPARE, ["--help"], user=spec.STEP_USER, privileged=True)
    assert raised.value.response.status_code == 403
    with pytest.raises(docker.errors.APIError, match="HostConfig.Binds") as raised:
        client.containers.create(PREPARE, ["--help"], user=spec.STEP_USER, volumes=["/:/host"])
    assert raised.value.response.status_code == 403
    with pytest.raises(docker.errors.APIError, match="GET /containers/json is not a step container call"):
        client.containers.list()


def run_prepare(client: docker.DockerClient, data_dir: Path) -> list[str]:
    lines: list[str] = []
    local = runner.LocalRunner(client, data_dir, log=lines.append, limits=spec.step_limits(LIMITS),
                               run_as=(spec.STEP_UID, spec.STEP_GID))
    task = spec.stages("r1", spec.PipelineParams(), spec.local_images(VERSION))[0][0]
    assert local.run_task(task, "r1", spec.mounts(str(data_dir)), local.ensure_image(task.image)) == 0, lines
    return lines


def test_escapes_are_refused_and_a_step_runs_through_the_gate(gate: docker.DockerClient,
                                                              engine: docker.DockerClient,
                                                              data_dir: Path) -> None:
    assert_escapes_refused(gate, data_dir)
    run_prepare(gate, data_dir)
    assert (data_dir / "runs/r1/prepare/features.npy").is_file()
    assert not engine.containers.list(all=True, filters={"label": "io.clusterflow.run_id=r1"})


def test_dockeroperator_streams_a_step_and_its_commit_through_the_gate(gate: docker.DockerClient, data_dir: Path,
                                                                       engine: docker.DockerClient) -> None:
    url = gate.api.base_url.replace("http://", "tcp://")
    probe = subprocess.run([str(AIRFLOW_PYTHON), str(Path(__file__).with_name("operator_probe.py")), url,
                            str(data_dir)], capture_output=True, text=True, timeout=300, cwd=REPO,
                           env={**os.environ, **LIMITS})
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert (data_dir / "runs/r1/prepare/features.npy").is_file()
    assert list((data_dir / "cache").iterdir()), "the commit container filled the cache store"
    # each container's output came back over the attach stream (the upgraded connection)
    assert "prepare: wrote /data/runs/r1/prepare" in probe.stdout and "as cache entry" in probe.stdout
    assert not engine.containers.list(all=True, filters={"label": "io.clusterflow.run_id=r1"})


def test_the_gate_image_holds_the_socket_and_nothing_more(gate_image: str,
                                                          engine: docker.DockerClient,
                                                          data_dir: Path) -> None:
    port = free_port()
    container = engine.containers.run(
        gate_image, detach=True, remove=True, read_only=True, cap_drop=["ALL"], security_opt=["no-new-privileges"],
        group_add=[str(os.stat(SOCKET).st_gid)], volumes={SOCKET: {"bind": SOCKET, "mode": "rw"}},
        environment={k: v for k, v in gate_env(data_dir).items() if k != config.SOCKET_ENV},
        ports={"2375/tcp": ("127.0.0.1", port)}, labels={"io.clusterflow.test": "gate"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                assert urllib.request.urlopen(f"http://127.0.0.1:{port}/_ping", timeout=2).read() == b"OK"
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise AssertionError(container.logs().decode()) from None
                time.sleep(0.2)
        assert engine.api.inspect_container(container.id)["Config"]["User"] == "10002:10002"
        client = docker.DockerClient(base_url=f"tcp://127.0.0.1:{port}")
        assert_escapes_refused(client, data_dir)
        run_prepare(client, data_dir)
        assert "refused POST /v1.41/containers/create: HostConfig.Privileged not allowed" in container.logs().decode()
    finally:
        container.stop(timeout=5)
