"""Reading a run's files from the data root: read-only, an allow-list of names, never outside it.

Steps can write the data root, so no path is resolved and then opened: every component is opened
from its parent's directory fd with ``O_NOFOLLOW``, and the checks are made on the final fd.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO

from clusterflow import spec
from clusterflow_steps.contract import MANIFEST, METRICS, REPORT, RUN_ID, RUNS, VARIANT, Artifact, NameRule

DATA_ROOT_ENV = "CLUSTERFLOW_DATA_ROOT"
DATA_SOURCE_ENV = spec.DATA_SOURCE_ENV
DEFAULT_DATA_ROOT = "/data"
SERVED = (REPORT.name, METRICS.name, MANIFEST)
MAX_BYTES = 32 * 1024 * 1024
COMPONENT = re.compile(r"[A-Za-z0-9_+-][A-Za-z0-9._+-]{0,127}")  # a plain name below a run: no '.', '..', '.x'
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NOT_FOUND = (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENXIO)


class NotServed(Exception):
    """A file the plugin will not serve; ``str()`` is the one-line reason, ``status`` the HTTP code."""

    def __init__(self, reason: str, status: int = 404):
        super().__init__(reason)
        self.status = status


def data_root(environ: Mapping[str, str] = os.environ) -> Path:
    """``$CLUSTERFLOW_DATA_ROOT``, else ``$CLUSTERFLOW_DATA_SOURCE`` when it is a path, else ``/data``.

    ``CLUSTERFLOW_DATA_SOURCE`` is the steps' data root as the DAG sees it: an absolute host path
    (the embedded Airflow) or a Docker volume name (then the API server mounts it elsewhere).
    """
    explicit = environ.get(DATA_ROOT_ENV)
    if explicit:
        return Path(explicit)
    source = environ.get(DATA_SOURCE_ENV, "")
    return Path(source) if os.path.isabs(source) else Path(DEFAULT_DATA_ROOT)


def manifest(step: str, variant: str | None = None) -> str:
    """Where a step's (cluster: a variant's) manifest is under ``runs/<run_id>/``."""
    return Artifact(step, MANIFEST).relative(variant)


def _names(run_id: str, relative: str) -> list[str]:
    """``relative``'s components; raise :class:`NotServed` (400) for an invalid run id, an absolute
    or ``..`` path, or a name not in :data:`SERVED`."""
    if RUN_ID.problem(run_id):
        raise NotServed(f"no such run: {run_id!r} is not a valid run id", 400)
    parts = relative.split("/")
    if not all(COMPONENT.fullmatch(part) for part in parts):
        raise NotServed(f"refused path {relative!r}: only plain names below the run directory", 400)
    if parts[-1] not in SERVED:
        raise NotServed(f"refused path {relative!r}: only {', '.join(SERVED)} are served", 400)
    return parts


def open_beneath(root: Path, names: list[str], flags: int) -> int:
    """An fd of ``root/names...``, each component opened from its parent's fd without following a
    symlink. So a directory swapped for a symlink mid-request is refused, not followed. ``root``
    is the operator's setting and may itself be a symlink."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name in names[:-1]:
            child = os.open(name, _DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(names[-1], flags, dir_fd=fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def _served_file(root: Path, run_id: str, relative: str) -> Iterator[BinaryIO]:
    """The open served file ``runs/<run_id>/<relative>``: a regular file of at most :data:`MAX_BYTES`
    (checked on the open descriptor), never a symlink; raise :class:`NotServed`."""
    names = [RUNS, run_id, *_names(run_id, relative)]
    try:  # O_NONBLOCK: a FIFO never hangs the open
        fd = open_beneath(root, names, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in _NOT_FOUND:
            raise
        raise NotServed(f"not found: {RUNS}/{run_id}/{relative}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotServed(f"not found: {RUNS}/{run_id}/{relative}")
        if info.st_size > MAX_BYTES:
            raise NotServed(f"{RUNS}/{run_id}/{relative} is larger than {MAX_BYTES:,} bytes", 413)
        yield file


def read(root: Path, run_id: str, relative: str) -> bytes:
    """The bytes of a served file of a run (see :func:`_served_file`); raise :class:`NotServed`."""
    with _served_file(root, run_id, relative) as file:
        return file.read(MAX_BYTES)


def is_served(root: Path, run_id: str, relative: str) -> bool:
    """Whether :func:`read` would serve ``runs/<run_id>/<relative>``, without reading it."""
    try:
        with _served_file(root, run_id, relative):
            return True
    except NotServed:
        return False


def _directories(root: Path, names: list[str], rule: NameRule) -> list[str]:
    """The directories (not symlinks) in ``root/names...`` whose names obey ``rule``, sorted."""
    try:
        fd = open_beneath(root, names, _DIRECTORY)
    except OSError as exc:
        if exc.errno not in _NOT_FOUND:
            raise
        return []
    try:
        with os.scandir(fd) as entries:
            return sorted(e.name for e in entries if rule.problem(e.name) is None and e.is_dir(follow_symlinks=False))
    finally:
        os.close(fd)


def run_ids(root: Path) -> list[str]:
    """The run directories (not symlinks) under ``root/runs`` whose names obey the run id rule."""
    return _directories(root, [RUNS], RUN_ID)


def variants(root: Path, run_id: str, step: str) -> list[str]:
    """The variant directories (not symlinks) of a run's per-variant step (cluster)."""
    return [] if RUN_ID.problem(run_id) else _directories(root, [RUNS, run_id, step], VARIANT)
