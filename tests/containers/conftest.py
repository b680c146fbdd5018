"""Container tests run against a real Docker engine and the freshly built images (the session
fixtures ``docker_cli``, ``engine`` and ``data_dir`` of tests/fixtures/docker.py)."""

from __future__ import annotations

from pathlib import Path

from clusterflow.version import VERSION

REPO = Path(__file__).resolve().parents[2]


def image(step: str) -> str:
    return f"clusterflow/{step}:{VERSION}"
