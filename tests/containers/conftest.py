"""Container tests run against a real Docker engine and the freshly built images.

They never skip: where no engine can be had, the session fixture fails every one of them.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import docker
import pytest

from clusterflow.version import VERSION

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def docker_cli() -> str:
    """A docker client that answers; builds (or reuses) every image once per session."""
    engine = subprocess.run([str(REPO / "scripts/ensure-docker.sh")], capture_output=True, text=True)
    if engine.returncode:
        pytest.fail(f"no Docker engine for the container tests: {engine.stderr.strip()}", pytrace=False)
    build = subprocess.run([str(REPO / "scripts/build-images.sh")], capture_output=True, text=True)
    if build.returncode:
        pytest.fail(f"building the images failed:\n{build.stdout[-2000:]}\n{build.stderr[-4000:]}",
                    pytrace=False)
    return engine.stdout.strip()


@pytest.fixture(scope="session")
def engine(docker_cli: str) -> docker.DockerClient:
    return docker.from_env()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    """A host data root the steps' non-root user can write (tests run as root in CI)."""
    root = tmp_path / "data"
    root.mkdir()
    root.chmod(0o777)
    return root


def image(step: str) -> str:
    return f"clusterflow/{step}:{VERSION}"
