"""Pinned images on the real engine: a run given the digests file of a publish (the session's
registry and publish of HEAD, tests/fixtures/registry.py) pulls every step image by its digest,
each manifest records that digest, a second run on the same data root hits the cache, and
DockerOperator pulls a pinned image through the launch gate."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import docker
import docker.errors
import pytest

from clusterflow import dataroot, spec
from tests.gate.conftest import serve

pytestmark = pytest.mark.container
REPO = Path(__file__).resolve().parents[2]
AIRFLOW_PYTHON = Path(os.environ.get("AIRFLOW_VENV", REPO / ".venv-airflow")) / "bin" / "python"
SOCKET = "/var/run/docker.sock"
LIMITS = {"CLUSTERFLOW_STEP_MEMORY": "1g", "CLUSTERFLOW_STEP_CPUS": "1"}


@pytest.fixture(scope="module")
def client() -> docker.DockerClient:
    engine = subprocess.run([str(REPO / "scripts/ensure-docker.sh")], capture_output=True, text=True)
    if engine.returncode:
        pytest.fail(f"no Docker engine for the container tests: {engine.stderr.strip()}", pytrace=False)
    return docker.from_env()


def remove_pinned(client: docker.DockerClient, refs: list[str]) -> None:
    """Forget the session's pinned refs on this engine (only those: they name the session's registry)."""
    for ref in refs:
        try:
            client.images.remove(ref)
        except docker.errors.ImageNotFound:
            pass


@pytest.fixture
def pulled(client: docker.DockerClient, published) -> Iterator[dict[str, str]]:
    """Step -> pinned ref, none of them on the engine before the test, and none left after it."""
    refs = {step: published.pins.ref(step) for step in spec.STEPS}
    remove_pinned(client, list(refs.values()))
    yield refs
    remove_pinned(client, list(refs.values()))


def clusterflow_run(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("CLUSTERFLOW_DIGESTS", "CLUSTERFLOW_REGISTRY")}
    return subprocess.run([str(Path(sys.executable).with_name("clusterflow")), "run", "--data-dir", str(data_dir),
                           *args], capture_output=True, text=True, timeout=900, env={**env, **LIMITS})


def test_a_pinned_run_pulls_by_digest_records_the_digests_and_a_second_run_hits_the_cache(
        client: docker.DockerClient, published, pulled: dict[str, str], tmp_path: Path) -> None:
    pins, refs = published.pins, pulled
    data_dir = tmp_path / "data"
    first = clusterflow_run(data_dir, "--run-id", "pinned-1", "--digests", str(published.digests_file))
    assert first.returncode == 0, first.stderr[-3000:]
    pulled = re.findall(r"^pulled (\S+) in (\d+\.\d) s$", first.stdout, re.MULTILINE)
    assert [ref for ref, _ in pulled] == list(refs.values()), first.stdout[:3000]
    print("pull seconds per step image:", {ref.split("/")[-1]: float(s) for ref, s in pulled}, file=sys.stderr)
    for step, ref in refs.items():
        assert f"==> {step}" in first.stdout and f": {ref} --run-id" in first.stdout
        local = client.images.get(ref)
        assert ref in local.attrs["RepoDigests"]  # the engine holds it by that digest
    manifests = sorted((data_dir / "runs/pinned-1").rglob("manifest.json"))
    assert len(manifests) == 6  # prepare, three cluster variants, evaluate, report
    for path in manifests:
        step = path.relative_to(data_dir / "runs/pinned-1").parts[0]
        image = json.loads(path.read_text())["image"]
        assert image == {"name": refs[step], "digest": pins.digests[step]}, path
    second = clusterflow_run(data_dir, "--run-id", "pinned-2", "--digests", str(published.digests_file))
    assert second.returncode == 0, second.stderr[-3000:]
    assert "pulled " not in second.stdout  # the engine has them now
    hits = set(re.findall(r"^\[(\S+)\] \w+: cache hit ", second.stdout, re.MULTILINE))
    assert hits == {"prepare", "cluster[k-means++]", "cluster[random]", "cluster[pca]", "evaluate"}, second.stdout


def test_dockeroperator_pulls_a_pinned_image_through_the_gate(client: docker.DockerClient, published,
                                                              pulled: dict[str, str], tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    ref = pulled["prepare"]
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    dataroot.prepare_run_dir(data_dir, "r1")  # the probe's run
    env = {"DOCKER_SOCKET": SOCKET, "CLUSTERFLOW_DATA_SOURCE": str(data_dir),
           "CLUSTERFLOW_DIGESTS": str(published.digests_file), **LIMITS}
    for url in serve(env):
        probe = subprocess.run([str(AIRFLOW_PYTHON), str(REPO / "tests/gate/operator_probe.py"),
                                url.replace("http://", "tcp://"), str(data_dir)], capture_output=True, text=True,
                               timeout=600, cwd=REPO, env={**os.environ, **env})
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert ref in client.images.get(ref).attrs["RepoDigests"]  # DockerOperator's images(name=ref) + pull, by digest
    assert (data_dir / "runs/r1/prepare/features.npy").is_file()
    manifest = json.loads((data_dir / "runs/r1/prepare/manifest.json").read_text())
    assert manifest["image"]["name"] == ref
    refused = [r.getMessage() for r in caplog.records if r.name == "clusterflow.gate" and "refused" in r.getMessage()]
    assert refused == []
