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


def test_no_symlink_is_followed_even_inside_the_data_root(root):
    """Steps write plain files; a symlink in a run was planted by whoever can write the data root."""
    (root / "runs/r1/prepare/manifest.json").symlink_to(root / "runs/r1/evaluate/metrics.json")
    (root / "runs/r1/linked").symlink_to("cluster")
    (root / "runs/alias").symlink_to("r1")
    for run_id, relative in (("r1", "prepare/manifest.json"), ("r1", "linked/k-means++/manifest.json"),
                             ("alias", "evaluate/metrics.json")):
        with pytest.raises(files.NotServed) as refused:
            files.read(root, run_id, relative)
        assert refused.value.status == 404 and not files.is_served(root, run_id, relative)


def test_a_fifo_is_not_opened_for_reading_and_never_hangs(root):
    os.mkfifo(root / "runs/r1/report/manifest.json")
    with pytest.raises(files.NotServed) as refused:
        files.read(root, "r1", "report/manifest.json")
    assert refused.value.status == 404


def test_a_file_over_32_mib_is_refused_with_a_413(root):
    report = root / "runs/r1/report/report.html"
    with report.open("r+b") as file:
        file.truncate(32 * 1024 * 1024)  # sparse: the limit itself is served
    assert len(files.read(root, "r1", "report/report.html")) == 32 * 1024 * 1024
    with report.open("r+b") as file:
        file.truncate(32 * 1024 * 1024 + 1)
    with pytest.raises(files.NotServed) as refused:
        files.read(root, "r1", "report/report.html")
    assert refused.value.status == 413 and "\n" not in str(refused.value)
    assert not files.is_served(root, "r1", "report/report.html")


# --- the directory-swap race, made deterministic: the swap happens inside the request ---------------

SWAPPED = ["runs", "runs/r1", "runs/r1/report"]


@pytest.mark.parametrize("swapped", SWAPPED)
def test_a_directory_swapped_for_a_symlink_mid_request_serves_nothing_from_outside(root, monkeypatch, swapped):
    """Just before the request opens ``swapped`` (alone, or as part of a longer path), the directory
    is moved aside and a symlink to a copy outside the data root, holding a secret report, put in
    its place. The request must fail, not serve the secret."""
    elsewhere = root.parent / "elsewhere"
    (elsewhere / "runs/r1/report").mkdir(parents=True)
    (elsewhere / "runs/r1/report/report.html").write_text("SECRET")
    real_open, swaps = os.open, []

    def open_after_a_swap(path, flags, mode=0o777, *, dir_fd=None):
        name = os.fspath(path)
        opens_it = name == swapped.rsplit("/", 1)[-1] if dir_fd is not None else (
            name.startswith(str(root) + "/") and os.path.relpath(name, root).startswith(swapped + "/"))
        if opens_it and not swaps:
            (root / swapped).rename(root / f"{swapped}.moved")
            (root / swapped).symlink_to(elsewhere / swapped)
            swaps.append(name)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_after_a_swap)
    with pytest.raises(files.NotServed) as refused:
        files.read(root, "r1", "report/report.html")
    assert swaps, "the request never opened the swapped directory"
    assert refused.value.status == 404 and str(refused.value) == "not found: runs/r1/report/report.html"


def test_a_file_swapped_for_a_symlink_after_its_directory_was_opened_is_not_served(root, monkeypatch):
    real_open, swaps = os.open, []
    report = root / "runs/r1/report/report.html"

    def open_after_a_swap(path, flags, mode=0o777, *, dir_fd=None):
        if os.fspath(path) in ("report.html", str(report)) and not swaps:
            report.unlink()
            report.symlink_to(root.parent / "secret.json")
            swaps.append(path)
        return real_open(path, flags, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", open_after_a_swap)
    with pytest.raises(files.NotServed) as refused:
        files.read(root, "r1", "report/report.html")
    assert swaps and refused.value.status == 404


def test_runs_that_is_a_symlink_lists_nothing(root, tmp_path):
    (tmp_path / "other").mkdir()
    (root / "runs").rename(tmp_path / "other/runs")
    (root / "runs").symlink_to(tmp_path / "other/runs")
    assert files.run_ids(root) == []
    assert not files.is_served(root, "r1", "report/report.html")


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
