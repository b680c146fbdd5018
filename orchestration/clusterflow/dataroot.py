"""A host data root made ready for a run's step containers (both renderings use this).

Step containers can write the data root, and the orchestrator may be root: a step can plant
``runs/<next run id> -> /etc``. So nothing here follows a symlink. Each directory is opened
from its parent's file descriptor with ``O_NOFOLLOW``, and ownership or mode is set on that
descriptor. Only what this call created is handed to the steps' user; nothing is walked.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Callable
from pathlib import Path

from clusterflow_steps.contract import RUNS, RunId

from clusterflow import spec

_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC


class UnsafeDataRoot(ValueError):
    """A run directory, ``runs/`` or cache store that is a symlink or not a directory (one line)."""


def prepare_run_dir(data_root: Path, run_id: RunId, steps_run_as: tuple[int, int] = (spec.STEP_UID, spec.STEP_GID),
                    ) -> Path:
    """Create ``runs/<run_id>`` and the host cache store, for steps that run as ``steps_run_as``
    (uid, gid; the DAG's always run as the images' user, the local runner's as a non-root caller).

    What this call created is handed to them: as root by ownership; as another user, who cannot
    give files away, by giving each directory the data root's own mode, so the steps can write
    it exactly when they can write the data root (made writable by uid 10001 with ``chmod 0777``,
    or group 10001 and ``g+ws``); as the steps' own user, it is theirs already. The data root
    itself, and the parent of a cache store outside it, are the operator's paths and may be
    symlinks. Raises :class:`UnsafeDataRoot` (a ``ValueError``) for a symlink or non-directory
    below them.
    """
    os.makedirs(data_root, exist_ok=True)
    if os.getuid() == 0:
        def hand_over(fd: int) -> None:
            os.chown(fd, *steps_run_as)
    elif steps_run_as != (os.getuid(), os.getgid()):
        mode = stat.S_IMODE(os.stat(data_root).st_mode)

        def hand_over(fd: int) -> None:
            os.fchmod(fd, mode)
    else:
        def hand_over(fd: int) -> None:
            pass
    _make_dirs(data_root, (RUNS, run_id), hand_over)
    store = spec.cache_source(str(data_root))
    if store.startswith("/"):  # otherwise a Docker volume: the engine initialises it
        store_path, root = Path(os.path.normpath(store)), Path(os.path.normpath(data_root))
        if store_path.is_relative_to(root) and store_path != root:
            _make_dirs(data_root, store_path.relative_to(root).parts, hand_over)
        else:
            _make_dirs(store_path.parent, (store_path.name,), hand_over)
    return data_root / RUNS / run_id


def _make_dirs(base: Path, names: tuple[str, ...], hand_over: Callable[[int], None]) -> None:
    """``base/names[0]/names[1]/...``, each component created if missing and never followed;
    ``hand_over`` gets the descriptor of each one it created."""
    os.makedirs(base, exist_ok=True)
    fd = os.open(base, _DIRECTORY)
    try:
        where = base
        for name in names:
            where = where / name
            try:
                os.mkdir(name, dir_fd=fd)
                created = True
            except FileExistsError:
                created = False
            child = _open_dir(fd, name, where)
            os.close(fd)
            fd = child
            if created:
                hand_over(fd)
    finally:
        os.close(fd)


def _open_dir(parent: int, name: str, where: Path) -> int:
    try:
        return os.open(name, _DIRECTORY | os.O_NOFOLLOW, dir_fd=parent)
    except OSError as exc:
        if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        link = stat.S_ISLNK(os.stat(name, dir_fd=parent, follow_symlinks=False).st_mode)
        raise UnsafeDataRoot(f"{where} is {'a symlink' if link else 'not a directory'}: refusing to use "
                             "it (the steps can write the data root); remove it and run again") from None
