"""What `make publish` promises, against the session's registry (tests/fixtures/registry.py).

A digests file that pinning.load accepts, naming the commit and version that were published; both
tags of an image at the digest the file pins; and every pinned reference pulls by digest into the
main engine as the very image buildah built (same image ID).
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid

import pytest

from clusterflow import pinning
from tests.fixtures.registry import PUBLISHED_IMAGES as IMAGES
from tests.fixtures.registry import REPO, Published

pytestmark = pytest.mark.container


def git(source, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=source, capture_output=True, text=True, check=True).stdout.strip()


def docker_cli() -> str:
    found = subprocess.run([str(REPO / "scripts" / "ensure-docker.sh")], capture_output=True, text=True, check=False)
    assert found.returncode == 0, f"no Docker engine: {found.stderr.strip()}"
    return found.stdout.strip()


def test_the_digests_file_pins_the_published_commit(published: Published, registry: str) -> None:
    pins = pinning.load(published.digests_file)
    assert pins.registry == registry
    assert pins.commit == git(published.source, "rev-parse", "HEAD")
    assert pins.version == (published.source / "VERSION").read_text().strip()
    refs = json.loads(published.digests_file.read_text())["images"]
    assert sorted(refs) == sorted(IMAGES)
    for name, ref in refs.items():
        repo, digest = ref.split("@")
        assert repo == f"{registry}/clusterflow/{name}" and digest.startswith("sha256:"), ref
    print(f"\npublish: {published.seconds:.1f} s")


def test_both_tags_point_at_the_pinned_digest(published: Published, registry: str) -> None:
    pins = published.pins
    for name in IMAGES:
        for tag in (pins.version, pins.commit):
            found = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                                    f"docker://{registry}/clusterflow/{name}:{tag}"],
                                   capture_output=True, text=True, timeout=60, check=False)
            assert found.returncode == 0, found.stderr
            assert json.loads(found.stdout)["Digest"] == pins.digests[name], f"{name}:{tag}"


def test_every_reference_pulls_by_digest_as_the_built_image(published: Published) -> None:
    docker = docker_cli()
    fresh = f"clusterflow-registry-test/{uuid.uuid4().hex[:12]}"
    made: list[str] = []
    try:
        for name in IMAGES:
            ref = published.pins.ref(name)
            t0 = time.monotonic()
            pulled = subprocess.run([docker, "pull", "-q", ref], capture_output=True, text=True,
                                    timeout=300, check=False)
            seconds = time.monotonic() - t0
            assert pulled.returncode == 0, pulled.stderr
            made.append(ref)
            subprocess.run([docker, "tag", ref, f"{fresh}:{name}"], check=True, capture_output=True)
            made.append(f"{fresh}:{name}")
            image_id = subprocess.run([docker, "image", "inspect", "--format", "{{.Id}}", f"{fresh}:{name}"],
                                      capture_output=True, text=True, check=True).stdout.strip()
            built = published.image_ids[name]
            assert image_id == built, f"{name}: pulled {image_id}, built {built}"
            print(f"\npull {name}: {seconds:.1f} s")
    finally:
        if made:
            subprocess.run([docker, "rmi", *made], capture_output=True, check=False)
