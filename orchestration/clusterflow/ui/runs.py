"""Every run on the data root summarised for comparison: the rows of the runs page, sorted."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clusterflow import spec
from clusterflow.ui import files
from clusterflow_steps import contract
from clusterflow_steps.launch import manifest_line

METRICS = ("adjusted_rand", "adjusted_mutual_info", "silhouette", "inertia")  # of each run's best variant
SORT_KEYS = ("run_id", "date", "best", *METRICS, "gate")
MAX_TREND_POINTS = 200


@dataclass(frozen=True)
class RunSummary:
    run_id: str
    date: str | None  # when its prepare step started (ISO 8601)
    params: tuple[tuple[str, str], ...]
    best: str | None
    scores: dict[str, float | None]  # the best variant's METRICS
    gate: str  # "passed", "failed" or "not evaluated"
    gate_detail: str
    has_report: bool

    def value(self, key: str) -> Any:
        """The value a column sorts by (``None``: no value, always listed last)."""
        return self.scores.get(key) if key in METRICS else getattr(self, key)


def _json(root: Path, run_id: str, relative: str) -> dict[str, Any]:
    """A JSON object of the run, or ``{}`` when it is missing, unreadable or not an object."""
    try:
        payload = json.loads(files.read(root, run_id, relative))
    except (files.NotServed, ValueError):
        return {}
    return payload if isinstance(payload, dict) else {}


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _params(prepare: dict[str, Any], cluster: dict[str, Any], evaluate: dict[str, Any],
            variants: list[str]) -> tuple[tuple[str, str], ...]:
    """What the run was asked to do, in a few ``(name, value)`` pairs; unset values left out."""
    data = _dict(prepare.get("params"))
    shape = _dict(prepare.get("results"))
    pairs = [("dataset", data.get("dataset"))]
    if contract.is_number(shape.get("n_samples")) and contract.is_number(shape.get("n_features")):
        pairs.append(("shape", f"{shape['n_samples']:,}×{shape['n_features']:,}"))
    pairs += [(k, v) for k, v in sorted(data.items()) if k not in ("dataset", "seed")]
    fit = _dict(cluster.get("params"))
    pairs += [("inits", ", ".join(variants) or None),
              ("n_clusters", _dict(cluster.get("results")).get("n_clusters") or fit.get("n_clusters")),
              ("n_init", fit.get("n_init")), ("seed", fit.get("seed")),
              ("minibatch", "yes" if fit.get("minibatch") else None)]
    pairs += [(k, v) for k, v in sorted(_dict(evaluate.get("params")).items()) if k.startswith(("min_", "max_"))]
    return tuple((k, str(v)) for k, v in pairs if v is not None and v != "")


def _gate(metrics: dict[str, Any], evaluate: dict[str, Any]) -> tuple[str, str]:
    if not metrics:
        return "not evaluated", f"no {contract.METRICS.relative()} yet"
    gate = _dict(metrics.get("quality_gate"))
    thresholds = {k: v for k, v in _dict(gate.get("thresholds")).items() if v is not None}
    limits = ", ".join(f"{k} {v}" for k, v in sorted(thresholds.items())) or "no thresholds set"
    if contract.gate_failed(metrics, evaluate):
        return "failed", "; ".join(str(f) for f in gate.get("failures") or []) or limits
    return "passed", limits


def summarize(root: Path, run_id: str) -> RunSummary:
    """One run's row, from its metrics and manifests; whatever is missing stays empty."""
    metrics = _json(root, run_id, contract.METRICS.relative())
    variants = sorted(_dict(metrics.get("variants")))
    best = metrics.get("best") if metrics.get("best") in variants else None
    prepare = _json(root, run_id, files.manifest("prepare"))
    evaluate = _json(root, run_id, files.manifest("evaluate"))
    cluster = _json(root, run_id, files.manifest("cluster", best or (variants or ["-"])[0]))
    best_scores = _dict(metrics["variants"][best]) if best is not None else {}
    gate, detail = _gate(metrics, evaluate)
    return RunSummary(
        run_id=run_id, date=prepare.get("started_at") or evaluate.get("finished_at"),
        params=_params(prepare, cluster, evaluate, variants), best=best,
        scores={k: best_scores[k] if contract.is_number(best_scores.get(k)) else None for k in METRICS},
        gate=gate, gate_detail=detail, has_report=files.is_served(root, run_id, contract.REPORT.relative()))


def load_runs(root: Path) -> list[RunSummary]:
    return [summarize(root, run_id) for run_id in files.run_ids(root)]


def sort_runs(runs: list[RunSummary], key: str, descending: bool) -> list[RunSummary]:
    """Runs ordered by ``key`` (one of :data:`SORT_KEYS`); runs without a value come last either way."""
    if key not in SORT_KEYS:
        raise ValueError(f"cannot sort by {key!r}: use one of {', '.join(SORT_KEYS)}")
    by_id = sorted(runs, key=lambda r: r.run_id)
    present = [r for r in by_id if r.value(key) is not None]
    missing = [r for r in by_id if r.value(key) is None]
    return sorted(present, key=lambda r: r.value(key), reverse=descending) + missing


def trend(runs: list[RunSummary], metric: str) -> list[RunSummary]:
    """The runs that have ``metric``, oldest first, at most the newest :data:`MAX_TREND_POINTS`."""
    dated = sorted((r for r in runs if r.scores.get(metric) is not None), key=lambda r: (r.date or "", r.run_id))
    return dated[-MAX_TREND_POINTS:]


def step_lines(root: Path, run_id: str) -> list[tuple[str, str | None]]:
    """Each step of a run that wrote a manifest, in pipeline order, with the ``docker run`` line that
    re-runs it (:func:`clusterflow_steps.launch.manifest_line`, as in the report; ``None``: not recorded)."""
    keys = [key for step in contract.STEPS for key in ([f"{step}/{v}" for v in files.variants(root, run_id, step)]
                                                       if spec.ROLES[step].per_variant else [step])]
    found = []
    for key in keys:
        relative = f"{key}/{contract.MANIFEST}"
        if files.is_served(root, run_id, relative):
            found.append((key, manifest_line(_json(root, run_id, relative))))
    return found
