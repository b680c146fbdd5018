"""What the gate forwards: the two renderings' step containers, rebuilt canonical, and the calls
a launch makes on them, in front of the recording fake engine."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker
import pytest

from clusterflow import pinning, runner, spec
from clusterflow.gate import config
from tests.gate import fake_engine
from tests.gate.conftest import PINNED_PREPARE, PUBLISHED, REGISTRY, serve
from tests.gate.test_refusals import raw

REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"
# The engine's spelling of a step container, as the gate forwards it: nothing else.
FORWARDED_KEYS = {"Image", "User", "Cmd", "Env", "Labels", "AttachStdout", "AttachStderr", "HostConfig"}
HARDENED = {"NetworkMode": "none", "ReadonlyRootfs": True, "CapDrop": ["ALL"], "SecurityOpt": ["no-new-privileges"],
            "Tmpfs": {"/tmp": "rw,nosuid,nodev,noexec,size=512m"}, "PidsLimit": 256,
            "Memory": 2 << 30, "NanoCpus": 2_000_000_000}


# The user the gate admits, whoever runs the tests (the runner would pick the caller's own).
GATED = (spec.STEP_UID, spec.STEP_GID)


def creates(fake_docker: fake_engine.Engine) -> list[dict[str, Any]]:
    return [r for r in fake_docker.requests if r["path"].endswith("/containers/create")]


def client(url: str) -> docker.DockerClient:
    return docker.DockerClient(base_url=url.replace("http://", "tcp://"), version="1.41")


def assert_canonical(request: dict[str, Any], mounts: list[dict[str, Any]]) -> dict[str, Any]:
    """Re-serialised (compact, only the engine's keys) with the hardened host config."""
    body = json.loads(request["body"])
    assert request["body"] == json.dumps(body, separators=(",", ":"))
    assert set(body) == FORWARDED_KEYS and body["User"] == "10001:10001"
    assert body["HostConfig"] == {**HARDENED, "Mounts": mounts}
    return body


def test_the_local_runner_launches_a_step_and_its_commit_through_the_gate(gate: str, fake_docker: Any,
                                                                          data_root: Path) -> None:
    local = runner.LocalRunner(client(gate), data_root, log=lambda line: None, run_as=GATED)
    task = spec.stages("r1", spec.PipelineParams(), spec.local_images("0.1.0"))[0][0]
    digest = local.ensure_image(task.image)
    assert local.run_task(task, "r1", spec.mounts(str(data_root)), digest) == 0
    assert local.run_task(task.commit(), "r1", spec.mounts(str(data_root), commit=True), digest) == 0
    step, commit = creates(fake_docker)
    data, cache = str(data_root), f"{data_root}/cache"
    assert_canonical(step, [{"Target": "/data", "Source": data, "Type": "bind", "ReadOnly": False},
                            {"Target": "/data/cache", "Source": cache, "Type": "bind", "ReadOnly": True}])
    body = assert_canonical(commit, [{"Target": "/data", "Source": data, "Type": "bind", "ReadOnly": True},
                                     {"Target": "/data/cache", "Source": cache, "Type": "bind", "ReadOnly": False}])
    assert body["Cmd"][-1] == "--commit-cache"


def test_a_dataset_from_the_allowed_input_directory_is_mounted_read_only(gate: str, fake_docker: Any, data_root: Path,
                                                                         inputs: Path) -> None:
    (inputs / "link.csv").symlink_to(inputs / "points.csv")
    params = spec.PipelineParams(dataset=str(inputs / "link.csv"))
    local = runner.LocalRunner(client(gate), data_root, log=lambda line: None, run_as=GATED)
    task = spec.stages("r1", params, spec.local_images("0.1.0"))[0][0]
    assert local.run_task(task, "r1", spec.mounts(str(data_root), params.dataset), local.ensure_image(task.image)) == 0
    (request,) = creates(fake_docker)
    mounts = json.loads(request["body"])["HostConfig"]["Mounts"]
    # the link as the gate resolved it: what is mounted is what was checked
    assert mounts[2] == {"Target": "/input/link.csv", "Source": str(inputs / "points.csv"), "Type": "bind",
                         "ReadOnly": True}


LIMITS = {"CLUSTERFLOW_STEP_MEMORY": "2g", "CLUSTERFLOW_STEP_CPUS": "2"}


@pytest.fixture
def volume_gate(fake_docker: fake_engine.Engine, tmp_path: Path) -> Iterator[str]:
    yield from serve({config.SOCKET_ENV: str(tmp_path / "engine.sock"), config.DATA_SOURCE_ENV: "clusterflow-data",
                      **LIMITS})


def test_dockeroperator_launches_a_step_and_its_commit_through_the_gate(volume_gate: str, fake_docker: Any) -> None:
    probe = subprocess.run([str(AIRFLOW_PYTHON), str(Path(__file__).with_name("operator_probe.py")),
                            volume_gate.replace("http://", "tcp://"), "clusterflow-data"],
                           capture_output=True, text=True, timeout=120, cwd=REPO, env={**os.environ, **LIMITS})
    assert probe.returncode == 0, probe.stderr[-3000:]
    step, commit = creates(fake_docker)
    assert (step["query"], commit["query"]) == ("name=clusterflow.r1.prepare", "name=clusterflow.r1.prepare.commit")
    # DockerOperator's defaults (ExposedPorts, PortBindings, Ulimits, LogConfig, CpuShares) are dropped
    assert_canonical(step, [
        {"Target": "/data", "Source": "clusterflow-data", "Type": "volume", "ReadOnly": False},
        {"Target": "/data/cache", "Source": "clusterflow-data-cache", "Type": "volume", "ReadOnly": True}])
    assert_canonical(commit, [
        {"Target": "/data", "Source": "clusterflow-data", "Type": "volume", "ReadOnly": True},
        {"Target": "/data/cache", "Source": "clusterflow-data-cache", "Type": "volume", "ReadOnly": False}])
    calls = [(r["method"], r["path"]) for r in fake_docker.requests]
    # the orphan check by name, then attach (upgraded), start, wait, remove: each on the full id
    assert ("DELETE", "/v1.41/containers/cfid0001") in calls and ("POST", "/v1.41/containers/cfid0001/attach") in calls
    attach = next(r for r in fake_docker.requests if r["path"].endswith("/attach"))
    headers = {k.lower(): v for k, v in attach["headers"].items()}
    assert (headers["connection"], headers["upgrade"]) == ("Upgrade", "tcp")


def test_calls_on_a_step_container_reach_it_by_its_full_id(gate: str, fake_docker: Any) -> None:
    api = client(gate).api
    api.start("clusterflow.r1.prepare")
    assert api.wait("clusterflow.r1.prepare")["StatusCode"] == 0
    assert api.logs("clusterflow.r1.prepare", follow=True) == b"hello\n"
    assert b"".join(api.attach("clusterflow.r1.prepare", stream=True)) == b"hello\n"  # through the upgrade
    api.remove_container("clusterflow.r1.prepare", force=True)
    forwarded = [(r["method"], r["path"]) for r in fake_docker.requests if not r["path"].endswith("/json")]
    assert forwarded == [("POST", "/v1.41/containers/cfid0001/start"), ("POST", "/v1.41/containers/cfid0001/wait"),
                         ("GET", "/v1.41/containers/cfid0001/logs"), ("POST", "/v1.41/containers/cfid0001/attach"),
                         ("DELETE", "/v1.41/containers/cfid0001")]


def test_a_missing_container_gets_the_engines_404(gate: str, fake_docker: Any) -> None:
    with pytest.raises(docker.errors.NotFound, match="No such container: gone"):
        client(gate).api.remove_container("gone", force=True)
    assert [(r["method"], r["path"]) for r in fake_docker.requests] == [("GET", "/v1.41/containers/gone/json")]


def test_ping_version_and_the_step_images(gate: str, fake_docker: Any) -> None:
    api = client(gate).api
    assert api.ping() is True and api.version()["ApiVersion"] == "1.41"
    assert api.images(name="clusterflow/prepare:0.1.0")
    assert api.inspect_image("clusterflow/prepare:0.1.0")["RepoTags"] == ["clusterflow/prepare:0.1.0"]
    assert raw(gate, "HEAD", "/_ping") == (200, {})  # the engine's Content-Length passed on, no body


def test_a_pinned_digest_is_pulled_through_and_its_progress_streams_back(pinned_gate: str, fake_docker: Any) -> None:
    progress = list(client(pinned_gate).api.pull(f"{REGISTRY}/clusterflow/prepare", tag=PUBLISHED["prepare"],
                                                 stream=True, decode=True))
    assert progress == fake_engine.PULL_PROGRESS
    (request,) = fake_docker.requests
    assert (request["method"], request["path"]) == ("POST", "/v1.41/images/create")
    assert urllib.parse.parse_qs(request["query"]) == {"fromImage": [f"{REGISTRY}/clusterflow/prepare"],
                                                       "tag": [PUBLISHED["prepare"]]}
    assert "X-Registry-Auth" not in request["headers"]


def test_the_local_runner_pulls_and_launches_a_pinned_step_through_the_gate(pinned_gate: str, fake_docker: Any,
                                                                             data_root: Path) -> None:
    lines: list[str] = []
    local = runner.LocalRunner(client(pinned_gate), data_root, log=lines.append, run_as=GATED)
    local.pull(PINNED_PREPARE, PUBLISHED["prepare"])  # what it does when the engine lacks the image
    images = {step: f"{REGISTRY}/clusterflow/{step}@{PUBLISHED[step]}" for step in spec.STEPS}
    task = spec.stages("r1", spec.PipelineParams(), images)[0][0]
    assert local.run_task(task, "r1", spec.mounts(str(data_root)), local.ensure_image(task.image)) == 0
    assert lines[0].startswith(f"pulled {PINNED_PREPARE} in ")
    body = json.loads(creates(fake_docker)[0]["body"])
    assert body["Image"] == PINNED_PREPARE
    assert body["Env"] == [f"CLUSTERFLOW_IMAGE={PINNED_PREPARE}", f"CLUSTERFLOW_IMAGE_DIGEST={PUBLISHED['prepare']}"]


def test_a_registry_gate_resolves_the_tag_once_and_admits_that_digest(registry_gate: str, fake_docker: Any) -> None:
    api = client(registry_gate).api
    images = pinning.resolve({pinning.REGISTRY_ENV: REGISTRY}, "0.1.0", pinning.engine_digests(api))
    assert images.refs["cluster"] == f"{REGISTRY}/clusterflow/cluster@{fake_engine.DISTRIBUTION_DIGEST}"
    asked = [r["path"] for r in fake_docker.requests if "/distribution/" in r["path"]]
    assert asked == [f"/v1.41/distribution/{REGISTRY}/clusterflow/{step}:0.1.0/json" for step in spec.STEPS]
    assert list(api.pull(f"{REGISTRY}/clusterflow/cluster", tag=fake_engine.DISTRIBUTION_DIGEST, stream=True,
                         decode=True)) == fake_engine.PULL_PROGRESS


def test_a_gate_with_pins_reads_its_digests_file_once_at_start(tmp_path: Path) -> None:
    path = tmp_path / "digests.json"
    path.write_text(json.dumps({"registry": REGISTRY, "version": "0.1.0", "commit": "c" * 40, "images": {
        name: f"{REGISTRY}/clusterflow/{name}@{digest}" for name, digest in PUBLISHED.items()}}))
    settings = config.from_env({config.DATA_SOURCE_ENV: "v", pinning.DIGESTS_ENV: str(path)}).settings
    path.unlink()  # a later change of the file does not change a running gate
    assert settings.pins == {step: f"{REGISTRY}/clusterflow/{step}@{PUBLISHED[step]}" for step in spec.IMAGES}
    assert settings.registry == REGISTRY


@pytest.mark.parametrize("env, problem", [
    ({}, "CLUSTERFLOW_DATA_SOURCE=''"),
    ({config.DATA_SOURCE_ENV: "v", pinning.DIGESTS_ENV: "/nonexistent.json"}, "digests file /nonexistent.json"),
    ({config.DATA_SOURCE_ENV: "v", pinning.REGISTRY_ENV: "https://r.example.org"}, "without a scheme"),
    ({config.DATA_SOURCE_ENV: "../data"}, "give the steps' data volume name or an absolute host path"),
    ({config.DATA_SOURCE_ENV: "v", config.INPUT_DIRS_ENV: "/srv:data"}, "'data' is not absolute"),
    ({config.DATA_SOURCE_ENV: "v", config.LISTEN_ENV: "2375"}, "give HOST:PORT"),
    ({config.DATA_SOURCE_ENV: "v", "CLUSTERFLOW_STEP_MEMORY": "lots"}, "CLUSTERFLOW_STEP_MEMORY='lots'"),
])
def test_unusable_settings_are_refused_with_one_line(env: dict[str, str], problem: str) -> None:
    with pytest.raises(ValueError, match="^[^\n]+$") as raised:
        config.from_env(env)
    assert problem in str(raised.value)


def test_the_gate_exits_2_with_one_line_on_a_bad_setting() -> None:
    gate = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "clusterflow.gate"], capture_output=True, text=True,
                          env={"PATH": os.environ["PATH"]}, timeout=60)
    assert (gate.returncode, gate.stderr.count("\n")) == (2, 1) and "CLUSTERFLOW_DATA_SOURCE" in gate.stderr
