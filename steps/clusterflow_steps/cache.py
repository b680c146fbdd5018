"""The content-addressed step cache: skip a step whose identical run is already on disk.

A step's **key** is the sha256 of the canonical JSON of everything its outputs depend on: the
image *digest* (``CLUSTERFLOW_IMAGE_DIGEST``, set by the runners; never the tag, which can be
overwritten), the step name, its params (variant included) and the sha256 of every input file.
An upstream ``manifest.json`` input counts by its content (step, variant, params, outputs,
results, exit status), not by its bookkeeping (run id, timings, image tag, cache note), so a new
run whose upstream steps were cache hits still hits downstream. A step whose outputs *show* that
bookkeeping (the report's lineage) keys on the manifests' exact bytes instead.

The **store** is ``<data_root>/cache/<step>/<key>/``: the outputs and the manifest of the run that
computed them, shared by every run under the data root. Steps only ever READ it: the orchestrators
mount it read-only in every step container, and fill it with the task's **commit** container (the
step's own command with ``--commit-cache``: data root read-only, store read-write), which derives
the key itself from the same params and input files, checks that the step directory holds a
manifest under exactly that key whose outputs match their sha256, and copies the files in,
read-only (0444). It hashes and copies; it parses no data. So no step can plant an entry that
another run trusts.

A hit COPIES the stored files (never hard links: a later in-place write in one run must not change
bytes another run verified) into the step's target through the same atomic rename as a fresh run,
after checking every copied file's sha256 against the stored manifest. A damaged or foreign entry
is ignored with one ``warning:`` line saying why, and the step runs.

Nothing here imports scikit-learn or matplotlib: a hit costs hashing and linking only.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from clusterflow_steps.artifacts import (NO_CACHE, StepRun, UserError, atomic_dir, image_record, input_name, now,
                                         sha256_file, step_output, write_manifest)
from clusterflow_steps.cli import commit_requested
from clusterflow_steps.contract import CACHE, IMAGE_DIGEST_ENV, MANIFEST, RunLayout, cache_hit_line
from clusterflow_steps.params import COMMIT_CACHE_FLAG

KEY_SCHEMA = "clusterflow.cache/1"
# What a manifest says about the data it describes; the rest is bookkeeping of one execution.
MANIFEST_CONTENT = ("schema", "step", "variant", "params", "outputs", "results", "exit_status")


@dataclass(frozen=True)
class StepResult:
    """What a step run (or reused) left in its target directory."""

    manifest: dict[str, Any]
    hit: bool

    @property
    def results(self) -> dict[str, Any]:
        return self.manifest["results"]


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def hash_inputs(run_dir: Path, inputs: dict[str, Path], *, manifests_by_content: bool = True
                ) -> tuple[dict[str, dict[str, Any]], dict[str, str | None]]:
    """Hash every input once: ``(manifest records, key digests)``, both keyed by input name.

    A missing input gets no record and a ``None`` digest: the step's work reports it.
    """
    records: dict[str, dict[str, Any]] = {}
    digests: dict[str, str | None] = {}
    for path in inputs.values():
        name = input_name(run_dir, path)
        try:
            data = path.read_bytes() if path.name == MANIFEST else None
            records[name] = {"sha256": _sha256(data) if data is not None else sha256_file(path),
                             "bytes": path.stat().st_size}
        except OSError:
            digests[name] = None
            continue
        digests[name] = records[name]["sha256"]
        if data is not None and manifests_by_content:
            try:
                manifest = json.loads(data)
            except ValueError:
                continue  # unreadable: keyed by its bytes, and the work reports it
            if isinstance(manifest, dict):
                digests[name] = _sha256(canonical_json({k: manifest.get(k) for k in MANIFEST_CONTENT}))
    return dict(sorted(records.items())), digests


def cache_key(digest: str, step: str, variant: str | None, params: dict[str, Any],
              inputs: dict[str, str | None], extra: dict[str, Any] | None = None) -> str:
    material = {"schema": KEY_SCHEMA, "image_digest": digest, "step": step, "variant": variant,
                "params": params, "inputs": inputs, **({"extra": extra} if extra else {})}
    return _sha256(canonical_json(material))


def store_dir(data_root: Path, step: str, key: str) -> Path:
    return data_root / CACHE / step / key


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def key_of(manifest: dict[str, Any]) -> str | None:
    """The cache key a manifest says its outputs were written under."""
    note = manifest.get("cache")
    return note.get("key") if isinstance(note, dict) else None


def mismatch(folder: Path, outputs: Any) -> str | None:
    """Why ``folder`` does not hold exactly the regular files ``outputs`` records (besides its
    manifest), intact; ``None`` if it does."""
    if not isinstance(outputs, dict):
        return "its manifest lists no outputs"
    paths = list(folder.rglob("*"))
    links = [p.relative_to(folder).as_posix() for p in paths if p.is_symlink()]
    if links:
        return f"{links[0]} is a symlink"
    present = {p.relative_to(folder).as_posix() for p in paths if p.is_file()} - {MANIFEST}
    if present != set(outputs):
        odd = sorted(present ^ set(outputs))[0]
        return f"{odd} is {'not in its manifest' if odd in present else 'missing'}"
    for name, record in sorted(outputs.items()):
        try:
            intact = (isinstance(record, dict) and (folder / name).stat().st_size == record.get("bytes")
                      and sha256_file(folder / name) == record.get("sha256"))
        except OSError as exc:
            return f"{name} is unreadable ({exc.strerror})"
        if not intact:
            return f"{name} does not match its manifest's sha256"
    return None


def verified(folder: Path, key: str) -> dict[str, Any] | None:
    """``folder``'s manifest if it was written under ``key`` and every output matches its sha256."""
    manifest = _read_manifest(folder)
    if manifest is None or key_of(manifest) != key:
        return None
    return manifest if mismatch(folder, manifest.get("outputs")) is None else None


def copy_files(source: Path, target: Path, *, mode: int | None = None) -> None:
    """Copy every file under ``source`` but its manifest to ``target`` (never a hard link)."""
    for path in _files(source):
        if path != source / MANIFEST:
            copy = target / path.relative_to(source)
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, copy, follow_symlinks=False)
            if mode is not None:
                os.chmod(copy, mode)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink())


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


CACHED_MODE = 0o444  # a stored file is never written again; a new entry replaces the whole folder


def _key(layout: RunLayout, step: str, variant: str | None, params: dict[str, Any],
         digests: dict[str, str | None], manifests_by_content: bool) -> str | None:
    """The step's cache key, or ``None`` without an image digest."""
    image = image_record()
    if not image["digest"]:
        return None
    extra = None if manifests_by_content else {"run_id": layout.run_id, "image": image["name"]}
    return cache_key(image["digest"], step, variant, params, digests, extra)


def commit(layout: RunLayout, step: str, variant: str | None, params: dict[str, Any], key: str | None,
           *, replace: bool = False) -> None:
    """Put the outputs the step already wrote under ``key`` into the store (``--commit-cache``).

    ``key`` is derived by this process from the command's params and the input files it re-hashed,
    so this refuses (:class:`UserError`, nothing stored) unless the step directory holds a
    manifest of this step under exactly that key, with these params, whose outputs match their
    sha256. An intact entry under the key is kept unless ``replace`` (``--no-cache``).
    """
    target = layout.step_dir(step, variant)
    if key is None:
        raise UserError(f"{step}: {COMMIT_CACHE_FLAG} needs the image digest ({IMAGE_DIGEST_ENV}, which the "
                        "orchestrators set): without it nothing is cached")
    manifest = _read_manifest(target)
    problem: str | None
    if manifest is None:
        problem = f"it holds no readable {MANIFEST}"
    elif (manifest.get("step"), manifest.get("variant")) != (step, variant):
        problem = f"its manifest is of step {manifest.get('step')!r}, variant {manifest.get('variant')!r}"
    elif key_of(manifest) != key:
        problem = f"its manifest's cache key {str(key_of(manifest))[:12]} is not {key[:12]}, this command's"
    elif manifest.get("params") != params:
        problem = "its manifest's params are not this command's"
    else:
        problem = mismatch(target, manifest.get("outputs"))
    if problem or manifest is None:
        raise UserError(f"{step}: not caching {target}: {problem}; run the step with these arguments first")
    entry = store_dir(layout.data_root, step, key)
    if not replace and verified(entry, key) is not None:
        click.echo(f"{step}: cache entry {key[:12]} already stored")
        return
    with atomic_dir(entry) as tmp:
        copy_files(target, tmp, mode=CACHED_MODE)
        write_manifest(tmp, manifest)
        os.chmod(tmp / MANIFEST, CACHED_MODE)
    click.echo(f"{step}: stored {target} as cache entry {key[:12]}")


class _Damaged(Exception):
    pass


def _reuse(layout: RunLayout, step: str, variant: str | None, key: str, entry: Path,
           cached: dict[str, Any], records: dict[str, dict[str, Any]], started: tuple[str, float]
           ) -> dict[str, Any] | None:
    """Copy a store entry into the target with a fresh manifest; ``None`` if it is damaged."""
    manifest = {
        **cached,
        "run_id": layout.run_id,
        "inputs": records,
        "image": image_record(),
        "started_at": started[0],
        "cache": {"key": key, "hit": True,
                  "source": (cached.get("cache") or {}).get("source") or cached.get("run_id")},
    }
    try:
        with atomic_dir(layout.step_dir(step, variant)) as tmp:
            copy_files(entry, tmp)
            problem = mismatch(tmp, cached.get("outputs"))  # the very files served
            if problem:
                raise _Damaged(problem)
            manifest.update(finished_at=now(), duration_seconds=round(time.perf_counter() - started[1], 3))
            write_manifest(tmp, manifest)
    except _Damaged as exc:
        _warn(f"{step}: ignored damaged cache entry {entry} ({exc}); running the step")
        return None
    except OSError as exc:  # e.g. a file gone meanwhile
        _warn(f"{step}: could not reuse cache entry {entry} ({exc.strerror or exc}); running the step")
        return None
    return manifest


def run_step(layout: RunLayout, step: str, params: dict[str, Any], inputs: dict[str, Path],
             work: Callable[[StepRun], None], *, variant: str | None = None, use_cache: bool = True,
             manifests_by_content: bool = True) -> StepResult:
    """Reuse an identical earlier run of ``step`` or run ``work`` to write its outputs.

    ``inputs`` names every file the work reads (known before it runs). ``work`` writes into
    ``run.out`` and fills ``run.results`` / ``run.exit_status``; anything the caller needs after it
    must come from the returned manifest's ``results``, which a hit copies from the cached run.
    ``manifests_by_content=False`` keys on upstream manifests' exact bytes (and this run id):
    for a step whose outputs show their run ids and timings. Under ``--commit-cache`` it only
    commits (:func:`commit`) the outputs the same command wrote before, and ends the command (exit 0).
    """
    started = (now(), time.perf_counter())
    target = layout.step_dir(step, variant)
    records, digests = hash_inputs(layout.run_dir, inputs, manifests_by_content=manifests_by_content)
    key = _key(layout, step, variant, params, digests, manifests_by_content)
    if commit_requested():  # the commit container: hash and copy, no work, no lookup
        commit(layout, step, variant, params, key, replace=not use_cache)
        raise click.exceptions.Exit(0)
    cache_note: dict[str, Any] = dict(NO_CACHE)
    if key is not None:
        cache_note = {"key": key, "hit": False, "source": None}
        if not use_cache:
            cache_note["reason"] = "--no-cache"
        else:
            reused = _lookup(layout, step, variant, key, records, started)
            if reused is not None:
                source = reused["cache"].get("source") or reused["run_id"]
                click.echo(f"{cache_hit_line(step)}{key[:12]} (first computed in run {source}); outputs reused")
                return StepResult(reused, hit=True)

    with step_output(layout, step, params, variant, started=started) as run:
        run.input_records, run.cache = records, cache_note
        work(run)
    manifest = _read_manifest(target)
    assert manifest is not None
    return StepResult(manifest, hit=False)


def _lookup(layout: RunLayout, step: str, variant: str | None, key: str,
            records: dict[str, dict[str, Any]], started: tuple[str, float]) -> dict[str, Any] | None:
    """A manifest of reused outputs now in the target, or ``None`` on a miss.

    Only the store counts: outputs already in this run's (or any run's) directory are whatever a
    step container wrote there, so they are never taken as a hit.
    """
    entry = store_dir(layout.data_root, step, key)
    if not entry.is_dir():
        return None
    cached = _read_manifest(entry)
    if cached is None or key_of(cached) != key:
        why = f"no readable {MANIFEST}" if cached is None else "its manifest was written under another key"
        _warn(f"{step}: ignored cache entry {entry} ({why}); running the step")
        return None
    return _reuse(layout, step, variant, key, entry, cached, records, started)
