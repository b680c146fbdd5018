"""Bounded inputs (issue 12, item 5): a small file that claims a huge array is refused before prepare
allocates it, with exit 2, one line naming the limit and how to raise it, and nothing written; the
refusals' peak memory is measured in a fresh process; files within the limits load, and raising a
limit by option or by environment variable lets a bigger one through."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from clusterflow_steps.prepare import limits
from tests.steps.conftest import Steps

REPO = Path(__file__).resolve().parents[2]
GIB = 1 << 30
MIB = 1 << 20
PEAK_RSS_BUDGET = 200 * MIB
BYTES_ENV, CELL_ENV = "CLUSTERFLOW_MAX_INPUT_BYTES", "CLUSTERFLOW_MAX_CSV_CELL_CHARS"


def npy_header(shape: tuple[int, ...], descr: str = "<f8") -> bytes:
    out = io.BytesIO()
    np.lib.format.write_array_header_1_0(out, {"descr": descr, "fortran_order": False, "shape": shape})
    return out.getvalue()


def zip_of_zeros(path: Path, header: bytes, zero_bytes: int) -> Path:
    """An .npz whose X.npy is ``header`` then ``zero_bytes`` zeros, deflated without holding them in memory."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive, archive.open("X.npy", "w") as member:
        member.write(header)
        block = bytes(16 * MIB)
        for start in range(0, zero_bytes, len(block)):
            member.write(block[:min(len(block), zero_bytes - start)])
    return path


def lie_about_size(path: Path, claimed: int) -> Path:
    """Rewrite the uncompressed size of the only member in both its local header and the directory."""
    data = bytearray(path.read_bytes())
    data[22:26] = claimed.to_bytes(4, "little")  # local file header
    central = data.rindex(b"PK\x01\x02")
    data[central + 24:central + 28] = claimed.to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


@pytest.fixture(autouse=True)
def _no_cgroup_limit(monkeypatch, tmp_path_factory):
    """In-process runs see no cgroup memory limit, whatever this machine has: the default is 1 GiB."""
    monkeypatch.setattr(limits, "CGROUP", tmp_path_factory.mktemp("cgroup"))


@pytest.fixture(scope="module")
def bombs(tmp_path_factory) -> dict[str, Path]:
    """The inputs of the issue, each a small file claiming (or inflating to) far more than the default limit."""
    root = tmp_path_factory.mktemp("bombs")
    header = npy_header((10**6, 10**6))  # 10^12 float64 elements: 8 TB
    (root / "claims.npy").write_bytes(header + bytes(208 - len(header)))
    zeros = int(1.5 * GIB)
    zip_of_zeros(root / "zeros.npz", npy_header((zeros // 8,)), zeros)
    small = npy_header((1000, 8))
    # the directory agrees with the header (64,000 bytes of data); the stream inflates to 256 MiB,
    # more than the peak memory the refusals may reach
    lie_about_size(zip_of_zeros(root / "lies.npz", small, 256 * MIB), len(small) + 1000 * 8 * 8)
    rows = "1,a\n" * 37_000
    (root / "label.csv").write_text("x,label\n" + rows + "2," + "b" * 20_000 + "\n")
    (root / "line.csv").write_text("a\n" + "1," * (20 * MIB) + "1\n")  # one 40 MB line
    return {path.stem: path for path in root.iterdir()}


def refused(steps: Steps, *args: str, env: dict[str, str] | None = None) -> str:
    """Run prepare on a fresh run id: exit 2, one line, no file written or left under the data root."""
    before = {p for p in steps.root.rglob("*") if not p.is_dir()}
    result = steps("prepare", *args, run_id="bomb", env=env, expect=2)
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output, result.stderr
    assert not steps.path("prepare", run_id="bomb").exists()
    assert {p for p in steps.root.rglob("*") if not p.is_dir()} == before, "a refusal wrote or left a file"
    return lines[0]


@pytest.mark.parametrize("bomb, names", [
    ("claims", ("shape (1000000, 1000000)", "8,000,000,000,000 bytes")),
    ("zeros", ("array X", "shape (201326592,)", "1,610,612,736 bytes")),
    ("label", ("line 37002", "cell longer than 1,000 characters")),
])
def test_each_bomb_is_refused_naming_the_limit_and_how_to_raise_it(steps, bombs, bomb, names):
    line = refused(steps, "--dataset", str(bombs[bomb]))
    option, env = ((limits.CELL_CHARS_OPTION, CELL_ENV) if bomb == "label" else (limits.INPUT_BYTES_OPTION, BYTES_ENV))
    assert f"raise {option} (or {env})" in line and str(bombs[bomb]) in line
    for words in names:
        assert words in line, (words, line)


def test_a_huge_csv_line_is_refused_before_it_is_read_whole(steps, bombs):
    line = refused(steps, "--dataset", str(bombs["line"]))
    assert "line 2 is longer than 33,554,432 characters" in line  # 1 GiB / 32 without a cgroup limit
    assert f"raise --max-input-bytes (or {BYTES_ENV})" in line


def test_a_zip_directory_that_lies_decompresses_no_more_than_it_claims(steps, bombs):
    line = refused(steps, "--dataset", str(bombs["lies"]))
    assert "not a readable .npz file (Bad CRC-32" in line  # read to the claimed end, found it is not the end


def peak_rss(args: list[str], tmp_path: Path) -> tuple[int, int, str]:
    """(exit code, peak RSS in bytes, stderr) of prepare run in a fresh child of a fresh process."""
    measure = ("import json, resource, subprocess, sys; "
               "p = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
               "print(json.dumps([p.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, p.stderr]))")
    step = [sys.executable, "-m", "clusterflow_steps.prepare", "--run-id", "bomb", "--data-root",
            str(tmp_path / "data"), "--max-input-bytes", str(GIB), *args]  # the default without a cgroup limit
    out = subprocess.run([sys.executable, "-c", measure, *step], capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": str(REPO / "steps"), "PATH": "/usr/bin:/bin"}, check=True)
    code, kib, stderr = json.loads(out.stdout)
    return code, kib * 1024, stderr


def test_refusals_stay_small_in_memory(bombs, tmp_path, capsys):
    peaks = {}
    for name in ("claims", "zeros", "lies", "label", "line"):
        code, peak, stderr = peak_rss(["--dataset", str(bombs[name])], tmp_path)
        assert code == 2 and len(stderr.splitlines()) == 1, stderr
        peaks[name] = peak
    with capsys.disabled():
        print("\npeak RSS of refusals (MiB):", {k: round(v / MIB, 1) for k, v in peaks.items()})
    assert max(peaks.values()) < PEAK_RSS_BUDGET, peaks
    assert not (tmp_path / "data" / "runs" / "bomb" / "prepare").exists()


def test_object_arrays_are_refused_without_unpickling(steps, tmp_path):
    path = tmp_path / "objects.npy"
    np.save(path, np.array([[1, "two"], [3, None]], dtype=object), allow_pickle=True)
    assert "holds Python objects" in refused(steps, "--dataset", str(path))


def test_npz_members_other_than_x_and_y_are_refused(steps, write_npy):
    line = refused(steps, "--dataset", str(write_npy("extra.npz", X=np.ones((3, 2)), y=np.zeros(3), z=np.ones(1))))
    assert "lists 3 arrays" in line and "save only those" in line
    many = write_npy("other.npz", X=np.ones((3, 2)), Z=np.ones(1))
    assert "holds Z.npy besides one X.npy and y.npy" in refused(steps, "--dataset", str(many))


def test_a_nested_archive_is_not_an_array(steps, tmp_path, write_npy):
    inner = write_npy("inner.npz", X=np.ones((3, 2)))
    path = tmp_path / "nested.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.write(inner, "X.npy")
    assert "not a readable .npz file" in refused(steps, "--dataset", str(path))


def test_a_zip_directory_that_claims_more_than_the_header_is_refused(steps, write_npy):
    path = lie_about_size(write_npy("big.npz", X=np.ones((3, 2))), 10**9)
    assert "the zip directory says 1,000,000,000 bytes but the array header needs 176" in refused(
        steps, "--dataset", str(path))


def test_memory_error_while_loading_is_one_line_exit_2(tmp_path):
    """A limit raised past what the process may allocate: numpy's MemoryError becomes a user error."""
    path = tmp_path / "claims.npy"
    path.write_bytes(npy_header((10**6, 10**6)))
    code = ("import resource, sys; resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30)); "
            "from clusterflow_steps.prepare.cli import main; main(prog_name='prepare')")
    result = subprocess.run([sys.executable, "-c", code, "--run-id", "m", "--data-root", str(tmp_path / "data"),
                             "--dataset", str(path), "--max-input-bytes", str(10**14)], capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(REPO / "steps"), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 2 and len(result.stderr.splitlines()) == 1, result.stderr
    assert "ran out of memory" in result.stderr and "lower --max-input-bytes" in result.stderr
    assert not (tmp_path / "data" / "runs" / "m" / "prepare").exists()


# 100 x 10 float64 features: exactly 8,000 bytes in memory.
def test_an_npy_at_the_limit_passes_and_one_byte_less_refuses(steps, write_npy):
    path = str(write_npy("f.npy", np.ones((100, 10))))
    assert "8,000 bytes" in refused(steps, "--dataset", path, "--max-input-bytes", "7999")
    steps("prepare", "--dataset", path, "--max-input-bytes", "8000")
    assert steps.array("prepare/features.npy").shape == (100, 10)
    assert "8,000 bytes" in refused(steps, "--dataset", path, env={BYTES_ENV: "7999"})
    steps("prepare", "--dataset", path, env={BYTES_ENV: "8000"}, run_id="env")


def test_int_features_count_their_float64_copy(steps, write_npy):
    """An int8 file of 1,000 elements becomes 8,000 bytes of float64 features: 9,000 bytes in all."""
    path = str(write_npy("i.npy", np.ones((100, 10), dtype=np.int8)))
    assert "9,000 bytes" in refused(steps, "--dataset", path, "--max-input-bytes", "8999")
    steps("prepare", "--dataset", path, "--max-input-bytes", "9000")


def test_npz_arrays_share_one_budget(steps, write_npy):
    path = str(write_npy("xy.npz", X=np.ones((100, 10)), y=np.zeros(100, dtype=np.int64)))
    line = refused(steps, "--dataset", path, "--max-input-bytes", "9599")  # 8,000 + 100 x (8 + 8)
    assert "array y" in line and "with the arrays before it" in line and "9,600 bytes" in line
    steps("prepare", "--dataset", path, "--max-input-bytes", "9600")
    assert steps.manifest("prepare")["results"]["n_labels"] == 1


def test_csv_rows_count_against_the_budget(steps, tmp_path):
    path = tmp_path / "rows.csv"
    path.write_text("a,b\n" + "1,2\n" * 100)  # 100 x 2 float64 = 1,600 bytes
    assert "100+ rows of 2 features" in refused(steps, "--dataset", str(path), "--max-input-bytes", "1599")
    steps("prepare", "--dataset", str(path), "--max-input-bytes", "1600")


def test_csv_labels_count_as_numpy_text(steps, tmp_path):
    path = tmp_path / "labels.csv"
    path.write_text("a,kind\n" + "1,abcde\n" * 10)  # 10 x (8 + 5 x 4) = 280 bytes
    line = refused(steps, "--dataset", str(path), "--label-column", "kind", "--max-input-bytes", "279")
    assert "labels of up to 5 characters" in line
    steps("prepare", "--dataset", str(path), "--label-column", "kind", "--max-input-bytes", "280")


def test_a_csv_cell_at_the_limit_passes_and_a_longer_one_refuses(steps, tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("a,kind\n1,x\n2," + "y" * 1000 + "\n")
    steps("prepare", "--dataset", str(path), "--label-column", "kind")  # the default: 1,000 characters
    longer = tmp_path / "longer.csv"
    longer.write_text("a,kind\n1,x\n2," + "y" * 1001 + "\n")
    assert "line 3 has a cell longer than 1,000" in refused(steps, "--dataset", str(longer))
    steps("prepare", "--dataset", str(longer), "--label-column", "kind", "--max-csv-cell-chars", "1001", run_id="opt")
    steps("prepare", "--dataset", str(longer), "--label-column", "kind", env={CELL_ENV: "1001"}, run_id="env")


def test_a_csv_line_at_the_derived_limit_passes(steps, tmp_path):
    """With --max-input-bytes 3200 (and shorter cells) a line may hold 100 characters, newline included."""
    path = tmp_path / "wide.csv"
    header = ",".join(f"c{i:02}" for i in range(24))  # 24 columns named in 95 characters
    rows = ("1," * 24 + "1\n") * 2  # 25 cells
    path.write_text(header + ",zzz\n" + rows)  # a header of 100 characters
    bounds = ("--max-input-bytes", "3200", "--max-csv-cell-chars", "10")
    steps("prepare", "--dataset", str(path), *bounds)
    path.write_text(header + ",zzzz\n" + rows)  # 101
    assert "line 1 is longer than 100 characters" in refused(steps, "--dataset", str(path), *bounds)


def test_limits_are_not_cache_key_params(steps, write_npy):
    """They refuse inputs but never change an output: a run under other limits is the same run."""
    path = str(write_npy("f.npy", np.ones((4, 2))))
    steps("prepare", "--dataset", path, "--max-input-bytes", "4096", "--max-csv-cell-chars", "9")
    assert steps.manifest("prepare")["params"] == {"dataset": path, "label_column": None, "seed": 0}


@pytest.mark.parametrize("files, expected", [
    ({"memory.max": "2147483648\n"}, GIB // 2),
    ({"memory.max": "max\n"}, GIB),
    ({"memory/memory.limit_in_bytes": "1073741824\n"}, GIB // 4),
    ({"memory/memory.limit_in_bytes": "9223372036854771712\n"}, GIB),  # cgroup v1's "unlimited"
    ({}, GIB),
])
def test_the_default_is_a_quarter_of_the_cgroup_memory_limit(tmp_path, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert limits.default_input_bytes(tmp_path) == expected


@pytest.mark.parametrize("option", ["--max-input-bytes", "--max-csv-cell-chars"])
def test_limits_must_be_positive(steps, option):
    result = steps("prepare", option, "0", expect=2)
    assert f"'{option}'" in result.stderr and "0 is not in the range x>=1" in result.stderr
