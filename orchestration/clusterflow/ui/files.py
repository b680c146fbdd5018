"""Reading a run's files from the data root: read-only, an allow-list of names, never outside it."""

from __future__ import annotations

import errno
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path

from clusterflow_steps.naming import RUN_ID

DATA_ROOT_ENV = "CLUSTERFLOW_DATA_ROOT"
DATA_SOURCE_ENV = "CLUSTERFLOW_DATA_SOURCE"
DEFAULT_DATA_ROOT = "/data"
SERVED = ("report.html", "metrics.json", "manifest.json")
MAX_BYTES = 32 * 1024 * 1024
_COMPONENT = re.compile(r"[A-Za-z0-9._+-]{1,128}")


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


def resolve(root: Path, run_id: str, relative: str) -> str:
    """The real path of ``runs/<run_id>/<relative>`` under ``root``; raise :class:`NotServed`.

    Refused: a run id that breaks the contract's rule, an absolute or ``..`` path, a name not in
    :data:`SERVED`, and anything whose real path (symlinks followed) leaves the data root.
    """
    if RUN_ID.problem(run_id):
        raise NotServed(f"no such run: {run_id!r} is not a valid run id", 400)
    parts = relative.split("/")
    if any(not _COMPONENT.fullmatch(part) or part.startswith(".") for part in parts):
        raise NotServed(f"refused path {relative!r}: only plain names below the run directory", 400)
    if parts[-1] not in SERVED:
        raise NotServed(f"refused path {relative!r}: only {', '.join(SERVED)} are served", 400)
    base = os.path.realpath(root)
    real = os.path.realpath(os.path.join(base, "runs", run_id, *parts))
    if os.path.commonpath([base, real]) != base:
        raise NotServed(f"not found: runs/{run_id}/{relative}")
    return real


def read(root: Path, run_id: str, relative: str) -> bytes:
    """The bytes of a served file of a run (see :func:`resolve`); raise :class:`NotServed`."""
    path = resolve(root, run_id, relative)
    try:  # O_NOFOLLOW: a symlink swapped in after resolve() is refused; O_NONBLOCK: a FIFO never hangs
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP, errno.EACCES, errno.ENXIO):
            raise
        raise NotServed(f"not found: runs/{run_id}/{relative}") from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise NotServed(f"not found: runs/{run_id}/{relative}")
        if info.st_size > MAX_BYTES:
            raise NotServed(f"runs/{run_id}/{relative} is larger than {MAX_BYTES:,} bytes", 413)
        return file.read(MAX_BYTES)


def run_ids(root: Path) -> list[str]:
    """The run directories (not symlinks) under ``root/runs`` whose names obey the run id rule."""
    try:
        entries = list(os.scandir(os.path.join(root, "runs")))
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(e.name for e in entries if RUN_ID.problem(e.name) is None and e.is_dir(follow_symlinks=False))
