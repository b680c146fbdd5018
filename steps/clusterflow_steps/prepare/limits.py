"""How big an input prepare accepts, checked before anything is allocated for it.

A small file can claim a huge array: a 208-byte ``.npy`` header can declare 10^12 elements, a
1.5 MB ``.npz`` of zeros inflates to 1.5 GiB, a 169 KB CSV with one 20,000-character label made
numpy's fixed-width label array 6.1 GiB. So every size is read from what the file *declares*
(``.npy`` header, zip directory, CSV cells counted while streaming) and compared with a budget
before numpy allocates; only then is the data read, through readers that cannot read more.
Each refusal is one line naming the limit and the option (and variable) that raises it.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.params import OPTIONS, Option
from clusterflow_steps.cgroup import CGROUP, memory_limit

INPUT_BYTES, CELL_CHARS = OPTIONS["max_input_bytes"], OPTIONS["max_csv_cell_chars"]
INPUT_BYTES_OPTION, CELL_CHARS_OPTION = INPUT_BYTES.flag, CELL_CHARS.flag
FALLBACK_INPUT_BYTES = 1 << 30  # without a cgroup memory limit
# The loaded data, its float64 copy, numpy's parse buffers and the written file share the step's
# memory: a quarter of it keeps them inside together.
MEMORY_SHARE = 4
DEFAULT_CELL_CHARS = 1000
# A CSV line of N characters parses into Python strings of about 50 bytes each, for cells as short
# as 2 characters and a comma: N // 32 keeps one line's cells well inside the byte budget.
LINE_CHARS_PER_BYTE = 32
NPZ_MEMBERS = ("X.npy", "y.npy")
ZIP_END_SIGNATURE = b"PK\x05\x06"
ZIP_END_SIZE = 22
ZIP_END_SEARCH = ZIP_END_SIZE + (1 << 16)  # the record, after a comment of up to 64 KiB
ZIP_DIRECTORY_BYTES = 1 << 16  # two entries take about 200 bytes
FEATURE_BYTES = 8  # prepare writes float64 features for every input that is not float32/float64


def how_to_raise(option: Option) -> str:
    """The fix a limit's message gives: the option's flag, or its env var (from the parameter table)."""
    return f"raise {option.flag} (or {option.envvar})"


def default_input_bytes(cgroup: Path | None = None) -> int:
    memory = memory_limit(cgroup or CGROUP)
    return FALLBACK_INPUT_BYTES if memory is None else max(1, memory // MEMORY_SHARE)


def loaded_bytes(dtype: np.dtype, count: int) -> int:
    """Memory of ``count`` elements as read, plus prepare's float64 copy when it makes one."""
    copy = 0 if dtype in (np.float32, np.float64) else FEATURE_BYTES
    return count * (dtype.itemsize + copy)


@dataclass(frozen=True)
class Limits:
    """The input budget: bytes the loaded arrays may take, and characters in one CSV cell."""

    input_bytes: int = field(default_factory=default_input_bytes)
    cell_chars: int = DEFAULT_CELL_CHARS

    @property
    def line_chars(self) -> int:
        return max(self.cell_chars, self.input_bytes // LINE_CHARS_PER_BYTE)

    def check_bytes(self, source: object, what: str, nbytes: int) -> None:
        if nbytes > self.input_bytes:
            raise UserError(f"{source}: {what} would take {nbytes:,} bytes in memory, over the input limit of "
                            f"{self.input_bytes:,}: {how_to_raise(INPUT_BYTES)}")

    def read_npy(self, open_file: Callable[[], IO[bytes]], source: str, stored_bytes: int | None = None,
                 spent: int = 0) -> np.ndarray:
        """The array in the ``.npy`` stream ``open_file()`` opens, once its header fits the budget
        (less ``spent`` bytes, taken by arrays read before it).

        ``stored_bytes`` is the size a zip directory gives the member: it must agree with the
        header, and no more than that is ever decompressed.
        """
        with open_file() as fh:
            version = np.lib.format.read_magic(fh)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy format version {version}")
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(fh)
            data_start = fh.tell()
        if dtype.hasobject:
            raise UserError(f"{source} holds Python objects ({dtype}), which only pickle can load and "
                            "clusterflow never unpickles: save numbers, e.g. X.astype(float)")
        count = math.prod(shape)
        self.check_bytes(source, f"an array of shape {shape} and dtype {dtype}" + (" with the arrays before it"
                         if spent else ""), spent + loaded_bytes(dtype, count))
        total = data_start + count * dtype.itemsize
        if stored_bytes is not None and stored_bytes != total:
            raise ValueError(f"the zip directory says {stored_bytes:,} bytes but the array header needs {total:,}")
        with open_file() as fh:
            return np.lib.format.read_array(_Capped(fh, total), allow_pickle=False)

    def read_npz(self, path: Path) -> dict[str, np.ndarray]:
        """The ``X`` (and ``y``) arrays of an ``.npz``, each checked as :meth:`read_npy` does."""
        _check_zip_directory(path)
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
            names = [m.filename for m in members]
            if "X.npy" not in names:
                found = ", ".join(n.removesuffix(".npy") for n in names[:10]) or "none"
                raise UserError(f"{path} has no array 'X' (it has: {found}): save the features as X (and "
                                "labels as y), e.g. np.savez(path, X=X, y=y)")
            others = [n for n in names if n not in NPZ_MEMBERS] + [n for n in NPZ_MEMBERS if names.count(n) > 1]
            if others:
                raise UserError(f"{path} holds {', '.join(others[:10])} besides one X.npy and y.npy: save only "
                                "X and y, e.g. np.savez(path, X=X, y=y)")
            arrays: dict[str, np.ndarray] = {}
            for member in members:
                name = member.filename.removesuffix(".npy")
                arrays[name] = self.read_npy(lambda m=member: archive.open(m),  # type: ignore[misc]
                                             f"{path} array {name}", member.file_size,
                                             sum(loaded_bytes(a.dtype, a.size) for a in arrays.values()))
            return arrays

    @contextlib.contextmanager
    def csv_rows(self, fh: IO[str], source: Path) -> Iterator[Iterator[tuple[int, list[str]]]]:
        """``(line number, cells)`` of ``fh``'s CSV rows, no line or cell longer than the limits."""
        previous = csv.field_size_limit(self.cell_chars)
        try:
            yield self._rows(csv.reader(self._lines(fh, source)), source)
        finally:
            csv.field_size_limit(previous)

    def _lines(self, fh: IO[str], source: Path) -> Iterator[str]:
        number = 0
        while line := fh.readline(self.line_chars + 1):
            number += 1
            if len(line) > self.line_chars:
                raise UserError(f"{source} line {number} is longer than {self.line_chars:,} characters "
                                f"(1/{LINE_CHARS_PER_BYTE} of the input limit): split it or "
                                f"{how_to_raise(INPUT_BYTES)}")
            yield line

    def _rows(self, reader: Any, source: Path) -> Iterator[tuple[int, list[str]]]:
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                if "field limit" not in str(exc):
                    raise
                raise UserError(f"{source} line {reader.line_num} has a cell longer than {self.cell_chars:,} "
                                f"characters: shorten it or {how_to_raise(CELL_CHARS)}") from None
            yield reader.line_num, row

    def check_csv_rows(self, rows: Iterator[tuple[int, list[str]]], source: Path, n_features: int,
                       label_at: int | None) -> None:
        """Count the data rows: features as float64 and labels as numpy text must fit the budget."""
        n_rows = label_chars = 0
        for _, row in rows:
            if not row:
                continue
            n_rows += 1
            if label_at is not None and label_at < len(row):
                label_chars = max(label_chars, len(row[label_at]))
            nbytes = n_rows * (n_features * FEATURE_BYTES + label_chars * np.dtype("U1").itemsize)
            if nbytes > self.input_bytes:
                self.check_bytes(source, f"{n_rows:,}+ rows of {n_features} features"
                                 + (f" and labels of up to {label_chars} characters" if label_at is not None else ""),
                                 nbytes)


def _check_zip_directory(path: Path) -> None:
    """Refuse a zip directory of more than the X and y entries before ``zipfile`` parses all of it.

    Reads the end-of-central-directory record (the last 22 bytes, or up to 64 KiB of comment
    before them); a file without one is left to ``zipfile`` to refuse.
    """
    with open(path, "rb") as fh:
        fh.seek(0, io.SEEK_END)
        fh.seek(max(0, fh.tell() - ZIP_END_SEARCH))
        tail = fh.read()
    at = tail.rfind(ZIP_END_SIGNATURE)
    if at < 0 or len(tail) - at < ZIP_END_SIZE:
        return
    entries, directory_bytes = struct.unpack("<HI", tail[at + 10:at + 16])
    if entries > len(NPZ_MEMBERS) or directory_bytes > ZIP_DIRECTORY_BYTES:
        raise UserError(f"{path} lists {entries:,} arrays in a {directory_bytes:,}-byte zip directory; an .npz "
                        "dataset holds X and optionally y: save only those, e.g. np.savez(path, X=X, y=y)")


class _Capped(io.RawIOBase):
    """A reader that ends after ``limit`` bytes, whatever the stream under it holds."""

    def __init__(self, stream: IO[bytes], limit: int) -> None:
        self._stream, self._left = stream, limit

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        size = self._left if size is None or size < 0 else min(size, self._left)
        data = self._stream.read(size)
        self._left -= len(data)
        return data
