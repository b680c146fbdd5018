"""Row 3: image sizes (shared layers once), cold build, warm rebuild after a one-line code change."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import docker

from benchmarks.measure import REPO, Stat, Table, repeat, run_process
from clusterflow import spec
from clusterflow.version import VERSION

BUILD = REPO / "scripts" / "build-images.sh"
# What scripts/build-images.sh reads (the rest of the repo is outside its build context).
CONTEXT = ("scripts", "images", "steps/clusterflow_steps", "VERSION", ".dockerignore")
CHANGED = "steps/clusterflow_steps/contract.py"  # a module every step image copies


def layer_sizes(client: docker.DockerClient, image: str) -> dict[str, int]:
    """Size of each layer of ``image`` by chain id, from the engine's layer store."""
    root = Path(client.info()["DockerRootDir"]) / "image" / client.info()["Driver"] / "layerdb" / "sha256"
    sizes, chain = {}, ""
    for diff in client.images.get(image).attrs["RootFS"]["Layers"]:
        chain = diff if not chain else "sha256:" + hashlib.sha256(f"{chain} {diff}".encode()).hexdigest()
        sizes[chain] = int((root / chain.removeprefix("sha256:") / "size").read_text())
    return sizes


def sizes(client: docker.DockerClient) -> tuple[Table, dict[str, int]]:
    """Each step image's size and (key ``four``) the bytes of their distinct layers, in bytes."""
    table = Table("Images: size of each step image and of the four together", ("image", "size", "layers"))
    union: dict[str, int] = {}
    measured = {}
    for step in spec.STEPS:
        image = spec.image_ref(step, VERSION)
        layers = layer_sizes(client, image)
        union.update(layers)
        measured[step] = client.images.get(image).attrs["Size"]
        table.add(step, f"{measured[step] / 1e6:.1f} MB", len(layers))
    measured["four"] = sum(union.values())
    table.add("**the four, shared layers once**", f"{measured['four'] / 1e6:.1f} MB", len(union))
    return table, measured


def _build(context: Path, *args: str) -> float:
    source = _git("config", "--get", "remote.origin.url") or "https://github.com/clusterflow/clusterflow"
    env = {**os.environ, "CLUSTERFLOW_REVISION": _git("rev-parse", "HEAD"), "CLUSTERFLOW_SOURCE": source}
    return run_process([str(context / "scripts" / "build-images.sh"), *args], env=env, timeout=3600).seconds


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(REPO), *args], capture_output=True, text=True).stdout.strip()


def warm_rebuilds(repeats: int) -> Stat:
    """Rebuild all images after a one-line change of code every step image holds, in a copy of the
    build context (the working tree is never touched); then rebuild from the tree (not timed)."""
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-context-") as tmp:
        context = Path(tmp)
        for name in CONTEXT:
            (shutil.copytree if (REPO / name).is_dir() else shutil.copy2)(REPO / name, context / name)
        _build(context)  # the copy's own starting point (same layers as the tree's)
        changed, original = context / CHANGED, (context / CHANGED).read_text()
        counter = iter(range(1, 1 << 30))

        def rebuild() -> float:
            changed.write_text(original + f"# benchmark change {next(counter)}\n")
            return _build(context)

        try:
            return repeat(rebuild, repeats)
        finally:
            _build(REPO)


def builds(cold_repeats: int, warm_repeats: int) -> tuple[Table, Stat]:
    """The build-time table and the warm rebuild's :class:`Stat`."""
    table = Table("Images: build times (scripts/build-images.sh, core, base and the four step images)",
                  ("build", "wall time"))
    if cold_repeats:
        table.add("cold (`--no-cache`; python base present)", repeat(lambda: _build(REPO, "--no-cache"),
                                                                     cold_repeats).cell())
    warm = warm_rebuilds(warm_repeats)
    table.add(f"warm, after a one-line change in {CHANGED} (all four step images rebuilt)", warm.cell())
    table.add("no change (all layers cached)", repeat(lambda: _build(REPO), warm_repeats).cell())
    return table, warm
