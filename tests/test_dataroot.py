"""A root orchestrator readying the data root never follows what a step planted, nor re-owns others' runs.

Real ownership changes: these tests run as root (as CI does). The steps' user is uid:gid 10001.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from clusterflow_steps.contract import RunId

from clusterflow import dataroot

STEPS = (10001, 10001)  # the images' user (images/base/Dockerfile), who must own a run's directory
OTHER = (4242, 4343)  # someone else, e.g. an earlier run's owner


pytestmark = pytest.mark.root  # they change file owners


@pytest.fixture(autouse=True)
def no_cache_source(monkeypatch):
    monkeypatch.delenv("CLUSTERFLOW_CACHE_SOURCE", raising=False)


def owner(path: Path) -> tuple[int, int]:
    info = path.lstat()
    return info.st_uid, info.st_gid


@pytest.fixture
def shadow(tmp_path: Path) -> Path:
    """A root-owned 0600 file in a root-owned directory outside the data root (an /etc stand-in)."""
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    secret = etc / "shadow"
    secret.write_text("root:secret\n")
    secret.chmod(0o600)
    return secret


def untouched(secret: Path) -> bool:
    folder = secret.parent
    return (owner(secret) == owner(folder) == (0, 0) and stat.S_IMODE(secret.stat().st_mode) == 0o600
            and stat.S_IMODE(folder.stat().st_mode) == 0o755)


@pytest.fixture
def data(tmp_path: Path) -> Path:
    """A data root that has had one run: ``runs/`` and ``cache/`` now belong to the steps' user."""
    root = tmp_path / "data"
    dataroot.prepare_run_dir(root, "first")
    return root


def test_a_fresh_data_root_gives_the_steps_the_run_directory_runs_and_the_cache(tmp_path):
    root = tmp_path / "data"
    run_dir = dataroot.prepare_run_dir(root, "r1")
    assert run_dir == root / "runs/r1" and run_dir.is_dir()
    assert owner(root / "runs") == owner(run_dir) == owner(root / "cache") == STEPS
    assert owner(root) == (0, 0)  # the operator's directory stays the operator's


@pytest.mark.parametrize("target", ["folder", "file"])
def test_a_planted_run_directory_symlink_is_refused_and_not_followed(data, shadow, target):
    link = data / "runs/next"
    link.symlink_to(shadow.parent if target == "folder" else shadow)
    os.chown(link, *STEPS, follow_symlinks=False)  # as a step would have made it
    with pytest.raises(ValueError) as refused:
        dataroot.prepare_run_dir(data, "next")
    message = str(refused.value)
    assert "\n" not in message and f"{link} is a symlink" in message
    assert untouched(shadow) and link.is_symlink()


@pytest.mark.parametrize("planted", ["runs", "cache"])
def test_a_symlinked_runs_or_cache_folder_is_refused(tmp_path, shadow, planted):
    root = tmp_path / "data"
    root.mkdir()
    (root / planted).symlink_to(shadow.parent)
    with pytest.raises(ValueError) as refused:
        dataroot.prepare_run_dir(root, "r1")
    assert "\n" not in str(refused.value) and f"{root / planted} is a symlink" in str(refused.value)
    assert untouched(shadow) and not (shadow.parent / "r1").exists()


def test_a_run_directory_that_is_a_file_is_refused(data):
    (data / "runs/next").write_text("")
    with pytest.raises(ValueError, match=r"runs/next is not a directory: refusing"):
        dataroot.prepare_run_dir(data, "next")


def test_a_symlink_planted_inside_an_existing_run_directory_is_not_followed(data, shadow):
    link = data / "runs/first/prepare"
    link.symlink_to(shadow.parent)
    (data / "runs/first/report").mkdir()
    assert dataroot.prepare_run_dir(data, "first") == data / "runs/first"
    assert untouched(shadow) and owner(link) == (0, 0)
    assert owner(data / "runs/first/report") == (0, 0)  # nothing inside is walked either


def test_existing_runs_and_folders_keep_their_owners(data):
    earlier = data / "runs/earlier"
    (earlier / "prepare").mkdir(parents=True)
    (earlier / "prepare/manifest.json").write_text("{}")
    (data / "cache/prepare").mkdir()
    for path in (data / "runs", data / "cache", earlier, earlier / "prepare", earlier / "prepare/manifest.json",
                 data / "cache/prepare"):
        os.chown(path, *OTHER)
    dataroot.prepare_run_dir(data, "later")
    assert owner(data / "runs/later") == STEPS
    assert {owner(p) for p in (data / "runs", data / "cache", data / "cache/prepare", earlier,
                               earlier / "prepare", earlier / "prepare/manifest.json")} == {OTHER}


def test_a_cache_store_outside_the_data_root_is_created_for_the_steps_and_checked(tmp_path, shadow, monkeypatch):
    store = tmp_path / "stores/clusterflow"
    monkeypatch.setenv("CLUSTERFLOW_CACHE_SOURCE", str(store))
    dataroot.prepare_run_dir(tmp_path / "data", "r1")
    assert owner(store) == STEPS and owner(store.parent) == (0, 0)
    assert not (tmp_path / "data/cache").exists()
    store.rmdir()
    store.symlink_to(shadow.parent)
    with pytest.raises(ValueError, match="is a symlink"):
        dataroot.prepare_run_dir(tmp_path / "data", "r2")
    assert untouched(shadow)


def test_a_cache_volume_needs_nothing_on_the_host(tmp_path, monkeypatch):
    monkeypatch.setenv("CLUSTERFLOW_CACHE_SOURCE", "clusterflow-cache")
    dataroot.prepare_run_dir(tmp_path / "data", "r1")
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["runs"]


def test_as_another_user_nothing_changes_owner(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    run_dir = dataroot.prepare_run_dir(tmp_path / "data", "r1")
    assert owner(run_dir) == owner(tmp_path / "data/cache") == (0, 0)  # the process's own (real) uid


@pytest.mark.parametrize("mode", [0o777, 0o2775, 0o755])
def test_as_another_user_what_it_creates_gets_the_data_roots_mode(tmp_path, monkeypatch, mode):
    """A non-root orchestrator cannot give the steps (uid 10001) what it creates: the steps can
    write it exactly when they can write the data root (0o755: the step then says what to fix)."""
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    data = tmp_path / "data"
    (data / "runs").mkdir(parents=True)
    (data / "runs").chmod(0o700)  # the operator's own: kept
    data.chmod(mode)
    run_dir = dataroot.prepare_run_dir(data, "r1")
    modes = {p.relative_to(data).as_posix(): stat.S_IMODE(p.stat().st_mode) for p in (run_dir, data / "cache")}
    assert modes == {"runs/r1": mode, "cache": mode}
    assert stat.S_IMODE((data / "runs").stat().st_mode) == 0o700


def test_as_the_steps_own_user_nothing_is_handed_over(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "getuid", lambda: 1000)
    monkeypatch.setattr(os, "getgid", lambda: 1000)
    data = tmp_path / "data"
    data.mkdir(mode=0o777)
    data.chmod(0o777)
    run_dir = dataroot.prepare_run_dir(data, "r1", steps_run_as=(1000, 1000))
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o777 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_invalid_run_id_is_refused_before_anything_is_made(tmp_path):
    with pytest.raises(ValueError):
        dataroot.prepare_run_dir(tmp_path / "data", RunId("../escape"))
    assert not (tmp_path / "data").exists()


def test_clusterflow_run_refuses_a_planted_run_directory_with_one_line_and_exit_2(tmp_path: Path, shadow: Path):
    from click.testing import CliRunner

    from clusterflow.cli import main

    data = tmp_path / "data"
    (data / "runs").mkdir(parents=True)
    (data / "runs" / "next").symlink_to(shadow.parent)
    result = CliRunner().invoke(main, ["run", "--run-id", "next", "--data-dir", str(data)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and "is a symlink: refusing to use it" in lines[0]
    assert owner(shadow) == (0, 0) and stat.S_IMODE(shadow.stat().st_mode) == 0o600
