"""Reading and writing the artifacts of :mod:`clusterflow_steps.contract`: checked reads, atomic step
outputs and their manifests.

A step writes into a hidden temporary directory beside its target and renames it into place only
on success, so a reader sees the previous complete output or nothing, never a partial one.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import time
import uuid
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click
import numpy as np

from clusterflow_steps.contract import (IMAGE_DIGEST_ENV, IMAGE_ENV, MANIFEST, MANIFEST_SCHEMA, QUALITY_GATE_EXIT,
                                        RUN_ID, USER_ERROR_EXIT, ContractError, NameRule, RunLayout, damaged_input,
                                        missing_input)

NO_CACHE: dict[str, Any] = {"key": None, "hit": False, "reason": "image digest unknown"}
RECORDED_PACKAGES = ("numpy", "scipy", "scikit-learn", "joblib", "click", "matplotlib")


class UserError(click.ClickException):
    """A problem the user caused and can fix: one line, exit code 2, no traceback."""

    exit_code = USER_ERROR_EXIT


class QualityGateFailed(click.ClickException):
    """The evaluated run did not meet a quality threshold (exit code 3)."""

    exit_code = QUALITY_GATE_EXIT


def validate_name(value: str, rule: NameRule = RUN_ID) -> str:
    """Return ``value`` if it is a safe single path component, else raise :class:`UserError`."""
    try:
        return rule.check(value)
    except ContractError as exc:
        raise UserError(str(exc)) from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_name(run_dir: Path, path: Path) -> str:
    """How a manifest names an input: relative to the run directory, else its absolute path."""
    return path.relative_to(run_dir).as_posix() if path.is_relative_to(run_dir) else str(path)


def describe_files(paths: dict[str, Path]) -> dict[str, dict[str, Any]]:
    return {name: {"sha256": sha256_file(p), "bytes": p.stat().st_size} for name, p in sorted(paths.items())}


def require_input(path: Path, produced_by: str) -> Path:
    """Fail with a one-line fix when an upstream artifact is missing."""
    if not path.is_file():
        raise UserError(missing_input(path, produced_by))
    return path


def read_array(path: Path, produced_by: str, *, mmap: bool = False) -> np.ndarray:
    """Load an upstream ``.npy`` artifact, mapping damage to a :class:`UserError`."""
    require_input(path, produced_by)
    try:
        array: np.ndarray = np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UserError(damaged_input(path, f"is unreadable ({exc})", produced_by)) from None
    return array


def read_json(path: Path, produced_by: str) -> dict[str, Any]:
    require_input(path, produced_by)
    try:
        payload: dict[str, Any] = json.loads(path.read_text())  # callers check the shape they need
    except (ValueError, OSError) as exc:
        raise UserError(damaged_input(path, f"is unreadable ({exc})", produced_by)) from None
    return payload


def _fsync_tree(root: Path) -> None:
    for path in sorted(root.rglob("*"), reverse=True):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


STALE_AFTER_SECONDS = 60  # a leftover at least this old, and unlocked, belongs to a dead writer


def _newest_mtime(path: Path) -> float:
    """The latest modification time of ``path`` and its direct entries."""
    times = [path.lstat().st_mtime]
    if path.is_dir():
        times += [entry.lstat().st_mtime for entry in path.iterdir()]
    return max(times)


def _lock(fd: int, *, wait: bool) -> bool:
    """Take an exclusive ``flock``: ``True`` if held, ``False`` if another process holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
    except BlockingIOError:
        return False
    return True


def remove_stale_siblings(target: Path, older_than: float = STALE_AFTER_SECONDS) -> None:
    """Delete ``.<name>.tmp-*`` / ``.<name>.old-*`` that killed writers of ``target`` left behind.

    A live writer holds an exclusive ``flock`` on its temporary directory until the rename (see
    :func:`atomic_dir`), and locks work across containers on one kernel where pids do not (each
    container has its own pid namespace). So a leftover is removed only if nobody holds its lock
    and it is ``older_than`` seconds old (covering the instant between its mkdir and its lock).
    Where locks are unsupported, nothing is removed.
    """
    now = time.time()
    for sibling in target.parent.glob(f".{target.name}.*-*"):
        kind = sibling.name[len(target.name) + 2:].split("-", 1)[0]
        try:
            if kind not in ("tmp", "old") or now - _newest_mtime(sibling) < older_than:
                continue
            fd = os.open(sibling, os.O_RDONLY)
        except OSError:
            continue
        try:
            if _lock(fd, wait=False):
                shutil.rmtree(sibling, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


# Errors of the data root's filesystem itself (not of the step's input): one line, exit 2.
STORAGE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)


def write_problem(exc: OSError, where: Path) -> str:
    """One line saying why writing under ``where`` failed and how to fix it."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        what = "no space left" if exc.errno == errno.ENOSPC else "disk quota exceeded"
        return f"{what} under {where}: free space or use a bigger data root"
    if exc.errno == errno.EROFS:
        return f"the data root is read-only (writing under {where}): mount it read-write (not :ro)"
    return (f"cannot write under {where} ({exc.strerror}): make the data root writable by uid "
            f"{os.getuid()}, or run as its owner (docker run --user \"$(id -u):$(id -g)\" ...)")


NEARLY_FULL_BYTES = 1 << 20


def _storage_error(exc: OSError, where: Path) -> OSError | None:
    """``exc`` as the filesystem under ``where`` refusing a write (full, read-only, denied), or None.

    Some writers report a short write without an errno (numpy's ``tofile``: "N requested and M
    written"); that is a full disk when ``where`` has (next to) no space left.
    """
    if exc.errno is None:
        try:
            stats = os.statvfs(where)
        except OSError:
            return None
        full = stats.f_bavail * stats.f_frsize < NEARLY_FULL_BYTES
        return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)) if full else None
    if exc.errno not in STORAGE_ERRNOS:
        return None
    inside = exc.filename is None or Path(os.fsdecode(exc.filename)).is_relative_to(where)
    return exc if inside else None


@contextlib.contextmanager
def atomic_dir(target: Path) -> Iterator[Path]:
    """Yield a fresh temporary directory that replaces ``target`` only if the block succeeds.

    The temporary directory is ``flock``-ed while in use, so a later writer of the same target
    can tell it from a dead writer's leftover, which it removes (:func:`remove_stale_siblings`).
    A full, read-only or unwritable data root fails with a one-line :class:`UserError` (exit 2);
    either way the temporary directory is removed and ``target`` is left as it was.
    """
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        remove_stale_siblings(target)
        tmp = parent / f".{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        tmp.mkdir()
        lock = os.open(tmp, os.O_RDONLY)
    except OSError as exc:
        raise UserError(write_problem(exc, parent)) from None
    try:
        with contextlib.suppress(OSError):
            _lock(lock, wait=True)
        yield tmp
        _fsync_tree(tmp)
        if target.exists():
            old = parent / f".{target.name}.old-{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            try:
                os.rename(tmp, target)
            except BaseException:
                os.rename(old, target)  # put the previous output back
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except OSError as exc:
        storage = _storage_error(exc, parent)  # before the removal frees the space
        shutil.rmtree(tmp, ignore_errors=True)
        if storage is not None:
            raise UserError(write_problem(storage, parent)) from None
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        os.close(lock)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in RECORDED_PACKAGES:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[name] = importlib.metadata.version(name)
    return versions


def now() -> str:
    """A manifest's timestamp: UTC, to the millisecond."""
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def image_record() -> dict[str, str | None]:
    """A manifest's ``image``: the image this step runs in, as the runners set it (name and digest)."""
    return {"name": os.environ.get(IMAGE_ENV), "digest": os.environ.get(IMAGE_DIGEST_ENV)}


@dataclass
class StepRun:
    """What a step records about itself while it writes its outputs into ``out``.

    ``results`` holds step-specific figures (e.g. inertia); ``exit_status`` lets a step that
    keeps its outputs but still fails (the quality gate) say so in its manifest.
    """

    step: str
    run_id: str
    variant: str | None
    params: dict[str, Any]
    out: Path
    inputs: dict[str, Path] = field(default_factory=dict)
    results: dict[str, Any] = field(default_factory=dict)
    exit_status: int = 0
    input_records: dict[str, dict[str, Any]] | None = None  # inputs already hashed (by run_step)
    cache: dict[str, Any] = field(default_factory=lambda: dict(NO_CACHE))

    def manifest(self, run_dir: Path, started_at: str, started: float) -> dict[str, Any]:
        outputs = {p.relative_to(self.out).as_posix(): p for p in self.out.rglob("*") if p.is_file()}
        if self.input_records is None:
            inputs = describe_files({input_name(run_dir, p): p for p in self.inputs.values()})
        else:
            inputs = self.input_records
        return {
            "schema": MANIFEST_SCHEMA,
            "step": self.step,
            "variant": self.variant,
            "run_id": self.run_id,
            "params": self.params,
            "inputs": inputs,
            "outputs": describe_files(outputs),
            "results": self.results,
            "image": image_record(),
            "python": platform.python_version(),
            "packages": package_versions(),
            "started_at": started_at,
            "finished_at": now(),
            "duration_seconds": round(time.perf_counter() - started, 3),
            "exit_status": self.exit_status,
            "cache": self.cache,
        }


# Options of clusterflow_steps.cli that are no part of what a step was asked: whether it commits
# (--commit-cache) and where this launch mounted the data root (--data-root; a re-run mounts it at /data).
NOT_RECORDED = ("commit_cache", "data_root")


def step_argv(ctx: click.Context | None = None) -> list[str] | None:
    """The arguments of the running step command, as it understood them: every option not left at
    its default (given on the command line or as ``CLUSTERFLOW_<OPTION>``), in the command's order,
    without ``--commit-cache`` and ``--data-root``. The same command with these arguments does the same work (its
    ``docker run`` line in the report, ``clusterflow reproduce``). ``None`` outside a command."""
    ctx = ctx or click.get_current_context(silent=True)
    if ctx is None:
        return None
    argv: list[str] = []
    for param in ctx.command.params:
        name = param.name or ""
        if not isinstance(param, click.Option) or name in NOT_RECORDED or name not in ctx.params \
                or ctx.get_parameter_source(name) in (None, click.core.ParameterSource.DEFAULT):
            continue
        value = ctx.params[name]
        if param.is_flag and param.secondary_opts:
            argv.append(param.opts[0] if value else param.secondary_opts[0])
        elif param.is_flag:
            argv += [param.opts[0]] if value else []
        else:
            for item in value if param.multiple else [value]:
                argv += [param.opts[0], str(item)]
    return argv


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest``, with the arguments of the command writing it (``argv``) when there is one:
    a fresh run, a cache hit (whose other fields come from the run that computed the outputs) and
    a commit (the step's own command) all record the command of this run."""
    argv = step_argv()
    if argv is not None:
        manifest = {**manifest, "argv": argv}
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


@contextlib.contextmanager
def step_output(layout: RunLayout, step: str, params: dict[str, Any],
                variant: str | None = None, *, started: tuple[str, float] | None = None) -> Iterator[StepRun]:
    """Run a step's writes atomically and finish them with a ``manifest.json``.

    The steps go through :func:`clusterflow_steps.cache.run_step`, which uses this on a cache miss.
    """
    started_at, started_clock = started or (now(), time.perf_counter())
    with atomic_dir(layout.step_dir(step, variant)) as tmp:
        run = StepRun(step=step, run_id=layout.run_id, variant=variant, params=params, out=tmp)
        yield run
        write_manifest(tmp, run.manifest(layout.run_dir, started_at, started_clock))


def save_array(run: StepRun, name: str, array: np.ndarray) -> Path:
    path = run.out / name
    np.save(path, array, allow_pickle=False)
    return path


def save_npz(path: Path, arrays: dict[str, Any]) -> Path:
    """Write ``arrays`` (in this order) as an ``.npz`` that ``np.load(..., allow_pickle=False)``
    reads; byte-identical for equal data (``np.savez`` stamps each member with the current time,
    which would change the file's sha256 and so every cache key downstream)."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, value in arrays.items():
            member = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            member.compress_type = zipfile.ZIP_DEFLATED
            member.external_attr = 0o644 << 16
            with archive.open(member, "w") as out:
                np.lib.format.write_array(out, np.asanyarray(value), allow_pickle=False)
    return path


def save_json(run: StepRun, name: str, payload: dict[str, Any]) -> Path:
    path = run.out / name
    path.write_text(json.dumps(payload, indent=2, sort_keys=True, allow_nan=False) + "\n")
    return path
