"""The content-addressed step cache: skip a step whose identical run is already on disk.

A step's **key** is the sha256 of the canonical JSON of everything its outputs depend on: the
image *digest* (``CLUSTERFLOW_IMAGE_DIGEST``, set by the runners; never the tag, which can be
overwritten), the step name, its params (variant included) and the sha256 of every input file.
An upstream ``manifest.json`` input counts by its content (step, variant, params, outputs,
results, exit status), not by its bookkeeping (run id, timings, image tag, cache note), so a new
run whose upstream steps were cache hits still hits downstream. A step whose outputs *show* that
bookkeeping (the report's lineage) keys on the manifests' exact bytes instead.

The **store** is ``<data_root>/cache/<step>/<key>/``: the outputs and the manifest of the run that
computed them, shared by every run under the data root. A hit links (or copies) the stored files
into the step's target through the same atomic rename as a fresh run, after checking every file's
sha256 against the stored manifest; a damaged entry is removed and the step runs.

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

from clusterflow_steps.contract import (IMAGE_DIGEST_ENV, IMAGE_ENV, MANIFEST, NO_CACHE, RunLayout, StepRun,
                                        _now, atomic_dir, input_name, sha256_file, step_output,
                                        write_manifest)

KEY_SCHEMA = "clusterflow.cache/1"
STORE = "cache"
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
    return data_root / STORE / step / key


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def outputs_match(folder: Path, outputs: Any) -> bool:
    """Whether ``folder`` holds exactly the files ``outputs`` records (besides its manifest), intact."""
    if not isinstance(outputs, dict):
        return False
    present = {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()} - {MANIFEST}
    if present != set(outputs):
        return False
    try:
        return all(isinstance(record, dict) and (folder / name).stat().st_size == record.get("bytes")
                   and sha256_file(folder / name) == record.get("sha256") for name, record in outputs.items())
    except OSError:
        return False


def verified(folder: Path, key: str) -> dict[str, Any] | None:
    """``folder``'s manifest if it was written under ``key`` and every output matches its sha256."""
    manifest = _read_manifest(folder)
    if manifest is None or (manifest.get("cache") or {}).get("key") != key:
        return None
    return manifest if outputs_match(folder, manifest.get("outputs")) else None


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link where the filesystem allows one (same device, owner rules), else a copy."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file())


def _warn(message: str) -> None:
    click.echo(f"warning: {message}", err=True)


def store(layout: RunLayout, step: str, key: str, target: Path) -> None:
    """Put the outputs and manifest just written to ``target`` into the store (best effort)."""
    entry = store_dir(layout.data_root, step, key)
    try:
        with atomic_dir(entry) as tmp:
            for path in _files(target):
                link_or_copy(path, tmp / path.relative_to(target))
    except (OSError, click.ClickException) as exc:
        reason = getattr(exc, "strerror", None) or getattr(exc, "message", None) or exc
        _warn(f"{step}: could not store outputs in the cache at {entry} ({reason}); "
              "the step's own outputs are complete")


class _Damaged(Exception):
    pass


def _reuse(layout: RunLayout, step: str, variant: str | None, key: str, entry: Path,
           cached: dict[str, Any], records: dict[str, dict[str, Any]], started: tuple[str, float]
           ) -> dict[str, Any] | None:
    """Materialise a store entry in the target with a fresh manifest; ``None`` if it is damaged."""
    manifest = {
        **cached,
        "run_id": layout.run_id,
        "inputs": records,
        "image": {"name": os.environ.get(IMAGE_ENV), "digest": os.environ.get(IMAGE_DIGEST_ENV)},
        "started_at": started[0],
        "cache": {"key": key, "hit": True,
                  "source": (cached.get("cache") or {}).get("source") or cached.get("run_id")},
    }
    try:
        with atomic_dir(layout.step_dir(step, variant)) as tmp:
            for path in _files(entry):
                if path != entry / MANIFEST:
                    link_or_copy(path, tmp / path.relative_to(entry))
            if not outputs_match(tmp, cached.get("outputs")):  # the very files served
                raise _Damaged
            manifest.update(finished_at=_now(), duration_seconds=round(time.perf_counter() - started[1], 3))
            write_manifest(tmp, manifest)
    except (_Damaged, FileNotFoundError):  # altered, or a file gone (another run removed it)
        if entry != layout.step_dir(step, variant):  # a store entry; the run's own dir is replaced by the work
            shutil.rmtree(entry, ignore_errors=True)
        _warn(f"{step}: removed damaged cache entry {entry}; running the step")
        return None
    except OSError as exc:
        _warn(f"{step}: could not reuse cache entry {entry} ({exc.strerror}); running the step")
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
    for a step whose outputs show their run ids and timings.
    """
    started = (_now(), time.perf_counter())
    target = layout.step_dir(step, variant)
    records, digests = hash_inputs(layout.run_dir, inputs, manifests_by_content=manifests_by_content)
    digest = os.environ.get(IMAGE_DIGEST_ENV) or None
    key = None
    cache_note: dict[str, Any] = dict(NO_CACHE)
    if digest:
        extra = None if manifests_by_content else {"run_id": layout.run_id, "image": os.environ.get(IMAGE_ENV)}
        key = cache_key(digest, step, variant, params, digests, extra)
        cache_note = {"key": key, "hit": False, "source": None}
        if not use_cache:
            cache_note["reason"] = "--no-cache"
        else:
            reused = _lookup(layout, step, variant, key, records, started)
            if reused is not None:
                source = reused["cache"].get("source") or reused["run_id"]
                click.echo(f"{step}: cache hit {key[:12]} (first computed in run {source}); outputs reused")
                return StepResult(reused, hit=True)

    with step_output(layout, step, params, variant, started=started) as run:
        run.input_records, run.cache = records, cache_note
        work(run)
    manifest = _read_manifest(target)
    assert manifest is not None
    if key is not None:
        store(layout, step, key, target)
    return StepResult(manifest, hit=False)


def _lookup(layout: RunLayout, step: str, variant: str | None, key: str,
            records: dict[str, dict[str, Any]], started: tuple[str, float]) -> dict[str, Any] | None:
    """A manifest of reused outputs now in the target, or ``None`` on a miss."""
    target = layout.step_dir(step, variant)
    own = verified(target, key)
    if own is not None:  # this run already has these outputs (a re-run, a resume): same files, new manifest
        return _reuse(layout, step, variant, key, target, own, records, started)
    entry = store_dir(layout.data_root, step, key)
    if not entry.is_dir():
        return None
    cached = _read_manifest(entry)
    if cached is None or (cached.get("cache") or {}).get("key") != key:
        shutil.rmtree(entry, ignore_errors=True)
        _warn(f"{step}: removed damaged cache entry {entry}; running the step")
        return None
    return _reuse(layout, step, variant, key, entry, cached, records, started)
