"""Everything the report reads from a run, loaded once and checked for consistency.

Each file read is recorded in :attr:`RunInputs.read` so the report's manifest lists its inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from clusterflow_steps.artifacts import UserError, input_name, read_array, read_json
from clusterflow_steps.contract import (CENTERS, CLUSTER_LABELS, ESTIMATORS, FEATURES, K_DISTANCE, KMEANS_FAMILY,
                                        LABELS, METRICS, NOISE, PROJECTION, PROJECTION_MIN_FEATURES, Artifact,
                                        Projection, RunLayout, damaged_input, gate_failed, producer,
                                        projection_clusters, ranked)


@dataclass
class RunInputs:
    """A run's upstream artifacts as the report needs them."""

    run_id: str
    features: np.ndarray  # possibly memory-mapped; never copied whole
    true_labels: np.ndarray | None
    metrics: dict[str, Any]
    best: str
    best_labels: np.ndarray
    best_centers: np.ndarray | None  # None when the best variant's algorithm has no centers
    best_k_distance: np.ndarray | None  # dbscan's k-distance curve, when it picked eps from it
    projection: Projection | None  # None when the data have fewer than PROJECTION_MIN_FEATURES features
    manifests: dict[str, dict[str, Any]]  # "prepare", "cluster/<variant>", "evaluate"
    read: dict[str, Path] = field(default_factory=dict)

    @property
    def variants(self) -> dict[str, dict[str, Any]]:
        variants: dict[str, dict[str, Any]] = self.metrics["variants"]  # load_run checked its shape
        return variants

    @property
    def best_results(self) -> dict[str, Any]:
        results = self.manifests[f"cluster/{self.best}"].get("results")
        return results if isinstance(results, dict) else {}

    @property
    def best_algorithm(self) -> str:
        """The best variant's algorithm (a run from before there were others: kmeans)."""
        algorithm = self.best_results.get("algorithm")
        return algorithm if algorithm in ESTIMATORS else KMEANS_FAMILY[0]

    @property
    def n_clusters(self) -> int:
        """The best variant's clusters: its centers, else the distinct labels that are not noise."""
        if self.best_centers is not None:
            return len(self.best_centers)
        return int(np.unique(self.best_labels[self.best_labels != NOISE]).size)

    def _noise(self, key: str) -> dict[str, Any]:
        noise = self.metrics.get("noise")
        found = noise.get(key) if isinstance(noise, dict) else None
        return found if isinstance(found, dict) else {}  # (runs from before there was noise: none)

    @property
    def n_noise(self) -> dict[str, int]:
        """Noise points per variant, as evaluate counted them."""
        return {str(k): v for k, v in self._noise("points").items() if isinstance(v, int)}

    @property
    def noise_treatment(self) -> dict[str, str]:
        """How each score treats noise, as evaluate recorded it."""
        return {str(k): str(v) for k, v in self._noise("treatment").items()}

    @property
    def undefined(self) -> dict[str, dict[str, str]]:
        """Why scores are null, per variant and metric, as evaluate recorded it."""
        found = self.metrics.get("undefined")
        if not isinstance(found, dict):
            return {}
        return {str(v): {str(m): str(r) for m, r in reasons.items()} for v, reasons in found.items()
                if isinstance(reasons, dict)}

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
        return gate_failed(self.metrics, self.manifests["evaluate"])

    @property
    def gate_failures(self) -> list[str]:
        failures = self.gate.get("failures") or []
        return [str(f) for f in failures] if isinstance(failures, list) else [str(failures)]

    def k_curves(self) -> dict[str, list[tuple[int, str]]]:
        """A sweep over k: per algorithm (and init), its variants by the number of clusters asked
        for (else found); only the curves of two or more k, so a run without a sweep has none."""
        found: dict[str, dict[int, str]] = {}
        for variant in sorted(self.variants):
            manifest = self.manifests.get(f"cluster/{variant}", {})
            results, params = manifest.get("results"), manifest.get("params")
            results, params = (v if isinstance(v, dict) else {} for v in (results, params))
            k = params.get("n_clusters") or results.get("n_clusters")
            if not isinstance(k, int) or isinstance(k, bool):
                continue
            algorithm = results.get("algorithm") if results.get("algorithm") in ESTIMATORS else KMEANS_FAMILY[0]
            curve = f"{algorithm} {results['init']}" if results.get("init") else str(algorithm)
            found.setdefault(curve, {})[k] = variant
        return {curve: sorted(points.items()) for curve, points in sorted(found.items()) if len(points) > 1}

    def ranked_variants(self) -> list[str]:
        """Variants in ranking order: the best first, then as :func:`contract.ranked` orders them by
        ``ranked_by`` (nulls last, then name)."""
        others = ranked(self.variants, str(self.metrics.get("ranked_by") or ""))
        return [self.best, *(variant for variant in others if variant != self.best)]


def _damaged(path: Path, what: str, step: str) -> UserError:
    return UserError(damaged_input(path, what, step))


def load_run(layout: RunLayout) -> RunInputs:
    """Read the evaluate, cluster and prepare outputs of ``layout``'s run; raise :class:`UserError`."""
    read: dict[str, Path] = {}

    def json_input(path: Path, step: str) -> dict[str, Any]:
        payload = read_json(path, step)
        if not isinstance(payload, dict):
            raise _damaged(path, "is not a JSON object", step)
        read[input_name(layout.run_dir, path)] = path
        return payload

    def array_input(artifact: Artifact, variant: str | None = None, *, mmap: bool = False) -> np.ndarray:
        path = layout.path(artifact, variant)
        array = read_array(path, artifact.producer(variant), mmap=mmap)
        read[input_name(layout.run_dir, path)] = path
        return array

    metrics_path = layout.path(METRICS)
    metrics = json_input(metrics_path, METRICS.producer())
    manifests = {"evaluate": json_input(layout.manifest("evaluate"), "evaluate")}
    variants = metrics.get("variants")
    if not isinstance(variants, dict) or not variants or not all(isinstance(v, dict) for v in variants.values()):
        raise _damaged(metrics_path, "has no per-variant metrics", METRICS.producer())
    best = metrics.get("best")
    if not isinstance(best, str) or best not in variants:  # (JSON keys are strings)
        raise _damaged(metrics_path, f"names best variant {best!r}, which it has no metrics for", METRICS.producer())

    manifests["prepare"] = json_input(layout.manifest("prepare"), "prepare")
    for variant in sorted(variants):  # layout.manifest rejects a variant name that is no safe path component
        manifests[f"cluster/{variant}"] = json_input(layout.manifest("cluster", variant), producer("cluster", variant))

    features = array_input(FEATURES, mmap=True)
    if features.ndim != 2 or features.shape[0] < 2:
        raise _damaged(layout.path(FEATURES), f"has shape {features.shape}, not a 2-D array of at least 2 "
                       "samples", FEATURES.producer())
    true_labels = None
    if layout.path(LABELS).is_file():
        true_labels = array_input(LABELS)
        if true_labels.shape != (features.shape[0],):
            raise _damaged(layout.path(LABELS), f"has shape {true_labels.shape}, but {FEATURES.name} has "
                           f"{features.shape[0]} rows", LABELS.producer())

    best_labels = array_input(CLUSTER_LABELS, best)
    if best_labels.shape != (features.shape[0],):
        raise _damaged(layout.path(CLUSTER_LABELS, best), f"has shape {best_labels.shape}, but "
                       f"{FEATURES.relative()} has {features.shape[0]} rows", CLUSTER_LABELS.producer(best))
    written = manifests[f"cluster/{best}"].get("outputs")
    written = written if isinstance(written, dict) else {}
    best_centers = array_input(CENTERS, best) if CENTERS.name in written else None
    if best_centers is not None and (best_centers.ndim != 2 or best_centers.shape[1] != features.shape[1]
                                     or best_centers.shape[0] < 1):
        raise _damaged(layout.path(CENTERS, best), f"has shape {best_centers.shape}, "
                       f"not (n_clusters, {features.shape[1]})", CENTERS.producer(best))
    k_distance = array_input(K_DISTANCE, best) if K_DISTANCE.name in written else None
    if k_distance is not None and (k_distance.shape != (features.shape[0],) or not np.isfinite(k_distance).all()):
        raise _damaged(layout.path(K_DISTANCE, best), f"has shape {k_distance.shape} or non-finite values, not "
                       f"one distance per sample ({features.shape[0]})", K_DISTANCE.producer(best))

    projection = None
    if features.shape[1] >= PROJECTION_MIN_FEATURES:
        path = layout.path(PROJECTION)
        projection = Projection.load(path)
        read[input_name(layout.run_dir, path)] = path
    found = RunInputs(run_id=layout.run_id, features=features, true_labels=true_labels, metrics=metrics,
                      best=best, best_labels=best_labels, best_centers=best_centers, best_k_distance=k_distance,
                      projection=projection, manifests=manifests, read=read)
    if projection is not None:
        expected_clusters = projection_clusters(found.n_clusters, projection.n_fitted)
        if projection.n_samples != features.shape[0] or projection.n_clusters != expected_clusters:
            raise _damaged(layout.path(PROJECTION), f"was computed for {projection.n_samples} samples and "
                           f"{projection.n_clusters} clusters, but the run has {features.shape[0]} samples and its "
                           f"best variant {best} has {found.n_clusters} clusters", PROJECTION.producer())
    return found
