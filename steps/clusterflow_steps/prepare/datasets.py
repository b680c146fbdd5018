"""Datasets as validated arrays: the digits demo data, synthetic blobs, or a user's file.

Every loader returns a :class:`Dataset`; :func:`load` picks the loader and :func:`validated`
checks the result, raising :class:`UserError` with one line saying what is wrong and how to fix it.
scikit-learn is imported only by the loaders that need it (not on a cache hit or ``--help``).
"""

from __future__ import annotations

import csv
import gzip
import importlib.util
import warnings
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from clusterflow_steps.artifacts import UserError
from clusterflow_steps.params import BUILTIN_DATASETS as BUILTIN
from clusterflow_steps.prepare.limits import Limits

FILE_TYPES = (".csv", ".npy", ".npz")
CSV_ENCODING = "utf-8-sig"  # tolerates the byte-order mark spreadsheet exports start with


@dataclass(frozen=True)
class Dataset:
    """Features (samples x features), optional labels, feature names if known, the file read if any."""

    features: np.ndarray
    labels: np.ndarray | None = None
    columns: tuple[str, ...] | None = None
    source: Path | None = None

    @property
    def n_labels(self) -> int | None:
        return None if self.labels is None else int(np.unique(self.labels).size)


def digits() -> Dataset:
    """scikit-learn's handwritten digits exactly as ``load_digits`` returns them (1797 x 64, float64).

    Read from the file scikit-learn ships, as ``load_digits`` reads it, but without importing
    scikit-learn: its import is most of this step's time (about 1 s of 1.5 s).
    """
    package = importlib.util.find_spec("sklearn")  # locates the package; runs none of it
    if package is None or package.origin is None:
        raise UserError("scikit-learn is not installed, so the digits data is missing: use the "
                        "clusterflow/prepare image")
    with gzip.open(Path(package.origin).parent / "datasets" / "data" / "digits.csv.gz", "rt") as rows:
        data = np.loadtxt(rows, delimiter=",")
    return Dataset(data[:, :-1], data[:, -1].astype(int))


def synthetic(n_samples: int, n_features: int, n_centers: int, seed: int) -> Dataset:
    """Gaussian blobs from ``make_blobs``, stored as float32 so that large runs stay small."""
    from sklearn.datasets import make_blobs

    features, labels = make_blobs(n_samples=n_samples, n_features=n_features, centers=n_centers,
                                  random_state=seed)
    return Dataset(features.astype(np.float32), labels.astype(np.int64))


def load_file(path: Path, label_column: str | None = None, limits: Limits | None = None) -> Dataset:
    """Read a ``.csv`` (header row), ``.npy`` (2-D features) or ``.npz`` (``X``, optional ``y``)
    within ``limits`` (default: :class:`Limits`' defaults), checked before the data is read."""
    if not path.is_file():
        raise UserError(f"dataset {str(path)!r} is neither {' nor '.join(BUILTIN)} nor an existing file: "
                        f"check the path")
    kind = path.suffix.lower()
    if kind not in FILE_TYPES:
        raise UserError(f"dataset {path} has unsupported type {path.suffix or '(none)'!r}: "
                        f"use a {', '.join(FILE_TYPES)} file")
    if label_column is not None and kind != ".csv":
        raise UserError(f"--label-column applies to .csv datasets only: store the labels of {path.name} "
                        "as array 'y' of an .npz file")
    limits = limits or Limits()
    if kind == ".csv":
        return _read_csv(path, label_column, limits)
    try:
        if kind == ".npy":
            return Dataset(limits.read_npy(lambda: open(path, "rb"), str(path)), source=path)
        arrays = limits.read_npz(path)
        return Dataset(arrays["X"], arrays.get("y"), source=path)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise UserError(f"{path} is not a readable {kind} file ({exc}): re-export it") from None


def load(dataset: str, *, label_column: str | None = None, n_samples: int = 10_000, n_features: int = 64,
         n_centers: int = 10, seed: int = 0, limits: Limits | None = None) -> Dataset:
    """The validated dataset named by ``dataset``: ``digits``, ``synthetic`` or a file path."""
    if dataset in BUILTIN and label_column is not None:
        raise UserError(f"--label-column applies to .csv datasets only, not to {dataset}: drop it")
    if dataset == "digits":
        data = digits()
    elif dataset == "synthetic":
        data = synthetic(n_samples, n_features, n_centers, seed)
    else:
        data = load_file(Path(dataset), label_column, limits)
    return validated(data, str(data.source or dataset))


def validated(data: Dataset, source: str) -> Dataset:
    """``data`` with float features and int64 labels, if it is a usable clustering dataset."""
    features = data.features
    if features.dtype.kind not in "iuf":
        raise UserError(f"{source}: features must be numbers, not {features.dtype}: convert them first")
    if features.ndim != 2:
        raise UserError(f"{source}: features must be a 2-D array (samples x features), got shape "
                        f"{features.shape}: reshape it, e.g. to (n_samples, 1)")
    if features.shape[0] < 2 or features.shape[1] < 1:
        raise UserError(f"{source}: needs at least 2 samples and 1 feature, got shape {features.shape}")
    finite = np.isfinite(features)
    if not finite.all():
        row, col = np.argwhere(~finite)[0]
        name = repr(data.columns[col]) if data.columns else str(col)
        raise UserError(f"{source}: non-finite value {features[row, col]} at row {row}, column {name} "
                        "(counting from 0): remove or impute NaN and inf values")
    if features.dtype not in (np.float32, np.float64):
        features = features.astype(np.float64)
    labels = data.labels
    if labels is not None:
        labels = _integer_labels(np.asarray(labels), source)
        if labels.shape != (features.shape[0],):
            raise UserError(f"{source}: labels have shape {labels.shape} but there are {features.shape[0]} "
                            "samples: give exactly one label per sample")
    return replace(data, features=features, labels=labels)


def _integer_labels(values: np.ndarray, source: str) -> np.ndarray:
    """Labels as int64: integers and whole floats as they are, text as codes of its sorted values."""
    if values.dtype.kind in "biu":
        return values.astype(np.int64)
    if values.dtype.kind == "f" and np.isfinite(values).all() and (values == np.round(values)).all():
        return values.astype(np.int64)
    if values.dtype.kind in "US":
        values = np.char.strip(values)
        try:
            return values.astype(np.int64)
        except ValueError:
            return np.unique(values, return_inverse=True)[1].astype(np.int64).reshape(values.shape)
    raise UserError(f"{source}: labels must be whole numbers or text, not {values.dtype} values: "
                    "round or relabel them")


def _read_csv(path: Path, label_column: str | None, limits: Limits) -> Dataset:
    """A header-row CSV: every column but ``label_column`` is a numeric feature.

    One streaming pass checks the limits (no line, cell or row count beyond them) before numpy's
    fast parser allocates the arrays.
    """
    try:
        with open(path, newline="", encoding=CSV_ENCODING) as fh, limits.csv_rows(fh, path) as rows:
            header = [name.strip() for name in next(rows, (0, []))[1]]
            if not header:
                raise UserError(f"{path} is empty: a .csv dataset needs a header row naming its columns")
            if label_column is not None and label_column not in header:
                raise UserError(f"label column {label_column!r} is not in the header of {path} "
                                f"(columns: {', '.join(header)}): pass one of them to --label-column")
            label_at = None if label_column is None else header.index(label_column)
            feature_at = [i for i in range(len(header)) if i != label_at]
            if not feature_at:
                raise UserError(f"{path} has no feature columns besides the label column {label_column!r}")
            limits.check_csv_rows(rows, path, len(feature_at), label_at)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UserError(f"{path} is not a readable CSV file ({exc}): save it as UTF-8 text") from None
    features = _csv_columns(path, header, feature_at, np.float64)
    labels = None if label_at is None else _csv_columns(path, header, [label_at], str)[:, 0]
    return Dataset(features, labels, tuple(header[i] for i in feature_at), path)


def _csv_columns(path: Path, header: list[str], columns: list[int], dtype: type) -> np.ndarray:
    """The data rows' ``columns`` as a 2-D array, read by numpy's fast C parser."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data": validated later
            return np.loadtxt(path, dtype=dtype, delimiter=",", skiprows=1, usecols=columns, ndmin=2,
                              comments=None, quotechar='"', encoding=CSV_ENCODING)
    except ValueError as exc:
        raise UserError(_csv_problem(path, header, columns) or f"{path}: {exc}") from None


def _csv_problem(path: Path, header: list[str], columns: list[int]) -> str | None:
    """Find the first row or cell ``np.loadtxt`` rejected (slow, so only run after it failed)."""
    try:
        with open(path, newline="", encoding=CSV_ENCODING) as fh:
            rows = csv.reader(fh)
            next(rows)
            for row in filter(None, rows):  # numpy skips blank lines too
                line = rows.line_num
                if len(row) != len(header):
                    return (f"{path} line {line} has {len(row)} cells but the header has {len(header)}: "
                            "give every row one value per column")
                for i in columns:
                    try:
                        float(row[i])
                    except ValueError:
                        return (f"{path} line {line}, column {header[i]!r}: {row[i]!r} is not a number: "
                                "fix or remove that cell")
    except (UnicodeDecodeError, csv.Error) as exc:
        return f"{path} is not a readable CSV file ({exc}): save it as UTF-8 text"
    return None
