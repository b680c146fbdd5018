"""The plugin's file access: only allow-listed files of a run, never outside the data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from clusterflow.ui import files


@pytest.fixture
def root(tmp_path: Path) -> Path:
    """A data root with one run (report, metrics, manifests) and a secret beside it."""
    run = tmp_path / "data/runs/r1"
    for relative, text in {"report/report.html": "<p>report</p>", "evaluate/metrics.json": "{}",
                           "cluster/k-means++/manifest.json": '{"step": "cluster"}',
                           "prepare/features.npy": "not served"}.items():
        (run / relative).parent.mkdir(parents=True, exist_ok=True)
        (run / relative).write_text(text)
    (tmp_path / "secret.json").write_text("SECRET")
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/manifest.json").write_text("SECRET")
    return tmp_path / "data"


def test_serves_the_allow_listed_files_of_a_run(root):
    assert files.read(root, "r1", "report/report.html") == b"<p>report</p>"
    assert files.read(root, "r1", "evaluate/metrics.json") == b"{}"
    assert files.read(root, "r1", "cluster/k-means++/manifest.json") == b'{"step": "cluster"}'


@pytest.mark.parametrize("run_id, relative", [
    ("r1", "../../secret.json"), ("r1", "report/../../../secret.json"), ("..", "secret.json"),
    ("r1", "/etc/passwd"), ("r1", "//etc/manifest.json"), ("/etc", "manifest.json"), ("r1", ".hidden/manifest.json"),
    ("r1", "report\\..\\manifest.json"), ("r1", "prepare/features.npy"), ("r1", ""), ("r1", "report/"),
    ("r1", "report//report.html"), ("r1", "report/report.html\x00.json"),
])
def test_refuses_traversal_absolute_paths_and_other_files_with_a_400(root, run_id, relative):
    with pytest.raises(files.NotServed) as refused:
        files.read(root, run_id, relative)
    assert refused.value.status == 400 and "\n" not in str(refused.value)


def test_refuses_symlinks_that_leave_the_data_root(root):
    run = root / "runs/r1"
    (run / "evaluate/manifest.json").symlink_to(root.parent / "secret.json")
    (run / "linked").symlink_to(root.parent / "outside")
    (root / "runs/escape").symlink_to(root.parent / "outside")
    for run_id, relative in (("r1", "evaluate/manifest.json"), ("r1", "linked/manifest.json"),
                             ("escape", "manifest.json")):
        with pytest.raises(files.NotServed) as refused:
            files.read(root, run_id, relative)
        assert refused.value.status == 404 and str(refused.value).startswith("not found")


def test_a_symlink_inside_the_data_root_is_followed_but_a_fifo_is_not_read(root):
    (root / "runs/r1/prepare/manifest.json").symlink_to(root / "runs/r1/evaluate/metrics.json")
    assert files.read(root, "r1", "prepare/manifest.json") == b"{}"
    os.mkfifo(root / "runs/r1/report/manifest.json")
    with pytest.raises(files.NotServed):
        files.read(root, "r1", "report/manifest.json")


def test_missing_files_and_directories_are_404(root):
    for run_id, relative in (("r2", "report/report.html"), ("r1", "evaluate/manifest.json"),
                             ("r1", "report/report.html/manifest.json")):
        with pytest.raises(files.NotServed) as refused:
            files.read(root, run_id, relative)
        assert refused.value.status == 404


def test_a_data_root_that_is_itself_a_symlink_works(root, tmp_path):
    (tmp_path / "link").symlink_to(root)
    assert files.read(tmp_path / "link", "r1", "evaluate/metrics.json") == b"{}"


def test_reading_never_writes(root):
    before = sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*"))
    files.read(root, "r1", "report/report.html")
    files.run_ids(root)
    assert sorted((p, p.stat().st_mtime_ns) for p in root.rglob("*")) == before


def test_run_ids_lists_valid_run_directories_only(root):
    (root / "runs/.r1.tmp-x").mkdir()
    (root / "runs/bad name").mkdir()
    (root / "runs/a-file").write_text("")
    (root / "runs/linked").symlink_to(root / "runs/r1")
    assert files.run_ids(root) == ["r1"]
    assert files.run_ids(root / "nowhere") == []


@pytest.mark.parametrize("environ, expected", [
    ({"CLUSTERFLOW_DATA_ROOT": "/srv/cf", "CLUSTERFLOW_DATA_SOURCE": "/host/data"}, "/srv/cf"),
    ({"CLUSTERFLOW_DATA_SOURCE": "/host/data"}, "/host/data"),
    ({"CLUSTERFLOW_DATA_SOURCE": "clusterflow-data"}, "/data"),
    ({}, "/data"),
])
def test_data_root_setting(environ, expected):
    assert files.data_root(environ) == Path(expected)
