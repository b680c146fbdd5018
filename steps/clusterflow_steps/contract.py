"""The artifact contract, as code: every name a step writes or a reader opens, defined here once.

Layout under the data root (``/data`` in every container)::

    runs/<run_id>/prepare/{features.npy,labels.npy,manifest.json}
    runs/<run_id>/cluster/<variant>/{model.joblib,model.npz,labels.npy,centers.npy,k_distance.npy,manifest.json}
    runs/<run_id>/evaluate/{metrics.json,projection.npz,manifest.json}
    runs/<run_id>/report/{report.html,manifest.json}
    runs/<run_id>/assign/{assignments.npy,summary.json,manifest.json}   new data scored by the run's model
    cache/                      the step cache store (clusterflow_steps.cache)

Pure standard library (numpy only inside :class:`Projection`'s save and load): the step images,
the orchestration (runner, DAG, launch gate) and the UI plugin import it, so they apply the very
same names and rules. How files are written and read
(atomically, checked) is :mod:`clusterflow_steps.artifacts`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeGuard

if TYPE_CHECKING:  # numpy only for the annotations: the orchestration and the UI import this without it
    import numpy as np
    from numpy.typing import NDArray

STEPS = ("prepare", "cluster", "evaluate", "report")  # the training pipeline's stages, in order
# The step that scores new data with a finished run's best model: an image of its own, no stage of
# the training pipeline. IMAGES: every step image (what is built, published and admitted).
ASSIGN = "assign"
IMAGES = (*STEPS, ASSIGN)
RUNS = "runs"  # <data root>/runs/<run_id>/
CACHE = "cache"  # <data root>/cache/: the step cache store, its own mount (clusterflow_steps.launch)
MANIFEST = "manifest.json"  # in every step's output folder
MANIFEST_SCHEMA = "clusterflow.manifest/1"

# Exit codes of every step command.
USER_ERROR_EXIT = 2  # a problem the user caused and can fix: one line on stderr
QUALITY_GATE_EXIT = 3  # evaluate wrote its metrics, and the best variant breached the quality gate

# Settings every step reads from its environment: which image it runs in (set by the runners,
# recorded in every manifest, part of the cache key) and the prefix of every option's env var.
ENV_PREFIX = "CLUSTERFLOW"
IMAGE_ENV = f"{ENV_PREFIX}_IMAGE"
IMAGE_DIGEST_ENV = f"{ENV_PREFIX}_IMAGE_DIGEST"
NO_CACHE_ENV = f"{ENV_PREFIX}_NO_CACHE"


class ContractError(ValueError):
    """A name or an artifact that breaks the contract: one line saying what and how to fix it.

    The step commands report it as a user error (exit :data:`USER_ERROR_EXIT`)."""


@dataclass(frozen=True)
class NameRule:
    """A safe single path component: ``extra`` characters besides letters and digits."""

    what: str
    extra: str
    longest: int

    @property
    def pattern(self) -> re.Pattern[str]:
        return re.compile(f"[A-Za-z0-9{re.escape(self.extra)}]{{1,{self.longest}}}")

    def problem(self, value: str | None) -> str | None:
        """Why ``value`` breaks the rule (one line that says how to fix it), or ``None``."""
        if value and self.pattern.fullmatch(value) and ".." not in value and not value.startswith("."):
            return None
        return (f"invalid {self.what} {value!r}: use 1-{self.longest} letters, digits and "
                f"'{self.extra}', not starting with '.' and without '..'")

    def check(self, value: str | None) -> str:
        """``value`` if it obeys the rule, else :class:`ContractError` with :meth:`problem`."""
        problem = self.problem(value)
        if problem or value is None:
            raise ContractError(problem)
        return value


RUN_ID = NameRule("run id", "._-", 128)
VARIANT = NameRule("variant", "._+-", 64)


class RunId(str):
    """A run id that obeys :data:`RUN_ID`: checked once where it enters (a command line, the DAG's
    plan), then passed on as this type and never checked again."""

    __slots__ = ()

    def __new__(cls, value: str) -> RunId:
        return super().__new__(cls, value if isinstance(value, RunId) else RUN_ID.check(value))


@dataclass(frozen=True)
class Artifact:
    """One file of the contract: the step that writes it and its name in that step's folder."""

    step: str
    name: str

    def relative(self, variant: str | None = None) -> str:
        """Its path under ``runs/<run_id>/`` (cluster files are per variant)."""
        return f"{self.step}/{variant}/{self.name}" if variant else f"{self.step}/{self.name}"

    def producer(self, variant: str | None = None) -> str:
        """The step to (re-)run when it is missing or damaged, as an error message names it."""
        return producer(self.step, variant)


def producer(step: str, variant: str | None = None) -> str:
    """How an error message names the step (of cluster ``variant``) that writes a file."""
    return f"{step} (--variant {variant})" if variant else step


def cache_hit_line(step: str) -> str:
    """How a step's log line for a cache hit begins (clusterflow_steps.cache prints it, the local
    runner watches for it)."""
    return f"{step}: cache hit "


def missing_input(path: Path, produced_by: str) -> str:
    """The one line for an upstream artifact that is not there."""
    return f"missing input {path}: run the {produced_by} step for this run id first"


def damaged_input(path: Path, what: str, produced_by: str) -> str:
    """The one line for an upstream artifact that is there but unusable (``what`` is wrong with it)."""
    return f"{path} {what}; re-run the {produced_by} step"


FEATURES = Artifact("prepare", "features.npy")
LABELS = Artifact("prepare", "labels.npy")  # only when the data have true labels
MODEL = Artifact("cluster", "model.joblib")  # the fitted scikit-learn pipeline, a pickle
# The same fit as plain arrays (np.load(..., allow_pickle=False)), for K-Means one per MODEL_FIELDS
# entry: centers in the original feature space, the StandardScaler's mean and scale (a sample x is
# assigned to argmin_k |(x - scaler_mean) / scaler_scale - (centers_k - scaler_mean) / scaler_scale|)
# and the fit's params; strings as 0-d unicode arrays. clusterflow itself never loads model.joblib.
MODEL_ARRAYS = Artifact("cluster", "model.npz")
# The K-Means family's fields. Every algorithm writes scaler_mean, scaler_scale, n_clusters, seed and
# estimator (which names the algorithm: ESTIMATORS), the CENTERED ones centers, each the params it
# was fitted with (MODEL_PARAMS, defaults resolved) and what assigning a new point needs (MODEL_ASSIGN).
MODEL_FIELDS = ("centers", "scaler_mean", "scaler_scale", "n_clusters", "init", "n_init", "seed", "estimator")
CLUSTER_LABELS = Artifact("cluster", "labels.npy")  # one per sample; NOISE for a noise point
CENTERS = Artifact("cluster", "centers.npy")  # only for CENTERED algorithms
# DBSCAN without --eps: the sorted distance of every sample to its min_samples-th nearest neighbour
# (itself included, in the scaled space), the curve its eps was picked from.
K_DISTANCE = Artifact("cluster", "k_distance.npy")

# The cluster step's algorithms (--algorithm) and the scikit-learn estimator of each, as model.npz's
# "estimator" and the cluster manifest's results name it.
ESTIMATORS = {"kmeans": "KMeans", "minibatch-kmeans": "MiniBatchKMeans", "dbscan": "DBSCAN", "hdbscan": "HDBSCAN",
              "agglomerative": "AgglomerativeClustering", "gaussian-mixture": "GaussianMixture", "birch": "Birch"}
ALGORITHMS = tuple(ESTIMATORS)
KMEANS_FAMILY = ("kmeans", "minibatch-kmeans")  # their variants are the inits
# Those with centers (centers.npy; means for gaussian-mixture, each cluster's mean for birch): they
# can also assign a new point, from model.npz alone.
CENTERED = frozenset({*KMEANS_FAMILY, "gaussian-mixture", "birch"})
# model.npz's extra arrays for assigning new points (in the scaled space; each the fitted estimator's
# attribute of that name and a trailing "_"): gaussian-mixture's weights and precisions' Cholesky
# factors, birch's subcluster centroids and their final clusters.
MODEL_ASSIGN = {"gaussian-mixture": ("weights", "precisions_cholesky"),
                "birch": ("subcluster_centers", "subcluster_labels")}
MODEL_PARAMS = {"kmeans": ("init", "n_init"), "minibatch-kmeans": ("init", "n_init"),
                "dbscan": ("eps", "min_samples", "metric"), "hdbscan": ("min_cluster_size", "min_samples"),
                "agglomerative": ("linkage",), "gaussian-mixture": ("covariance_type", "n_init"), "birch": ()}
NOISE = -1  # the label of a point in no cluster (dbscan, hdbscan)
METRICS = Artifact("evaluate", "metrics.json")
# The data of the report's PCA-reduced figure (written by evaluate, drawn by the report, whose image
# has no scikit-learn), a saved Projection; only for data of at least PROJECTION_MIN_FEATURES features.
PROJECTION = Artifact("evaluate", "projection.npz")
PROJECTION_MIN_FEATURES = 2
PROJECTION_N_INIT = 4  # KMeans(n_init=...) of the figure's fit: evaluate fits it, the report's caption says so


def projection_clusters(n_clusters: int, n_fitted: int) -> int:
    """The clusters of the figure's KMeans for a best variant of ``n_clusters`` (0 when all is noise)."""
    return max(1, min(n_clusters, n_fitted))

REPORT = Artifact("report", "report.html")
# A new dataset scored by the best variant's MODEL_ARRAYS: each row's cluster (int64), and the summary
# (the model it came from, counts per cluster, the distance to the assigned center).
ASSIGNMENTS = Artifact(ASSIGN, "assignments.npy")
ASSIGN_SUMMARY = Artifact(ASSIGN, "summary.json")
# How metrics.json's scores rank: lower is better for these, higher for every other one.
LOWER_IS_BETTER = frozenset({"inertia", "fit_seconds"})


def is_number(value: Any) -> TypeGuard[int | float]:
    """Whether a JSON value is a score (a bool is not)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def ranked(rows: Mapping[str, Mapping[str, Any]], metric: str) -> list[str]:
    """The variants of ``rows`` (variant -> its scores), best first by ``metric`` as
    :data:`LOWER_IS_BETTER` says; a missing or undefined score ranks last, ties go by name.
    Evaluate picks its best variant by it, and the report orders its table by it."""
    sign = 1.0 if metric in LOWER_IS_BETTER else -1.0

    def key(variant: str) -> tuple[bool, float, str]:
        value = rows[variant].get(metric)
        return (False, sign * value, variant) if is_number(value) else (True, 0.0, variant)

    return sorted(rows, key=key)


@dataclass(frozen=True)
class Projection:
    """The report's decision-region figure data, saved as :data:`PROJECTION` (one ``.npz`` member per
    field, in this order): PCA to 2-D of (a sample of) the features, KMeans fitted on them, and the
    cluster of each point of a mesh over ``extent``; ``regions[i, j]`` is the cluster of the mesh point
    at row i (y, lowest first) and column j (x). numpy is imported by :meth:`save` and :meth:`load`
    only, so that this module stays importable without it."""

    points: NDArray[np.float64]  # (n_plot, 2): the reduced points drawn as dots
    centroids: NDArray[np.float64]  # (n_clusters, 2)
    regions: NDArray[np.integer[Any]]  # (rows, columns) cluster index, the smallest unsigned dtype that fits
    extent: tuple[float, float, float, float]  # x low, x high, y low, y high of the mesh
    seed: int
    n_samples: int  # rows of the feature matrix
    n_fitted: int  # rows PCA and KMeans were fitted on (n_samples, or a sample of them)

    @property
    def n_clusters(self) -> int:
        return len(self.centroids)

    def save(self, path: Path) -> Path:
        """Write it byte-stable (:func:`clusterflow_steps.artifacts.save_npz`): equal data, equal sha256,
        as the cache keys downstream need."""
        import numpy as np

        from clusterflow_steps.artifacts import save_npz

        return save_npz(path, {"points": self.points, "centroids": self.centroids, "regions": self.regions,
                               "extent": np.asarray(self.extent, dtype=np.float64), "seed": np.int64(self.seed),
                               "n_samples": np.int64(self.n_samples), "n_fitted": np.int64(self.n_fitted)})

    @classmethod
    def load(cls, path: Path) -> Projection:
        """Read and check a saved projection; :class:`ContractError` naming evaluate when it is missing or damaged."""
        import zipfile

        import numpy as np

        produced_by = PROJECTION.producer()
        if not path.is_file():
            raise ContractError(missing_input(path, produced_by))
        try:
            with np.load(path, allow_pickle=False) as archive:
                saved = {f.name: archive[f.name] for f in fields(cls)}
        except (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile) as exc:
            raise ContractError(damaged_input(path, f"is unreadable ({exc})", produced_by)) from None
        problem = _projection_problem(**saved)
        if problem:
            raise ContractError(damaged_input(path, problem, produced_by))
        low_x, high_x, low_y, high_y = (float(v) for v in saved["extent"])
        return cls(points=saved["points"].astype(np.float64, copy=False),
                   centroids=saved["centroids"].astype(np.float64, copy=False), regions=saved["regions"],
                   extent=(low_x, high_x, low_y, high_y), seed=int(saved["seed"]),
                   n_samples=int(saved["n_samples"]), n_fitted=int(saved["n_fitted"]))


def _projection_problem(points: Any, centroids: Any, regions: Any, extent: Any, **scalars: Any) -> str | None:
    """What is wrong with a saved projection's arrays (the report could not draw them), or ``None``."""
    import numpy as np

    if points.ndim != 2 or points.shape[1] != 2 or len(points) < 1 or centroids.ndim != 2 \
            or centroids.shape[1] != 2 or len(centroids) < 1:
        return f"holds points of shape {points.shape} and centroids of shape {centroids.shape}, not (n, 2)"
    if regions.ndim != 2 or regions.size == 0 or regions.dtype.kind not in "iu" or extent.shape != (4,):
        return f"holds a region grid of shape {regions.shape} ({regions.dtype}) and extent {extent.shape}"
    if any(s.shape != () or s.dtype.kind not in "iu" for s in scalars.values()):
        return "lacks its integer seed, n_samples and n_fitted"
    if not (np.isfinite(points).all() and np.isfinite(centroids).all() and np.isfinite(extent).all()):
        return "holds non-finite coordinates"
    if regions.min() < 0 or regions.max() >= len(centroids):
        return f"has region labels outside the {len(centroids)} clusters"
    return None


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run's artifacts under a data root; the run id is checked once, here."""

    data_root: Path
    run_id: str  # a RunId once constructed (a RunId given is not checked again)

    def __post_init__(self) -> None:
        object.__setattr__(self, "run_id", RunId(self.run_id))

    @property
    def run_dir(self) -> Path:
        return self.data_root / RUNS / self.run_id

    def step_dir(self, step: str, variant: str | None = None) -> Path:
        path = self.run_dir / step
        return path / VARIANT.check(variant) if variant else path

    def path(self, artifact: Artifact, variant: str | None = None) -> Path:
        """Where ``artifact`` (of cluster ``variant``) lives in this run."""
        return self.step_dir(artifact.step, variant) / artifact.name

    def manifest(self, step: str, variant: str | None = None) -> Path:
        return self.step_dir(step, variant) / MANIFEST

    def cluster_variants(self) -> list[str]:
        """Names of the complete cluster outputs of this run, sorted."""
        root = self.step_dir("cluster")
        if not root.is_dir():
            return []
        return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file() and not p.name.startswith("."))


def gate_failed(metrics: Mapping[str, Any] | None, evaluate_manifest: Mapping[str, Any] | None) -> bool:
    """Whether a run's quality gate failed, by its ``metrics.json`` verdict or evaluate's exit status."""
    gate = (metrics or {}).get("quality_gate")
    verdict = gate.get("passed") if isinstance(gate, Mapping) else None
    return verdict is False or (evaluate_manifest or {}).get("exit_status") == QUALITY_GATE_EXIT
