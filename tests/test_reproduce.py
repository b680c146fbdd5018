"""Reproduce this step, without an engine: the docker run line and what `clusterflow reproduce`
refuses before it runs anything (a manifest is written by a step: untrusted)."""

from __future__ import annotations

import json
import shlex
import shutil
from pathlib import Path
from typing import Any

import docker.errors
import pytest
from click.testing import CliRunner

from clusterflow import cli, reproduce
from clusterflow_steps import launch
from clusterflow_steps.cluster.cli import main as cluster
from clusterflow_steps.prepare.cli import main as prepare

DIGEST = "sha256:" + "5e" * 32
PINNED = f"127.0.0.1:5000/clusterflow/cluster@{DIGEST}"
RUN = "r1"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A run whose prepare and cluster[random] ran in-process, as the step containers run them."""
    root = tmp_path_factory.mktemp("data")
    for command, args, image in ((prepare, ["--dataset", "digits"], "clusterflow/prepare:0.1.0"),
                                 (cluster, ["--init", "random", "--variant", "random", "--n-init", "1"],
                                  "clusterflow/cluster:0.1.0")):
        env = {"CLUSTERFLOW_IMAGE": image, "CLUSTERFLOW_IMAGE_DIGEST": DIGEST}
        result = CliRunner().invoke(command, ["--run-id", RUN, "--data-root", str(root), *args], env=env)
        assert result.exit_code == 0, result.output
    return root


def manifest(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "runs" / RUN / "cluster/random/manifest.json").read_text())


def invoke(data_dir: Path, *args: str) -> Any:
    return CliRunner().invoke(cli.main, ["reproduce", "--data-dir", str(data_dir), "--run-id", RUN, *args])


# --- the docker run line -------------------------------------------------------------------------

def test_the_line_spells_the_step_policy_mounts_env_image_and_arguments():
    args = ["--run-id", RUN, "--init", "random", "--note", "it's <b> $(id) `x`"]
    words = shlex.split(launch.reproduce_line(PINNED, args, DIGEST))
    assert words[:5] == ["docker", "run", "--rm", "--user", "$(id -u):$(id -g)"]
    options = " ".join(words[5:words.index(PINNED)])
    for option in ("--network none", "--read-only", "--tmpfs /tmp:rw,nosuid,nodev,noexec,size=512m",
                   "--cap-drop ALL", "--security-opt no-new-privileges", "--pids-limit 256",
                   "--mount type=bind,src=$PWD/data,dst=/data",
                   "--mount type=bind,src=$PWD/data/cache,dst=/data/cache,readonly",
                   f"--env CLUSTERFLOW_IMAGE={PINNED}", f"--env CLUSTERFLOW_IMAGE_DIGEST={DIGEST}"):
        assert option in options
    assert words[words.index(PINNED):] == [PINNED, *args]  # the arguments, back as they were


def test_a_user_dataset_is_mounted_read_only_from_beside_the_data_directory():
    line = launch.reproduce_line("clusterflow/prepare:0.1.0", ["--run-id", RUN, "--dataset", "/input/points.csv"])
    assert "--mount type=bind,src=$PWD/points.csv,dst=/input/points.csv,readonly" in " ".join(shlex.split(line))


@pytest.mark.parametrize("image, args", [
    ("--privileged", []),  # an option, not an image
    ("clusterflow/prepare:0.1.0", ["--dataset", "/input/a,src=/etc,dst=/input/a"]),  # extra mount fields
    ("clusterflow/prepare:0.1.0", ["--dataset", "/input/.."]),
])
def test_the_line_refuses_what_would_change_the_docker_command(image, args):
    with pytest.raises(ValueError):
        launch.reproduce_line(image, args)
    assert launch.manifest_line({"image": {"name": image}, "argv": args}) is None


@pytest.mark.parametrize("recorded", [{}, {"image": {"name": "clusterflow/cluster:0.1.0"}},
                                      {"image": {"name": "clusterflow/cluster:0.1.0"}, "argv": "--run-id r1"},
                                      {"image": {"name": 7}, "argv": []}])
def test_a_manifest_without_its_arguments_or_image_gets_no_line(recorded):
    assert launch.manifest_line(recorded) is None


def test_steps_record_their_arguments_but_not_where_the_data_root_was_mounted(data_dir):
    argv = manifest(data_dir)["argv"]
    assert sorted(zip(argv[::2], argv[1::2], strict=True)) == [("--init", "random"), ("--n-init", "1"),
                                                                ("--run-id", RUN), ("--variant", "random")]


# --- what reproduce refuses ------------------------------------------------------------------------

def refused(data_dir: Path, *args: str) -> str:
    result = invoke(data_dir, *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_it_refuses_an_unknown_run_step_or_variant(data_dir):
    assert f"no run '{RUN}'" in refused(data_dir.parent, "--step", "cluster", "--variant", "random")
    assert "no cluster variant 'pca'" in refused(data_dir, "--step", "cluster", "--variant", "pca")
    assert "give --variant" in refused(data_dir, "--step", "cluster")
    assert "no evaluate/manifest.json" in refused(data_dir, "--step", "evaluate")
    assert "--variant is for the cluster step only" in refused(data_dir, "--step", "prepare", "--variant", "random")
    assert invoke(data_dir, "--step", "train").exit_code == 2


def tampered(data_dir: Path, tmp_path: Path, **changes: Any) -> Path:
    """A copy of the run whose cluster[random] manifest has ``changes``."""
    copy = tmp_path / "data"
    shutil.copytree(data_dir, copy, symlinks=True)
    path = copy / "runs" / RUN / "cluster/random/manifest.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))
    return copy


@pytest.mark.parametrize("changes, says", [
    ({"schema": "other/1"}, "not a clusterflow.manifest/1 manifest"),
    ({"step": "evaluate"}, "not the one asked for"),
    ({"argv": None}, "records no arguments"),
    ({"argv": ["--run-id", RUN, "--commit-cache"]}, "refusing them"),
    ({"argv": ["--run-id", RUN, "--data-root", "/etc"]}, "refusing them"),
    ({"argv": ["--run-id", "other"]}, "refusing them"),
    ({"argv": ["--run-id", RUN, "--run-id=other"]}, "refusing them"),
    ({"image": {"name": "alpine:3", "digest": DIGEST}}, "not a clusterflow cluster image"),
    ({"image": {"name": "clusterflow/prepare:0.1.0", "digest": DIGEST}}, "not a clusterflow cluster image"),
    ({"image": {"name": "evil.example/x/clusterflow/cluster@" + DIGEST, "digest": DIGEST}}, "not a clusterflow"),
    ({"image": {"name": f"clusterflow/cluster:0.1.0@{DIGEST}", "digest": DIGEST}}, "not a clusterflow"),
    ({"image": {"name": "127.0.0.1:5000/clusterflow/cluster:0.1.0", "digest": DIGEST}}, "not a clusterflow"),
    ({"image": {"name": f"clusterflow/cluster@{DIGEST}", "digest": DIGEST}}, "not a clusterflow"),
    ({"image": {"name": PINNED, "digest": "sha256:" + "00" * 32}}, "is not the sha256 of"),
    ({"image": {"name": "clusterflow/cluster:0.1.0", "digest": None}}, "is not the sha256 of"),
    ({"inputs": {"../../../etc/passwd": {"sha256": "0" * 64}}}, "not a plain path below the run directory"),
    ({"inputs": {"/input/points.csv": {"sha256": "0" * 64}}}, "not a plain path below the run directory"),
    ({"outputs": {"../x": {"sha256": "0" * 64}}}, "not a plain path below the run directory"),
    ({"outputs": {"labels.npy": "abc"}}, "has no sha256"),
])
def test_it_refuses_a_manifest_that_is_not_the_contracts(data_dir, tmp_path, changes, says):
    line = refused(tampered(data_dir, tmp_path, **changes), "--step", "cluster", "--variant", "random")
    assert says in line


def test_it_refuses_a_manifest_that_is_not_json_or_a_symlink(data_dir, tmp_path):
    copy = tampered(data_dir, tmp_path)
    path = copy / "runs" / RUN / "cluster/random/manifest.json"
    path.write_text("{")
    assert "is not JSON" in refused(copy, "--step", "cluster", "--variant", "random")
    path.unlink()
    path.symlink_to(data_dir / "runs" / RUN / "cluster/random/manifest.json")
    assert "or it is a symlink" in refused(copy, "--step", "cluster", "--variant", "random")


def test_inputs_are_copied_only_while_their_sha256_is_the_manifests(data_dir, tmp_path):
    copy = tampered(data_dir, tmp_path)
    found = reproduce.plan(manifest(copy), RUN, "cluster", "random")
    assert "prepare/features.npy" in found.inputs and found.args[-1] == "--no-cache"
    scratch = tmp_path / "scratch"
    reproduce.copy_inputs(copy, RUN, found.inputs, scratch)
    assert (scratch / "prepare/features.npy").read_bytes() == \
        (copy / "runs" / RUN / "prepare/features.npy").read_bytes()
    features = copy / "runs" / RUN / "prepare/features.npy"
    features.write_bytes(features.read_bytes() + b"\0")
    with pytest.raises(reproduce.Refused, match="inputs changed since the run"):
        reproduce.copy_inputs(copy, RUN, found.inputs, tmp_path / "scratch2")
    features.unlink()
    features.symlink_to(data_dir / "runs" / RUN / "prepare/features.npy")  # same bytes, through a link
    with pytest.raises(reproduce.Refused, match="inputs changed since the run"):
        reproduce.copy_inputs(copy, RUN, found.inputs, tmp_path / "scratch3")


class NoImages:
    """An engine without the image (what a pull would be asked of)."""

    class images:  # noqa: N801 - the docker SDK's attribute
        @staticmethod
        def get(ref: str):
            raise docker.errors.ImageNotFound(ref)

        @staticmethod
        def pull(*args, **kwargs):
            raise AssertionError("pulled from a registry nobody set")


def test_a_pinned_image_is_pulled_only_from_the_registry_the_user_set(data_dir, tmp_path, monkeypatch):
    copy = tampered(data_dir, tmp_path, image={"name": PINNED, "digest": DIGEST})
    found = reproduce.plan(manifest(copy), RUN, "cluster", "random")
    monkeypatch.delenv("CLUSTERFLOW_REGISTRY", raising=False)
    monkeypatch.delenv("CLUSTERFLOW_DIGESTS", raising=False)
    with pytest.raises(reproduce.Refused, match="needs CLUSTERFLOW_REGISTRY=127.0.0.1:5000"):
        reproduce.reproduce(NoImages(), copy, RUN, found, tmp_path / "scratch")


def test_outputs_are_compared_file_by_file(tmp_path):
    (tmp_path / "a").write_bytes(b"a")
    (tmp_path / "extra").write_bytes(b"x")
    (tmp_path / "manifest.json").write_text("{}")
    sha = {"a": "ca978112ca1bbdcafac231b39a23dc4da786eff8147c4e72b9807785afee48bb"}  # sha256 of b"a"
    assert reproduce.compare(tmp_path, {"a": {"sha256": sha["a"]}, "extra": {"sha256": "0" * 64}}) == ["differs: extra"]
    assert reproduce.compare(tmp_path, {"a": {"sha256": sha["a"]}, "gone": {"sha256": "0"}}) == [
        "missing: gone", "extra: extra"]


def test_a_commit_stores_the_steps_own_arguments(data_dir, tmp_path):
    copy = tampered(data_dir, tmp_path)
    args = ["--run-id", RUN, "--data-root", str(copy), "--init", "random", "--variant", "random", "--n-init", "1"]
    env = {"CLUSTERFLOW_IMAGE": "clusterflow/cluster:0.1.0", "CLUSTERFLOW_IMAGE_DIGEST": DIGEST}
    result = CliRunner().invoke(cluster, [*args, "--commit-cache"], env=env)
    assert result.exit_code == 0, result.output
    [stored] = (copy / "cache/cluster").glob("*/manifest.json")
    assert json.loads(stored.read_text())["argv"] == manifest(copy)["argv"]
