"""``clusterflow reproduce``: re-run one step of a finished run in a scratch data root and compare
every output's sha256 with what its manifest recorded.

The data root's writers are untrusted (README, Security model), and so is every manifest: what
one can make reproduce do is limited to this. Its image must be a clusterflow image of the same
step, by the digest the run recorded (a pull only by digest, and only from the registry the
user set); its arguments go to the step's entrypoint as a list (no shell, no docker flags);
its inputs are files below the run directory, opened without following a symlink and copied
only when their sha256 is still the manifest's; the only host path mounted is the scratch root.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import docker
import docker.errors

from clusterflow import pinning, spec
from clusterflow.runner import LocalRunner, PipelineImageMissing
from clusterflow.ui import files
from clusterflow_steps import params
from clusterflow_steps.artifacts import NOT_RECORDED
from clusterflow_steps.contract import CACHE, MANIFEST, MANIFEST_SCHEMA, RUNS, VARIANT, RunId, RunLayout

# the options a step never records (a commit, and a data root other than the mount): refused in a manifest
_OPTIONS_REFUSED = tuple(params.flag(name) for name in NOT_RECORDED)
_NO_CACHE, _RUN_ID = params.OPTIONS["cache"].no_flag, params.RUN_ID_FLAG


class Refused(click.ClickException):
    """A run, step or manifest reproduce will not act on: one line, exit 2."""

    exit_code = 2


@dataclass(frozen=True)
class Plan:
    """What a step's manifest says to re-run, checked: the image, its arguments, the files."""

    step: str
    variant: str | None
    image: str  # the reference to run: a pinned ref, or a local image's ID
    pinned: bool
    args: tuple[str, ...]
    inputs: dict[str, dict[str, Any]]  # run-relative name -> {"sha256", "bytes"}
    outputs: dict[str, dict[str, Any]]  # step-dir-relative name -> {"sha256", "bytes"}
    exit_status: int


def _names(name: Any, what: str) -> list[str]:
    parts = name.split("/") if isinstance(name, str) else [""]
    if not all(files.COMPONENT.fullmatch(part) for part in parts):
        raise Refused(f"the manifest lists {what} {name!r}, not a plain path below the run directory: "
                      "reproduce copies only files of the run")
    return parts


def _files(records: Any, what: str) -> dict[str, dict[str, Any]]:
    if not isinstance(records, dict):
        raise Refused(f"the manifest's {what} are not a mapping of files: not a manifest of the contract")
    for name, record in records.items():
        _names(name, what[:-1])
        if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
            raise Refused(f"the manifest's {what[:-1]} {name!r} has no sha256: not a manifest of the contract")
    return records


def _image(image: Any, step: str) -> tuple[str, bool]:
    """The reference to run and whether it is pinned; refuses anything but this step's image: a
    local build ``clusterflow/<step>:<tag>`` or a pinned ``<host>/clusterflow/<step>@<digest>``."""
    name: Any = image.get("name") if isinstance(image, dict) else None
    digest = image.get("digest") if isinstance(image, dict) else None
    found = pinning.STEP_IMAGE.fullmatch(name) if isinstance(name, str) else None
    pinned = bool(found and found["host"] and found["digest"] and not found["tag"])
    local = bool(found and not found["host"] and found["tag"] and not found["digest"])
    if not (pinned or local) or found is None or found["step"] != step:
        raise Refused(f"the manifest's image {name!r} is not a clusterflow {step} image: refusing to run it")
    if not isinstance(digest, str) or not pinning.DIGEST.fullmatch(digest) or pinned and digest != found["digest"]:
        raise Refused(f"the manifest's image digest {digest!r} is not the sha256 of {name}: refusing to run it")
    return (name, True) if pinned else (digest, False)  # a local build: the very image, by its ID


def plan(manifest: Any, run_id: str, step: str, variant: str | None) -> Plan:
    """Check a step's manifest against the contract and what the user asked; :class:`Refused` otherwise."""
    if not isinstance(manifest, dict) or manifest.get("schema") != MANIFEST_SCHEMA:
        raise Refused(f"the {step} manifest of run {run_id} is not a {MANIFEST_SCHEMA} manifest")
    if (manifest.get("run_id"), manifest.get("step"), manifest.get("variant")) != (run_id, step, variant):
        raise Refused(f"the manifest names run {manifest.get('run_id')!r}, step {manifest.get('step')!r}, variant "
                      f"{manifest.get('variant')!r}: not the one asked for")
    args = manifest.get("argv")
    if not isinstance(args, list) or not all(isinstance(a, str) for a in args):
        raise Refused("the manifest records no arguments (argv): the step ran before reproduce existed; re-run it")
    refused = next((a for a in args if a.split("=", 1)[0] in _OPTIONS_REFUSED or a.startswith(f"{_RUN_ID}=")), None)
    pairs = list(zip(args, args[1:], strict=False))
    if refused or pairs.count((_RUN_ID, run_id)) != 1 or args.count(_RUN_ID) != 1:
        raise Refused(f"the manifest's arguments {args!r} are not the step's own for run {run_id}: refusing them")
    image, pinned = _image(manifest.get("image"), step)
    status = manifest.get("exit_status")
    # the last of --cache/--no-cache wins
    return Plan(step, variant, image, pinned, (*args, _NO_CACHE), _files(manifest.get("inputs"), "inputs"),
                _files(manifest.get("outputs"), "outputs"), status if isinstance(status, int) else 0)


def read_manifest(data_dir: Path, run_id: str, step: str, variant: str | None) -> Any:
    """The manifest of a step of a run (never through a symlink); :class:`Refused` when there is none."""
    if run_id not in files.run_ids(data_dir):
        raise Refused(f"no run {run_id!r} under {data_dir}/{RUNS}: give the --run-id of a run there")
    if step not in spec.STEPS:
        raise Refused(f"unknown step {step!r}: choose one of {', '.join(spec.STEPS)}")
    per_variant = spec.ROLES[step].per_variant
    variants = files.variants(data_dir, run_id, step) if per_variant else []
    if per_variant and variant not in variants:
        raise Refused(f"run {run_id} has no {step} variant {variant!r}: give --variant, one of "
                      f"{', '.join(variants) or '(none)'}")
    if not per_variant and variant:
        with_variants = " and ".join(s for s in spec.STEPS if spec.ROLES[s].per_variant)
        raise Refused(f"--variant is for the {with_variants} step only, not {step}")
    relative = files.manifest(step, variant)
    try:
        text = files.read(data_dir, run_id, relative)
    except files.NotServed:
        raise Refused(f"run {run_id} has no {relative} (or it is a symlink): the step did not finish there") from None
    try:
        return json.loads(text)
    except ValueError:
        raise Refused(f"{RUNS}/{run_id}/{relative} is not JSON: not a manifest of the contract") from None


def copy_inputs(data_dir: Path, run_id: str, inputs: dict[str, dict[str, Any]], scratch_run: Path) -> None:
    """Copy each input into the scratch run, checking its sha256 on the copied bytes."""
    for name, record in sorted(inputs.items()):
        target = scratch_run / name
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = files.open_beneath(data_dir, [RUNS, run_id, *_names(name, "input")],
                                    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise Refused(f"input {name} of the manifest is unreadable ({exc.strerror}): inputs changed since "
                          "the run") from None
        digest = hashlib.sha256()
        with os.fdopen(fd, "rb") as source, open(target, "wb") as copy:
            if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
                raise Refused(f"input {name} of the manifest is not a regular file: inputs changed since the run")
            for block in iter(lambda: source.read(1 << 20), b""):
                digest.update(block)
                copy.write(block)
        if digest.hexdigest() != record["sha256"]:
            raise Refused(f"input {name} no longer has the sha256 its manifest recorded: inputs changed since the run")


def compare(step_dir: Path, outputs: dict[str, dict[str, Any]]) -> list[str]:
    """One line per output that differs from, is missing from or is not in the manifest."""
    present = {p.relative_to(step_dir).as_posix(): p for p in step_dir.rglob("*")
               if p.is_file() and not p.is_symlink()} if step_dir.is_dir() else {}
    present.pop(MANIFEST, None)
    lines = [f"missing: {name}" for name in sorted(set(outputs) - set(present))]
    lines += [f"extra: {name}" for name in sorted(set(present) - set(outputs))]
    lines += [f"differs: {name}" for name in sorted(set(outputs) & set(present))
              if hashlib.sha256(present[name].read_bytes()).hexdigest() != outputs[name]["sha256"]]
    return lines


def _registry() -> str | None:
    """The registry the user set (a digests file's, or ``CLUSTERFLOW_REGISTRY``): the only one pulled from."""
    try:
        return pinning.configured(os.environ)[1]
    except ValueError as exc:
        raise Refused(str(exc)) from None


def _give_to_steps(root: Path) -> None:
    """As root the steps run as the images' user: hand them the scratch root (reproduce made all of it)."""
    if os.getuid() == 0:
        for path in [root, *root.rglob("*")]:
            os.chown(path, spec.STEP_UID, spec.STEP_GID, follow_symlinks=False)


def reproduce(client: docker.DockerClient, data_dir: Path, run_id: str, found: Plan, scratch: Path,
              log: Any = print) -> list[str]:
    """Re-run the planned step into ``scratch`` (a fresh directory); the differences (empty: identical)."""
    step, variant = found.step, found.variant
    layout = RunLayout(scratch, run_id)
    layout.run_dir.mkdir(parents=True)
    (scratch / CACHE).mkdir()
    copy_inputs(data_dir, run_id, found.inputs, layout.run_dir)
    step_dir = layout.step_dir(step, variant)
    step_dir.parent.mkdir(parents=True, exist_ok=True)
    _give_to_steps(scratch)
    runner = LocalRunner(client, scratch, log=log)
    if found.pinned:
        registry = found.image.split("/", 1)[0]
        try:
            client.images.get(found.image)
        except docker.errors.ImageNotFound:
            if registry != _registry():
                raise Refused(f"{found.image} is not on this engine; pulling it from {registry} needs "
                              f"{pinning.REGISTRY_ENV}={registry} (reproduce pulls only from the registry you set)"
                              ) from None
    try:  # the runner's own resolution: a pinned image absent here is pulled by its digest
        digest = runner.ensure_image(found.image)
    except PipelineImageMissing as exc:
        raise Refused(f"{exc} (the image the run used: build or pull it by that digest)") from None
    task = spec.Task(step, found.image, found.args, variant)
    mounts = spec.mounts(str(scratch), cache=str(scratch / CACHE))
    code = runner.run_task(task, RunId(run_id), mounts, digest)
    if code != found.exit_status:
        return [f"the step exited {code}, the run's exited {found.exit_status}"]
    return compare(step_dir, found.outputs)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=Path("data"),
              show_default=True, help="Host data root holding runs/<run id>/.")
@click.option("--run-id", required=True, help="The run whose step to re-run.")
@click.option("--step", required=True, type=click.Choice(spec.STEPS), help="The step to re-run.")
@click.option("--variant", default=None, help="The cluster variant (cluster only), e.g. random.")
@click.option("--keep", is_flag=True, help="Keep the scratch data root (its path is printed).")
def reproduce_command(data_dir: Path, run_id: str, step: str, variant: str | None, keep: bool) -> None:
    """Re-run one step of a run in a scratch data root with its manifest's image and arguments
    (plus --no-cache) and compare every output's sha256: print `identical` (exit 0) or each file
    that differs, is missing or is extra (exit 1)."""
    if variant is not None and VARIANT.problem(variant):
        raise Refused(VARIANT.problem(variant) or "")
    data_dir = data_dir.resolve()
    found = plan(read_manifest(data_dir, run_id, step, variant), run_id, step, variant)
    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise click.ClickException(f"no Docker engine answers ({' '.join(str(exc).split())[:160]}): start one "
                                   "(scripts/ensure-docker.sh) or point DOCKER_HOST at one") from None
    scratch = Path(tempfile.mkdtemp(prefix="clusterflow-reproduce-"))
    try:
        differences = reproduce(client, data_dir, run_id, found, scratch, log=lambda line: click.echo(line, err=True))
    finally:
        if keep:
            click.echo(f"scratch data root kept: {scratch}", err=True)
        else:
            shutil.rmtree(scratch, ignore_errors=True)
    for line in differences or ["identical"]:
        click.echo(line)
    sys.exit(1 if differences else 0)


if __name__ == "__main__":
    reproduce_command()
