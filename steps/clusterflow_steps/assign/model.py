"""A fitted model as ``model.npz``'s plain arrays, and the rule that assigns a new row to a cluster.

Each rule is the fitted estimator's own ``predict`` in numpy (no pickle, no scikit-learn): in the
space of the model's StandardScaler, K-Means and MiniBatchKMeans take the nearest center, a
Gaussian mixture the component of highest weighted log-likelihood, Birch the final cluster of the
nearest subcluster centroid. Rows go by chunks, so the temporaries stay small at any size.
"""

from __future__ import annotations

import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from clusterflow_steps import clusters
from clusterflow_steps.artifacts import UserError
from clusterflow_steps.contract import CENTERED, ESTIMATORS, MODEL_ASSIGN, damaged_input, missing_input

ALGORITHM_OF = {estimator: algorithm for algorithm, estimator in ESTIMATORS.items()}
ASSIGNABLE = tuple(a for a in ESTIMATORS if a in CENTERED)  # in the order --algorithm lists them


@dataclass(frozen=True)
class Model:
    """What assigning needs of one fitted variant, everything in the scaled space."""

    algorithm: str
    mean: np.ndarray  # the scaler's: a row x is scaled as (x - mean) / scale
    scale: np.ndarray
    centers: np.ndarray  # (n_clusters, n_features), scaled
    extra: Mapping[str, np.ndarray]  # MODEL_ASSIGN's arrays of the algorithm
    covariance_type: str | None = None  # gaussian-mixture only

    @property
    def n_features(self) -> int:
        return len(self.mean)

    @property
    def n_clusters(self) -> int:
        return len(self.centers)

    def scaled(self, rows: np.ndarray) -> np.ndarray:
        """``rows`` as the model's StandardScaler transforms them (float64, as it computes)."""
        scaled = np.subtract(rows, self.mean, dtype=np.float64)
        scaled /= self.scale
        return scaled

    def assign(self, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each row's cluster (int64) and its distance to that cluster's center (scaled space)."""
        labels = np.empty(len(features), dtype=np.int64)
        distances = np.empty(len(features), dtype=np.float64)
        for rows in clusters.row_chunks(features):
            scaled = self.scaled(features[rows])
            found = self._predict(scaled)
            labels[rows] = found
            offset = scaled - self.centers[found]
            distances[rows] = np.sqrt(np.einsum("ij,ij->i", offset, offset))
        return labels, distances

    def _predict(self, scaled: np.ndarray) -> np.ndarray:
        if self.algorithm == "gaussian-mixture":
            return np.argmax(self._weighted_log_prob(scaled), axis=1)
        if self.algorithm == "birch":
            nearest = _nearest(scaled, self.extra["subcluster_centers"])
            return self.extra["subcluster_labels"].astype(np.int64)[nearest]
        return _nearest(scaled, self.centers)

    def _weighted_log_prob(self, scaled: np.ndarray) -> np.ndarray:
        """log weight_k + log N(x | mean_k, cov_k), without the constant that every k shares."""
        chol, means = self.extra["precisions_cholesky"], self.centers
        if self.covariance_type == "full":
            log_det = np.log(np.diagonal(chol, axis1=1, axis2=2)).sum(axis=1)
            squared = np.stack([(((scaled - m) @ c) ** 2).sum(axis=1) for m, c in zip(means, chol, strict=True)], 1)
        elif self.covariance_type == "tied":
            log_det = np.full(len(means), np.log(np.diag(chol)).sum())
            squared = np.stack([(((scaled - m) @ chol) ** 2).sum(axis=1) for m in means], axis=1)
        elif self.covariance_type == "diag":
            log_det = np.log(chol).sum(axis=1)
            squared = np.stack([(((scaled - m) * c) ** 2).sum(axis=1) for m, c in zip(means, chol, strict=True)], 1)
        else:  # spherical: one precision per component
            log_det = self.n_features * np.log(chol)
            squared = ((scaled[:, None, :] - means[None]) ** 2).sum(axis=2) * chol ** 2
        result: np.ndarray = -0.5 * squared + log_det + np.log(self.extra["weights"])
        return result


def _nearest(points: np.ndarray, centers: np.ndarray) -> np.ndarray:
    """Index of each point's nearest center (squared euclidean, expanded as scikit-learn computes it)."""
    squared = points @ centers.T
    squared *= -2.0
    squared += np.einsum("ij,ij->i", centers, centers)
    return np.argmin(squared, axis=1).astype(np.int64)


def cannot_assign(algorithm: str) -> str:
    """The one line for a model whose algorithm has no rule for a point it was not fitted on."""
    return (f"{algorithm} cannot assign new points (it labels only the data it was fitted on): score with a "
            f"run of {', '.join(ASSIGNABLE)}")


def load(path: Path, produced_by: str) -> Model:
    """Read and check ``model.npz`` (``np.load`` without pickle); :class:`UserError` with one line
    when it is missing, damaged or of an algorithm that cannot assign."""
    if not path.is_file():
        raise UserError(missing_input(path, produced_by))
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {name: archive[name] for name in archive.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise UserError(damaged_input(path, f"is unreadable ({exc})", produced_by)) from None
    algorithm = ALGORITHM_OF.get(str(arrays.get("estimator", "")))
    if algorithm is None:
        raise UserError(damaged_input(path, "names no known estimator", produced_by))
    if algorithm not in CENTERED:
        raise UserError(cannot_assign(algorithm))
    needed = ("centers", "scaler_mean", "scaler_scale", *MODEL_ASSIGN.get(algorithm, ()))
    missing = [name for name in needed if name not in arrays]
    if missing:
        raise UserError(damaged_input(path, f"lacks {', '.join(missing)}", produced_by))
    mean, scale = arrays["scaler_mean"].astype(np.float64), arrays["scaler_scale"].astype(np.float64)
    centers = arrays["centers"].astype(np.float64)
    if mean.ndim != 1 or scale.shape != mean.shape or centers.ndim != 2 or centers.shape[1] != len(mean) \
            or len(centers) < 1:
        raise UserError(damaged_input(path, f"holds centers {centers.shape} for a scaler of {mean.shape}",
                                      produced_by))
    covariance = arrays.get("covariance_type")
    return Model(algorithm=algorithm, mean=mean, scale=scale, centers=(centers - mean) / scale,
                 extra={name: arrays[name] for name in MODEL_ASSIGN.get(algorithm, ())},
                 covariance_type=None if covariance is None else str(covariance))

