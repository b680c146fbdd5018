"""A data root that refuses writes (full, over quota, read-only, not ours): exit 2 with one line,
the temporary directory removed, and every output written before it byte-identical."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import numpy as np
import pytest

from clusterflow_steps import artifacts
from clusterflow_steps.artifacts import UserError, atomic_dir
from tests.steps.conftest import Steps, snapshot

PREPARE = ("--dataset", "synthetic", "--n-samples", "60", "--n-features", "4", "--n-centers", "3")


@pytest.fixture
def prepared(steps: Steps) -> Steps:
    """A complete prepare output (seed 0) that a failing second write must leave as it is."""
    steps("prepare", *PREPARE)
    steps("cluster", "--init", "random")
    return steps


def half_written_save(code: int):
    """``np.save`` that writes part of the file, then fails the way a full disk does."""
    def save(path, array, *args, **kwargs):
        with open(path, "wb") as fh:
            fh.write(b"\x93NUMPY" + b"\0" * 100)
        raise OSError(code, os.strerror(code))

    return save


def one_line(result) -> str:
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize(("code", "words"), [
    (errno.ENOSPC, "no space left under"),
    (errno.EDQUOT, "disk quota exceeded under"),
])
@pytest.mark.parametrize("step", ["prepare", "cluster"])
def test_a_full_data_root_is_one_line_and_leaves_the_previous_output(prepared, monkeypatch, code, words, step):
    before = snapshot(prepared.root)
    monkeypatch.setattr(np, "save", half_written_save(code))
    args = (*PREPARE[:-2], "--seed", "1") if step == "prepare" else ("--init", "random", "--n-clusters", "4")
    line = one_line(prepared(step, *args, "--no-cache", expect=2))
    parent = prepared.path("prepare").parent if step == "prepare" else prepared.path("cluster")
    assert f"{words} {parent}: free space or use a bigger data root" in line
    assert snapshot(prepared.root) == before  # no temporary directory, nothing changed


def test_a_read_only_data_root_at_the_rename_is_one_line(prepared, monkeypatch):
    before = snapshot(prepared.root)

    def read_only(root: Path) -> None:
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(root))

    monkeypatch.setattr(artifacts, "_fsync_tree", read_only)
    line = one_line(prepared("prepare", *PREPARE[:-2], "--seed", "2", "--no-cache", expect=2))
    assert "the data root is read-only" in line and "mount it read-write" in line
    assert snapshot(prepared.root) == before


def test_a_failed_second_rename_puts_the_previous_output_back(tmp_path, monkeypatch):
    target = tmp_path / "step"
    target.mkdir()
    (target / "out.txt").write_text("previous")
    real_rename = os.rename

    def rename(src, dst):
        if ".tmp-" in os.fspath(src):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    with pytest.raises(UserError, match="no space left under"):
        with atomic_dir(target) as tmp:
            (tmp / "out.txt").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["step"] and (target / "out.txt").read_text() == "previous"


def test_other_os_errors_are_not_blamed_on_the_data_root(tmp_path):
    elsewhere = tmp_path / "input.npy"
    with pytest.raises(PermissionError):
        with atomic_dir(tmp_path / "data" / "step"):
            raise PermissionError(errno.EACCES, "Permission denied", str(elsewhere))
    with pytest.raises(FileNotFoundError):
        with atomic_dir(tmp_path / "data" / "step"):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory")
    assert list((tmp_path / "data").iterdir()) == []


def test_a_short_write_without_errno_on_a_full_disk_is_no_space(prepared, monkeypatch):
    """numpy's tofile reports "N requested and M written" with no errno when the disk fills."""
    before = snapshot(prepared.root)

    def short_write(path, array, *args, **kwargs):
        raise OSError("1280000 requested and 502752 written")

    monkeypatch.setattr(np, "save", short_write)
    full = os.statvfs_result((4096, 4096, 512, 0, 0, 1000, 0, 0, 0, 255))
    monkeypatch.setattr(os, "statvfs", lambda path: full)
    line = one_line(prepared("prepare", *PREPARE[:-2], "--seed", "3", "--no-cache", expect=2))
    assert "no space left under" in line
    assert snapshot(prepared.root) == before


def test_a_short_write_with_space_left_is_not_blamed_on_the_data_root(prepared, monkeypatch):
    def short_write(path, array, *args, **kwargs):
        raise OSError("1280000 requested and 502752 written")

    monkeypatch.setattr(np, "save", short_write)
    with pytest.raises(OSError, match="requested and"):
        prepared("prepare", *PREPARE[:-2], "--seed", "3", "--no-cache", expect=None)
