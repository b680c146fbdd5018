"""Reproducible image builds (issue 13, item 6): two cold builds of this commit in two buildah
stores (the session's publish and verify's own) give the same image IDs, and no label carries a
host path or the clone's remote."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tomllib
from pathlib import Path

import pytest

from tests.fixtures.registry import PUBLISHED_IMAGES

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[1]
VERIFY = REPO / "scripts" / "verify-reproducible.sh"
IMAGES = set(PUBLISHED_IMAGES)
PROJECT_URL = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["urls"]["Source"]


def run(*cmd: str | Path, timeout: float = 1800, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kwargs)


@pytest.fixture(scope="module")
def verified(tmp_path_factory, published):
    """One run of verify-reproducible.sh against the session's publish (--keep, scratch under a
    pytest directory that is removed after): its result and the store of its build. The publish is
    the first cold build (buildah builds without a layer cache), verify's own the second, each in its
    own store: two builds for the price of the one the suite needs anyway."""
    tmp = tmp_path_factory.mktemp("reproducible")
    result = run(VERIFY, "--against", published.store, "--keep", env={**os.environ, "TMPDIR": str(tmp)})
    (scratch,) = tmp.glob("verify-reproducible.*")
    yield result, scratch / "a"
    subprocess.run(["rm", "-rf", str(scratch)], check=True)


def test_two_cold_builds_in_two_stores_give_identical_image_ids(verified):
    result, _ = verified
    assert result.returncode == 0, result.stdout + result.stderr[-3000:]
    rows = [line.split() for line in result.stdout.splitlines()]
    assert {row[0] for row in rows} == IMAGES and len(rows) == len(IMAGES)
    for name, first, second, verdict in rows:
        assert first == second and first.startswith("sha256:") and len(first) == 71, name
        assert verdict == "identical"


def labels(store: Path, name: str) -> dict[str, str]:
    buildah = ["buildah", "--root", f"{store}/root", "--runroot", f"{store}/run", "--storage-driver", "vfs"]
    version = (REPO / "VERSION").read_text().strip()
    found = run(*buildah, "inspect", "--type", "image", f"localhost/clusterflow/{name}:{version}", timeout=60)
    assert found.returncode == 0, found.stderr
    return json.loads(found.stdout)["OCIv1"]["config"]["Labels"]


@pytest.mark.parametrize("name", sorted(IMAGES))
def test_no_label_names_a_host_path_or_a_clone_remote(verified, name):
    result, store = verified
    found = labels(store, name)
    assert found["org.opencontainers.image.source"] == PROJECT_URL
    for key, value in found.items():
        assert not value.startswith(("/", "file:", "git@")) and str(REPO) not in value, (key, value)
    # The commit the builds were made of (HEAD when verify cloned it; others may commit since).
    (built,) = re.findall(r"^verify-reproducible: commit ([0-9a-f]{40}),", result.stderr, re.M)
    assert found.get("org.opencontainers.image.revision", built) == built


def test_a_docker_build_from_a_clone_of_a_local_path_labels_the_project_url(tmp_path):
    """scripts/build-images.sh takes the source label from pyproject.toml: a clone whose origin is
    this checkout's path builds the same label as any other clone."""
    clone = tmp_path / "clone"
    assert run("git", "clone", "-q", REPO, clone).returncode == 0
    assert run("git", "-C", clone, "config", "--get", "remote.origin.url").stdout.strip() == str(REPO)
    built = run(clone / "scripts" / "build-images.sh", "--step", "core", timeout=900)
    assert built.returncode == 0, built.stderr[-3000:]
    version = (clone / "VERSION").read_text().strip()
    inspected = run("docker", "image", "inspect", f"clusterflow/core:{version}", timeout=60)
    found = json.loads(inspected.stdout)[0]["Config"]["Labels"]
    assert found["org.opencontainers.image.source"] == PROJECT_URL


def test_verify_refuses_a_store_without_the_images_and_unknown_arguments(tmp_path):
    empty = run(VERIFY, "--against", tmp_path, timeout=60)
    assert empty.returncode == 2 and empty.stdout == ""
    assert empty.stderr.strip().splitlines() == [
        f"verify-reproducible: {tmp_path} has no core image: "
        f"build it with scripts/build-reproducible.sh --store {tmp_path}"]
    unknown = run(VERIFY, "--fast", timeout=60)
    assert unknown.returncode == 2 and "unknown argument: --fast" in unknown.stderr


def test_an_interrupted_verification_leaves_no_store_and_no_build_behind(tmp_path):
    proc = subprocess.Popen([str(VERIFY)], env={**os.environ, "TMPDIR": str(tmp_path)},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob("verify-reproducible.*/*/root")) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert list(tmp_path.glob("verify-reproducible.*/*/root")), "no build started within 120 s"
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert list(tmp_path.iterdir()) == []
    builds = run("pgrep", "-af", "--", f"--root {tmp_path}/", timeout=10)
    assert builds.stdout == "", builds.stdout
