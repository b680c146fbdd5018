"""The gate's settings, from its environment, and the one check that needs the file system:
where an input mount really points."""

from __future__ import annotations

import os
import re
import stat
import typing
from dataclasses import dataclass

from clusterflow import pinning, spec
from clusterflow.gate.policy import Refusal, Settings

DATA_SOURCE_ENV = spec.DATA_SOURCE_ENV
IMAGE_TAG_ENV = spec.IMAGE_TAG_ENV
INPUT_DIRS_ENV = "CLUSTERFLOW_INPUT_DIRS"
LISTEN_ENV = "CLUSTERFLOW_GATE_LISTEN"
SOCKET_ENV = "DOCKER_SOCKET"
DEFAULT_LISTEN = "0.0.0.0:2375"
DEFAULT_SOCKET = "/var/run/docker.sock"
_VOLUME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class GateConfig:
    settings: Settings
    host: str
    port: int
    socket: str


def from_env(env: typing.Mapping[str, str] | None = None) -> GateConfig:
    """The gate's configuration; ValueError with a one-line fix for an unusable value."""
    env = os.environ if env is None else env
    source = (env.get(DATA_SOURCE_ENV) or "").strip()
    if not (source.startswith("/") or _VOLUME.fullmatch(source)):
        raise ValueError(f"{DATA_SOURCE_ENV}={source!r}: give the steps' data volume name or an absolute host path")
    listen = (env.get(LISTEN_ENV) or DEFAULT_LISTEN).strip()
    host, _, port = listen.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"{LISTEN_ENV}={listen!r}: give HOST:PORT, e.g. {DEFAULT_LISTEN}")
    given = [d.strip() for d in (env.get(INPUT_DIRS_ENV) or "").split(":") if d.strip()]
    relative = [d for d in given if not d.startswith("/")]
    if relative:
        raise ValueError(f"{INPUT_DIRS_ENV}: {relative[0]!r} is not absolute: give absolute host directories")
    pins, registry = pinning.configured(env)  # the digests file is read once, here
    settings = Settings(source, spec.cache_source(source, env), spec.step_limits(env),
                        (env.get(IMAGE_TAG_ENV) or "").strip() or None,
                        tuple(os.path.realpath(d) for d in given),
                        {step: pins.ref(step) for step in spec.IMAGES} if pins else None, registry)
    return GateConfig(settings, host, int(port), env.get(SOCKET_ENV) or DEFAULT_SOCKET)


def resolve_input(source: str, allowed: tuple[str, ...]) -> str:
    """``source`` with every symlink resolved, when that is a file or directory under one of the
    ``allowed`` directories (as the gate sees them: mount them at the same paths); never a
    socket, a device or a FIFO."""
    real = os.path.realpath(source)
    if not any(real == d or real.startswith(d.rstrip("/") + "/") for d in allowed):
        raise Refusal(f"input {source!r} is not under {INPUT_DIRS_ENV} ({':'.join(allowed) or 'empty'})")
    try:
        mode = os.stat(real).st_mode
    except OSError:
        raise Refusal(f"input {source!r} does not exist where the gate sees {INPUT_DIRS_ENV}") from None
    if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise Refusal(f"input {source!r} is not a regular file or directory")
    return real
