"""The artifact contract, as code: every name a step writes or a reader opens, defined here once.

Layout under the data root (``/data`` in every container)::

    runs/<run_id>/prepare/{features.npy,labels.npy,manifest.json}
    runs/<run_id>/cluster/<variant>/{model.joblib,model.npz,labels.npy,centers.npy,manifest.json}
    runs/<run_id>/evaluate/{metrics.json,projection.npz,manifest.json}
    runs/<run_id>/report/{report.html,manifest.json}
    cache/                      the step cache store (clusterflow_steps.cache)

Pure standard library: the step images, the orchestration (runner, DAG, launch gate) and the UI
plugin import it, so they apply the very same names and rules. How files are written and read
(atomically, checked) is :mod:`clusterflow_steps.artifacts`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

STEPS = ("prepare", "cluster", "evaluate", "report")
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
        return f"{self.step} (--variant {variant})" if variant else self.step


FEATURES = Artifact("prepare", "features.npy")
LABELS = Artifact("prepare", "labels.npy")  # only when the data have true labels
MODEL = Artifact("cluster", "model.joblib")  # the fitted scikit-learn pipeline, a pickle
# The same fit as plain arrays (np.load(..., allow_pickle=False)), one per MODEL_FIELDS entry:
# centers in the original feature space, the StandardScaler's mean and scale (a sample x is
# assigned to argmin_k |(x - scaler_mean) / scaler_scale - (centers_k - scaler_mean) / scaler_scale|)
# and the fit's params; strings as 0-d unicode arrays. clusterflow itself never loads model.joblib.
MODEL_ARRAYS = Artifact("cluster", "model.npz")
MODEL_FIELDS = ("centers", "scaler_mean", "scaler_scale", "n_clusters", "init", "n_init", "seed", "estimator")
CLUSTER_LABELS = Artifact("cluster", "labels.npy")
CENTERS = Artifact("cluster", "centers.npy")
METRICS = Artifact("evaluate", "metrics.json")
# The data of the report's PCA-reduced figure (written by evaluate, drawn by the report, whose image
# has no scikit-learn); only for data of at least PROJECTION_MIN_FEATURES features.
PROJECTION = Artifact("evaluate", "projection.npz")
PROJECTION_MIN_FEATURES = 2
REPORT = Artifact("report", "report.html")
# How metrics.json's scores rank: lower is better for these, higher for every other one.
LOWER_IS_BETTER = frozenset({"inertia", "fit_seconds"})


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run's artifacts under a data root; the run id is checked once, here."""

    data_root: Path
    run_id: str

    def __post_init__(self) -> None:
        RUN_ID.check(self.run_id)

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
