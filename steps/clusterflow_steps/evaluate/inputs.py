"""Everything evaluate reads from a run: the prepared data and each cluster variant, checked.

Every file evaluate reads is one of its inputs, so its manifest (and cache key) lists it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from clusterflow_steps.artifacts import UserError, read_array, read_json, require_input
from clusterflow_steps.contract import CLUSTER_LABELS, FEATURES, LABELS, RunLayout


@dataclass(frozen=True)
class Prepared:
    """The prepared features (memory-mapped: never copied whole) and the files they came from."""

    features: np.ndarray
    read: dict[str, Path]  # "features", and "labels" when the data have true labels

    @property
    def has_labels(self) -> bool:
        return "labels" in self.read

    def true_labels(self) -> np.ndarray | None:
        return read_array(self.read["labels"], LABELS.producer()) if self.has_labels else None


def read_prepared(layout: RunLayout) -> Prepared:
    """The prepared features, and the labels' path when the data have true labels (read when scoring)."""
    read = {"features": layout.path(FEATURES)}
    features = read_array(read["features"], FEATURES.producer(), mmap=True)
    if layout.path(LABELS).is_file():
        read["labels"] = layout.path(LABELS)
    return Prepared(features, read)


def variant_inputs(layout: RunLayout, variants: list[str]) -> dict[str, Path]:
    """The files of the cluster ``variants`` that evaluate reads, checked to exist; at least one variant."""
    if not variants:
        raise UserError(f"no cluster outputs under {layout.step_dir('cluster')}: run the cluster step first")
    found = {}
    for variant in variants:
        step = CLUSTER_LABELS.producer(variant)
        found[f"{variant}/manifest"] = require_input(layout.manifest("cluster", variant), step)
        found[f"{variant}/labels"] = require_input(layout.path(CLUSTER_LABELS, variant), step)
    return found


def variant_results(layout: RunLayout, variant: str, *keys: str) -> dict[str, Any]:
    """The ``results`` of a cluster variant's manifest; :class:`UserError` unless it has ``keys``."""
    step = CLUSTER_LABELS.producer(variant)
    path = layout.manifest("cluster", variant)
    manifest = read_json(path, step)
    results = manifest.get("results") if isinstance(manifest, dict) else None
    if not isinstance(results, dict) or not set(keys) <= results.keys():
        raise UserError(f"{path} lacks the {' and '.join(keys)} result{'s' if len(keys) > 1 else ''}: "
                        f"re-run the {step} step")
    return results


def variant_labels(layout: RunLayout, variant: str, n_samples: int) -> np.ndarray:
    """A cluster variant's labels, checked to label every one of the ``n_samples`` prepared samples."""
    step, path = CLUSTER_LABELS.producer(variant), layout.path(CLUSTER_LABELS, variant)
    labels = read_array(path, step)
    if labels.shape != (n_samples,):
        raise UserError(f"{path} has shape {labels.shape} but {FEATURES.relative()} has "
                        f"{n_samples} samples: re-run the {step} step")
    return labels


def variant_n_clusters(layout: RunLayout, variant: str) -> int:
    """The number of clusters the cluster step fitted (or, dbscan and hdbscan, found) for ``variant``
    (its manifest's results)."""
    value = variant_results(layout, variant, "n_clusters")["n_clusters"]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:  # 0: all noise
        raise UserError(f"{layout.manifest('cluster', variant)} lacks the n_clusters result: "
                        f"re-run the {CLUSTER_LABELS.producer(variant)} step")
    return value
