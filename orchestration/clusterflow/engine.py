"""The Docker engine as both renderings meet it (the local runner, the DAG's operators): one
mount conversion, one image-digest rule and one way of saying what is missing."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

import docker
import docker.errors
from docker.types import Mount as DockerMount

from clusterflow import pinning, spec

BUILD_HINT = "build the images first with `make images`"
_LONGEST_REASON = 160


class PipelineImageMissing(Exception):
    """A step image the engine does not have and cannot get."""

    def __init__(self, image: str, why: str = f"not found: {BUILD_HINT}"):
        super().__init__(f"image {image} {why}")


def image_digest(ref: str, image_id: Callable[[str], str], where: str = "") -> str:
    """What the steps of image ``ref`` record as ``CLUSTERFLOW_IMAGE_DIGEST``: a pinned ref's
    manifest digest (the same on every engine that pulled it, so cache keys match across engines),
    else this engine's image ID (``image_id``, which raises ImageNotFound), never ``RepoDigests``
    (``repo@digest`` of whatever registries the image came from, in no set order)."""
    pinned = pinning.pinned_digest(ref)
    if pinned:
        return pinned
    try:
        return image_id(ref)
    except docker.errors.ImageNotFound:
        raise PipelineImageMissing(ref, f"not found{where}: {BUILD_HINT}") from None


def docker_mount(mount: spec.Mount) -> DockerMount:
    return DockerMount(mount.target, mount.source, type=mount.kind, read_only=mount.read_only)


def engine_url(environ: Mapping[str, str] = os.environ) -> str:
    """The engine the DAG's step tasks use (DockerOperator's own default: no docker_url is given)."""
    return environ.get("DOCKER_HOST") or "unix://var/run/docker.sock"


def unreachable(where: str, reason: object) -> str:
    """The one-line error for an engine that does not answer ``where`` (the client's ``reason``, shortened)."""
    text = " ".join(str(reason).split()).removeprefix("Error while fetching server API version: ")
    text = text if len(text) <= _LONGEST_REASON else text[:_LONGEST_REASON - 3] + "..."
    return (f"no Docker engine answers {where} ({text}): start one (scripts/ensure-docker.sh) "
            "or point DOCKER_HOST at one")


def ping_problem(url: str) -> str | None:
    """Why the Docker engine at ``url`` does not answer (the docker client's own words), or None."""
    try:
        docker.APIClient(base_url=url, timeout=10).ping()
    except docker.errors.DockerException as exc:
        return str(exc)
    return None
