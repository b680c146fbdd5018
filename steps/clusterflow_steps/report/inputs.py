"""Everything the report reads from a run, loaded once and checked for consistency.

Each file read is recorded in :attr:`RunInputs.read` so the report's manifest lists its inputs.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clusterflow_steps.artifacts import PROJECTION_FIELDS, UserError, read_array, read_json, require_input
from clusterflow_steps.contract import MANIFEST, PROJECTION_MIN_FEATURES, PROJECTION as PROJECTION_FILE, RunLayout

METRIC_KEYS = ("fit_seconds", "inertia", "homogeneity", "completeness", "v_measure", "adjusted_rand",
               "adjusted_mutual_info", "silhouette")
LOWER_IS_BETTER = frozenset({"inertia", "fit_seconds"})
PROJECTION = PROJECTION_FILE.relative()


@dataclass(frozen=True)
class Projection:
    """The decision-region figure's data, as evaluate computed it: PCA to 2-D of (a sample of) the
    features, KMeans fitted on them, and the cluster of each point of a mesh over ``extent``."""

    points: np.ndarray  # (n, 2): the reduced points drawn as dots
    centroids: np.ndarray  # (n_clusters, 2)
    regions: np.ndarray  # (rows, columns) cluster of each mesh point; row 0 is the lowest y
    extent: tuple[float, float, float, float]  # x low, x high, y low, y high
    seed: int
    n_samples: int  # rows of the feature matrix
    n_fitted: int  # rows PCA and KMeans were fitted on

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)


def read_projection(path: Path) -> Projection:
    """Load and check ``evaluate/projection.npz``; raise :class:`UserError` when it is missing or damaged."""
    require_input(path, "evaluate")
    try:
        with np.load(path, allow_pickle=False) as archive:
            fields = {name: archive[name] for name in PROJECTION_FIELDS}
    except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
        raise _damaged(path, f"is unreadable ({exc})", "evaluate") from None
    points, centroids, regions, extent = (fields[k] for k in ("points", "centroids", "regions", "extent"))
    scalars = [fields[k] for k in ("seed", "n_samples", "n_fitted")]
    problem = None
    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1 or centroids.ndim != 2 \
            or centroids.shape[1] != 2 or len(centroids) < 1:
        problem = f"holds points of shape {points.shape} and centroids of shape {centroids.shape}, not (n, 2)"
    elif regions.ndim != 2 or regions.size == 0 or regions.dtype.kind not in "iu" or extent.shape != (4,):
        problem = f"holds a region grid of shape {regions.shape} ({regions.dtype}) and extent {extent.shape}"
    elif any(s.shape != () or s.dtype.kind not in "iu" for s in scalars):
        problem = "lacks its integer seed, n_samples and n_fitted"
    elif not (np.isfinite(points).all() and np.isfinite(centroids).all() and np.isfinite(extent).all()):
        problem = "holds non-finite coordinates"
    elif regions.min() < 0 or regions.max() >= len(centroids):
        problem = f"has region labels outside the {len(centroids)} clusters"
    if problem:
        raise _damaged(path, problem, "evaluate")
    seed, n_samples, n_fitted = (int(s) for s in scalars)
    return Projection(points=points.astype(np.float64, copy=False), centroids=centroids.astype(np.float64, copy=False),
                      regions=regions, extent=tuple(float(v) for v in extent), seed=seed, n_samples=n_samples,
                      n_fitted=n_fitted)


@dataclass
class RunInputs:
    """A run's upstream artifacts as the report needs them."""

    run_id: str
    features: np.ndarray  # possibly memory-mapped; never copied whole
    true_labels: np.ndarray | None
    metrics: dict[str, Any]
    best: str
    best_labels: np.ndarray
    best_centers: np.ndarray
    projection: Projection | None  # None when the data have fewer than PROJECTION_MIN_FEATURES features
    manifests: dict[str, dict[str, Any]]  # "prepare", "cluster/<variant>", "evaluate"
    read: dict[str, Path] = field(default_factory=dict)

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        return self.metrics["variants"]

    @property
    def dataset(self) -> str | None:
        value = self.manifests["prepare"].get("params", {}).get("dataset")
        return None if value is None else str(value)

    @property
    def is_digits(self) -> bool:
        return self.dataset == "digits"

    @property
    def gate(self) -> dict[str, Any]:
        gate = self.metrics.get("quality_gate")
        return gate if isinstance(gate, dict) else {}

    @property
    def gate_failed(self) -> bool:
        return self.gate.get("passed") is False or self.manifests["evaluate"].get("exit_status") == 3

    @property
    def gate_failures(self) -> list[str]:
        failures = self.gate.get("failures") or []
        return [str(f) for f in failures] if isinstance(failures, list) else [str(failures)]

    def ranked_variants(self) -> list[str]:
        """Variants in ranking order: the best first, then by ``ranked_by`` (nulls last), then name."""
        metric = str(self.metrics.get("ranked_by") or "")
        sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

        def key(variant: str) -> tuple[bool, bool, float, str]:
            value = self.variants[variant].get(metric)
            numeric = isinstance(value, (int, float)) and not isinstance(value, bool)
            return variant != self.best, not numeric, sign * value if numeric else 0.0, variant

        return sorted(self.variants, key=key)


def _damaged(path: Path, what: str, step: str) -> UserError:
    return UserError(f"{path} {what}; re-run the {step} step")


def load_run(layout: RunLayout) -> RunInputs:
    """Read the evaluate, cluster and prepare outputs of ``layout``'s run; raise :class:`UserError`."""
    read: dict[str, Path] = {}

    def json_input(step_path: str, step: str) -> dict[str, Any]:
        path = layout.run_dir / step_path
        payload = read_json(path, step)
        if not isinstance(payload, dict):
            raise _damaged(path, "is not a JSON object", step)
        read[step_path] = path
        return payload

    def array_input(step_path: str, step: str, *, mmap: bool = False) -> np.ndarray:
        path = layout.run_dir / step_path
        array = read_array(path, step, mmap=mmap)
        read[step_path] = path
        return array

    metrics_path = layout.run_dir / "evaluate" / "metrics.json"
    metrics = json_input("evaluate/metrics.json", "evaluate")
    manifests = {"evaluate": json_input(f"evaluate/{MANIFEST}", "evaluate")}
    variants = metrics.get("variants")
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise _damaged(metrics_path, "has no per-variant metrics", "evaluate")
    best = metrics.get("best")
    if best not in variants:
        raise _damaged(metrics_path, f"names best variant {best!r}, which it has no metrics for", "evaluate")

    manifests["prepare"] = json_input(f"prepare/{MANIFEST}", "prepare")
    for variant in sorted(variants):
        layout.step_dir("cluster", variant)  # rejects a variant name that is no safe path component
        manifests[f"cluster/{variant}"] = json_input(f"cluster/{variant}/{MANIFEST}", f"cluster (--variant {variant})")

    features = array_input("prepare/features.npy", "prepare", mmap=True)
    if features.ndim != 2 or features.shape[0] < 2:
        raise _damaged(layout.run_dir / "prepare/features.npy", f"has shape {features.shape}, not a 2-D "
                       "array of at least 2 samples", "prepare")
    true_labels = None
    if (layout.run_dir / "prepare" / "labels.npy").is_file():
        true_labels = array_input("prepare/labels.npy", "prepare")
        if true_labels.shape != (features.shape[0],):
            raise _damaged(layout.run_dir / "prepare/labels.npy", f"has shape {true_labels.shape}, but "
                           f"features.npy has {features.shape[0]} rows", "prepare")

    step = f"cluster (--variant {best})"
    best_labels = array_input(f"cluster/{best}/labels.npy", step)
    best_centers = array_input(f"cluster/{best}/centers.npy", step)
    if best_labels.shape != (features.shape[0],):
        raise _damaged(layout.run_dir / f"cluster/{best}/labels.npy", f"has shape {best_labels.shape}, but "
                       f"prepare/features.npy has {features.shape[0]} rows", step)
    if best_centers.ndim != 2 or best_centers.shape[1] != features.shape[1] or best_centers.shape[0] < 1:
        raise _damaged(layout.run_dir / f"cluster/{best}/centers.npy", f"has shape {best_centers.shape}, "
                       f"not (n_clusters, {features.shape[1]})", step)

    projection = None
    if features.shape[1] >= PROJECTION_MIN_FEATURES:
        path = layout.run_dir / PROJECTION
        projection = read_projection(path)
        read[PROJECTION] = path
        expected_clusters = min(len(best_centers), projection.n_fitted)
        if projection.n_samples != features.shape[0] or projection.n_clusters != expected_clusters:
            raise _damaged(path, f"was computed for {projection.n_samples} samples and {projection.n_clusters} "
                           f"clusters, but the run has {features.shape[0]} samples and its best variant {best} has "
                           f"{len(best_centers)} clusters", "evaluate")

    return RunInputs(run_id=layout.run_id, features=features, true_labels=true_labels, metrics=metrics,
                     best=best, best_labels=best_labels, best_centers=best_centers, projection=projection,
                     manifests=manifests, read=read)
