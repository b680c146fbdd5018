"""Every option of the pipeline and its steps, declared once.

:class:`PipelineParams` declares the run parameters (one field each, with its help, the steps that
take it and its bounds); :data:`STEP_ONLY` the options a step takes that are no run parameter.
:data:`OPTIONS` views both as :class:`Option` rows, from which come the step CLIs' click options
(:func:`clusterflow_steps.cli.step_options`), the commands the spec renders
(:meth:`PipelineParams.flags`), the Airflow Params (:meth:`Option.schema`) and the local CLI's options.

Pure standard library: the step images and the launch gate (through the spec) import it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from clusterflow_steps.contract import ALGORITHMS, ASSIGN, ENV_PREFIX, KMEANS_FAMILY, NO_CACHE_ENV, STEPS

INITS = ("k-means++", "random", "pca")
DEFAULT_ALGORITHM = KMEANS_FAMILY[0]
DISTANCES = ("euclidean", "manhattan", "chebyshev", "cosine")  # dbscan --metric
DBSCAN_MIN_SAMPLES = 5  # scikit-learn's defaults
HDBSCAN_MIN_CLUSTER_SIZE = 5
LINKAGES = ("ward", "complete", "average", "single")
COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_KMEANS_OPTIONS = ("n_clusters", "inits", "init", "n_init", "minibatch", "batch_size")
# The options each algorithm takes; every other option of this table that one of them takes is
# refused with it (--seed, --variant and the run options go with every algorithm).
ALGORITHM_OPTIONS: Mapping[str, tuple[str, ...]] = {
    "kmeans": _KMEANS_OPTIONS, "minibatch-kmeans": _KMEANS_OPTIONS,
    "dbscan": ("eps", "min_samples", "metric"),
    "hdbscan": ("min_cluster_size", "min_samples"),
    "agglomerative": ("n_clusters", "linkage"),
    "gaussian-mixture": ("n_clusters", "covariance_type", "n_init"),
    "birch": ("n_clusters",),
}
ALGORITHM_SPECIFIC = frozenset(name for names in ALGORITHM_OPTIONS.values() for name in names)
BUILTIN_DATASETS = ("digits", "synthetic")
LABEL_METRICS = ("homogeneity", "completeness", "v_measure", "adjusted_rand", "adjusted_mutual_info")
RANKABLE = ("inertia", *LABEL_METRICS, "silhouette")  # metrics --rank-by can pick the best variant by
# The most cluster tasks (variants x k) one run fans out to: beyond it the run is refused.
MAX_CLUSTER_TASKS = 64
# --k: a range (2..15), a list (2,5,10) or both (2..5,10); JSON schema checks the form at trigger time.
K_PATTERN = r"^[0-9]+(\.\.[0-9]+)?(,[0-9]+(\.\.[0-9]+)?)*$"
# The options a --sweep entry may set: the cluster step's (its algorithm first: required).
SWEEP_OPTIONS = ("algorithm", "k", "n_clusters", "inits", "minibatch", *sorted(ALGORITHM_SPECIFIC - {
    "n_clusters", "inits", "init", "minibatch", "batch_size"}))
SWEEP_EXAMPLE = 'e.g. [{"algorithm": "kmeans", "k": "2..15"}, {"algorithm": "dbscan", "min_samples": 10}]'
# Only ever on a step's command line (no CLUSTERFLOW_COMMIT_CACHE): a commit is an explicit act.
COMMIT_CACHE_FLAG = "--commit-cache"


def flag(name: str) -> str:
    """An option's command-line flag: ``n_init`` -> ``--n-init``."""
    return "--" + name.replace("_", "-")


# Every step's run options (clusterflow_steps.cli.run_options), besides --cache and --commit-cache.
RUN_ID_FLAG = flag("run_id")
DATA_ROOT_FLAG = flag("data_root")


def option_name(option: str) -> str:
    """A flag's option name, also its click parameter and its key in ``metrics.json``: ``--min-ari`` -> ``min_ari``."""
    return option[2:].replace("-", "_")


@dataclass(frozen=True)
class Option:
    """One option: what a step CLI, the local CLI and an Airflow Param are made of."""

    name: str
    kind: type  # of its value: str, int, float or bool
    default: Any
    help: str
    steps: tuple[str, ...]  # the step CLIs that take it
    pipeline: bool = True  # a PipelineParams field; else an option of its steps only
    optional: bool = False  # may be None: unset
    minimum: int | None = None
    above: float | None = None  # a lower bound the value must exceed (JSON schema's exclusiveMinimum)
    choices: tuple[str, ...] | None = None
    multiple: bool = False  # a tuple of values (the local CLI repeats the flag)
    when: Callable[[PipelineParams], bool] | None = None  # passed to its steps only when this holds
    show_default: str | None = None  # what the default is, where it is not a plain value
    gate_metric: str | None = None  # a quality-gate threshold on this metric (--min-*: lower bound)
    pattern: str | None = None  # a str value's form, as a regular expression (JSON schema's ``pattern``)
    entries: tuple[str, ...] | None = None  # a list of objects, each of these options (the first required)

    @property
    def flag(self) -> str:
        return flag(self.name)

    @property
    def no_flag(self) -> str:
        """The flag that turns a bool option off: ``--no-cache``."""
        return "--no-" + self.flag[2:]

    @property
    def envvar(self) -> str:
        return f"{ENV_PREFIX}_{self.name.upper()}"

    def schema(self) -> dict[str, Any]:
        """Its JSON schema (for Airflow's ``Param``)."""
        found: dict[str, Any] = {"description": self.help}
        if self.entries:
            entry = {"type": "object", "required": [self.entries[0]], "additionalProperties": False,
                     "properties": {name: PIPELINE[name].schema() for name in self.entries},
                     "allOf": [_entry_of(algorithm) for algorithm in ALGORITHMS]}
            return {**found, "type": "array", "items": entry, "maxItems": MAX_CLUSTER_TASKS}
        if self.minimum is not None:
            found["minimum"] = self.minimum
        if self.above is not None:
            found["exclusiveMinimum"] = self.above
        if self.multiple:
            return {**found, "type": "array", "items": {"type": "string", "enum": list(self.choices or ())},
                    "minItems": 1, "uniqueItems": True}
        found["type"] = [_JSON_TYPES[self.kind], "null"] if self.optional else _JSON_TYPES[self.kind]
        if self.kind is str and not self.optional:
            found["minLength"] = 1
        if self.pattern:
            found["pattern"] = self.pattern
        if self.choices:
            found["enum"] = [*self.choices, None] if self.optional else list(self.choices)
        return found


_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _entry_of(algorithm: str) -> dict[str, Any]:
    """A sweep entry's schema rule for ``algorithm``: only the options it takes (as
    :func:`algorithm_problem` says), so a trigger with one it does not take is refused (HTTP 400)."""
    own = ALGORITHM_OPTIONS[algorithm]
    takes = [name for name in SWEEP_OPTIONS  # k sweeps n_clusters: only where the algorithm takes it
             if (name not in ALGORITHM_SPECIFIC or name in own) and (name != "k" or "n_clusters" in own)]
    return {"if": {"properties": {"algorithm": {"const": algorithm}}}, "then": {"propertyNames": {"enum": takes}}}


def _param(default: Any, help: str, steps: tuple[str, ...], **option: Any) -> Any:
    return field(default=default, metadata={"help": help, "steps": steps, "option": option})


def _synthetic(params: PipelineParams) -> bool:
    return params.dataset == "synthetic"


def _not_default_algorithm(params: PipelineParams) -> bool:  # kmeans commands stay as they were
    return params.algorithm != DEFAULT_ALGORITHM


def resolve_algorithm(algorithm: str, minibatch: bool) -> str:
    """The algorithm to fit: ``--minibatch`` is ``--algorithm minibatch-kmeans``."""
    return KMEANS_FAMILY[1] if minibatch and algorithm in KMEANS_FAMILY else algorithm


def algorithm_problem(algorithm: str, given: Mapping[str, Any]) -> str | None:
    """One line saying why the options in ``given`` (name -> value, each set by the user) do not fit
    ``algorithm``, or ``None``: the step CLI and :meth:`PipelineParams.problem` both ask it."""
    if algorithm not in ALGORITHMS:
        return f"unknown algorithm {algorithm!r}: choose from {', '.join(ALGORITHMS)}"
    takes = ALGORITHM_OPTIONS[algorithm]
    for name in given:
        if name in ALGORITHM_SPECIFIC and name not in takes:
            return (f"{algorithm} does not take {flag(name)}: drop it, or choose an algorithm that does "
                    f"({algorithm} takes {', '.join(flag(n) for n in takes)})")
    eps = given.get("eps")
    if eps is not None and not (math.isfinite(eps) and eps > 0):
        return f"eps {eps}: use a distance above 0, or leave --eps unset to pick it from the k-distance curve"
    return None


def parse_k(text: str) -> tuple[int, ...]:
    """The numbers of clusters ``--k`` sweeps, in order: ``"2..5,10"`` -> ``(2, 3, 4, 5, 10)``.
    Raises ValueError with a one-line fix for a malformed, empty or inverted range, a k below 2
    or one given twice."""
    usage = "give a range and/or a list of numbers of clusters, e.g. 2..15 or 2,5,10"
    if not re.fullmatch(K_PATTERN, text):
        raise ValueError(f"k {text!r}: {usage}")
    found: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("..")
        first, last = int(low), int(high or low)
        if last < first:
            raise ValueError(f"k {text!r}: the range {part} is inverted or empty: write it low..high, "
                             f"e.g. {last}..{first}")
        found += range(first, last + 1)
    if min(found) < 2:
        raise ValueError(f"k {text!r}: a clustering needs 2 or more clusters: start the range at 2")
    if len(set(found)) != len(found):
        raise ValueError(f"k {text!r}: a number of clusters is given twice: {usage}")
    return tuple(found)


def parse_sweep(text: str) -> tuple[dict[str, Any], ...]:
    """``--sweep``'s JSON: a list of objects (checked further by :class:`PipelineParams`); ValueError
    with a one-line fix when it is none."""
    try:
        found = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"sweep: not JSON ({exc}): {SWEEP_EXAMPLE}") from None
    if not isinstance(found, list) or not all(isinstance(entry, dict) for entry in found):
        raise ValueError(f"sweep: give a JSON list of objects, {SWEEP_EXAMPLE}")
    return tuple(found)


def _gate(bound: str, metric: str, what: str | None = None) -> Any:
    named = f"{what} ({metric})" if what else metric
    return _param(None, f"Quality gate: the best variant's {named} must be {bound} this.", ("evaluate",),
                  gate_metric=metric)


@dataclass(frozen=True)
class PipelineParams:
    """Run parameters; the defaults reproduce the scikit-learn digits demo."""

    dataset: str = _param("digits", "digits (load_digits), synthetic (Gaussian blobs) or the path of a .csv "
                                    "(header row), .npy (2-D features) or .npz (array X, optional y) file.",
                          ("prepare", ASSIGN))
    label_column: str | None = _param(None, ".csv only: the column holding true labels (default: the data "
                                            "have no labels).", ("prepare", ASSIGN))
    n_samples: int = _param(10_000, "synthetic: number of samples.", ("prepare",), when=_synthetic, minimum=2)
    n_features: int = _param(64, "synthetic: number of features.", ("prepare",), when=_synthetic, minimum=1)
    n_centers: int = _param(10, "synthetic: number of blob centers (= distinct labels).", ("prepare",),
                            when=_synthetic, minimum=1)
    algorithm: str = _param(DEFAULT_ALGORITHM, "Clusterer, with a StandardScaler in front: kmeans (one variant "
                                               "per init), minibatch-kmeans (= --minibatch), dbscan, hdbscan, "
                                               "agglomerative, gaussian-mixture or birch (one variant, named "
                                               "after it).", ("cluster",), choices=ALGORITHMS,
                            when=_not_default_algorithm)
    n_clusters: int | None = _param(None, "Number of clusters (required without labels; not for dbscan and "
                                          "hdbscan, which find it).", ("cluster",),
                                    minimum=2, show_default="the number of distinct labels")
    eps: float | None = _param(None, "dbscan: neighbourhood radius in the scaled space (above 0).", ("cluster",),
                               above=0.0, show_default="the knee of the k-distance curve")
    min_samples: int | None = _param(None, "dbscan, hdbscan: samples in a neighbourhood for a core point "
                                           "(itself included).", ("cluster",), minimum=1,
                                     show_default=f"dbscan {DBSCAN_MIN_SAMPLES}, hdbscan --min-cluster-size")
    metric: str | None = _param(None, "dbscan: the distance between samples.", ("cluster",), choices=DISTANCES,
                                show_default=DISTANCES[0])
    min_cluster_size: int | None = _param(None, "hdbscan: the fewest samples a cluster may have.", ("cluster",),
                                          minimum=2, show_default=str(HDBSCAN_MIN_CLUSTER_SIZE))
    linkage: str | None = _param(None, "agglomerative: how the distance between clusters is measured.",
                                 ("cluster",), choices=LINKAGES, show_default=LINKAGES[0])
    covariance_type: str | None = _param(None, "gaussian-mixture: the form of each component's covariance.",
                                         ("cluster",), choices=COVARIANCE_TYPES, show_default=COVARIANCE_TYPES[0])
    k: str | None = _param(None, "Choose k: sweep the number of clusters over a range (2..15) and/or a list (2,5,10), "
                                 "one cluster task per variant and k (variants named <algorithm>[-<init>]-k<k>), "
                                 f"at most {MAX_CLUSTER_TASKS} in all; evaluate ranks them all (for the "
                                 "algorithms that take --n-clusters).", (), pattern=K_PATTERN,
                           show_default="no sweep: --n-clusters")
    sweep: tuple[dict[str, Any], ...] = _param((), "Choose the algorithm: a list of variant specs, each an "
                                                    "algorithm with its options and, for those that take "
                                                    "n_clusters, its k (a JSON list of objects, or the path of a "
                                                    f"file holding it; {SWEEP_EXAMPLE}). An entry's unset "
                                                    "options are the run's. Evaluate ranks every variant of "
                                                    "every entry.", (), entries=SWEEP_OPTIONS,
                                               show_default="one spec: --algorithm with its options")
    inits: tuple[str, ...] = _param(INITS, "Init strategies; one cluster task per strategy (its --init).", (),
                                    choices=INITS, multiple=True)
    n_init: int = _param(4, "K-Means (and gaussian-mixture) runs with different seeds, the best kept (the pca "
                            "init always runs once).", ("cluster",), minimum=1)
    seed: int = _param(0, "Random seed: of the synthetic blobs (prepare); the random_state of K-Means, of "
                          "the pca init's PCA and of gaussian-mixture (cluster); of the silhouette's draw of "
                          "samples and of the report figure's PCA/KMeans fit and samples (evaluate).",
                       ("prepare", "cluster", "evaluate"), minimum=0)
    minibatch: bool = _param(False, "Fit MiniBatchKMeans (for large data), on the features standardised in "
                                    "place: one copy of them in memory (= --algorithm minibatch-kmeans).",
                             ("cluster",))
    min_ari: float | None = _gate("at least", "adjusted_rand", "adjusted Rand index")
    min_ami: float | None = _gate("at least", "adjusted_mutual_info", "adjusted mutual information")
    min_v_measure: float | None = _gate("at least", "v_measure", "V-measure")
    min_silhouette: float | None = _gate("at least", "silhouette")
    max_inertia: float | None = _gate("at most", "inertia")
    cache: bool = _param(True, "Reuse the outputs of an identical earlier run of a step (same image digest, "
                               "params and input files) from <data root>/cache/; --no-cache (or, for a step, "
                               f"{NO_CACHE_ENV}=1) always runs it.", STEPS)

    def __post_init__(self) -> None:
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self) -> str | None:
        """One line saying what is wrong with these params and how to fix it, or ``None``."""
        if not self.inits or len(set(self.inits)) != len(self.inits):
            return f"inits {list(self.inits)!r}: give one or more distinct strategies of {', '.join(INITS)}"
        unknown = [i for i in self.inits if i not in INITS]
        if unknown:
            return f"unknown init {unknown[0]!r}: choose from {', '.join(INITS)}"
        for option in PIPELINE.values():
            value = getattr(self, option.name)
            if option.minimum is not None and value is not None and value < option.minimum:
                return f"{option.name} {value}: use {option.minimum} or more"
            if option.choices and not option.multiple and value is not None and value not in option.choices:
                return f"unknown {option.name} {value!r}: choose from {', '.join(option.choices)}"
        given = {name: getattr(self, name) for name, f in FIELDS.items() if getattr(self, name) != f.default}
        return algorithm_problem(self.algorithm, given) or self._k_problem() or self._sweep_problem()

    def _sweep_problem(self) -> str | None:
        """What is wrong with :attr:`sweep`'s entries (each checked as the params it makes), or ``None``."""
        made: dict[str, int] = {}
        for number, entry in enumerate(self.sweep, start=1):
            if not isinstance(entry, Mapping) or "algorithm" not in entry:
                return f"sweep entry {number}: give an object with an algorithm, {SWEEP_EXAMPLE}"
            unknown = sorted(set(entry) - set(SWEEP_OPTIONS))
            if unknown:
                return f"sweep entry {number}: unknown option {unknown[0]!r}: use {', '.join(SWEEP_OPTIONS)}"
            try:
                variants = self._entry(entry).variants
            except (TypeError, ValueError) as exc:
                return f"sweep entry {number} ({entry['algorithm']}): {exc}"
            for variant in variants:
                if variant in made:
                    return (f"sweep entries {made[variant]} and {number} both make variant {variant}: give them "
                            "different k (or inits)")
                made[variant] = number
        if len(made) > MAX_CLUSTER_TASKS:
            return (f"the sweep makes {len(made)} cluster tasks, more than {MAX_CLUSTER_TASKS}: sweep fewer k "
                    "or fewer entries")
        return None

    def _entry(self, entry: Mapping[str, Any]) -> PipelineParams:
        """The params of one :attr:`sweep` entry: these, with the entry's options (JSON lists as tuples)."""
        options: dict[str, Any] = {name: tuple(value) if isinstance(value, list) else value
                                   for name, value in entry.items()}
        return dataclasses.replace(self, sweep=(), **options)

    @property
    def _specs(self) -> tuple[PipelineParams, ...]:
        """The params each cluster variant comes from: each :attr:`sweep` entry's, else these."""
        return tuple(self._entry(entry) for entry in self.sweep) if self.sweep else (self,)

    def _k_problem(self) -> str | None:
        if self.k is None:
            return None
        if not self.takes("n_clusters"):
            return f"{self.algorithm} does not take --k: it finds the number of clusters itself; drop --k"
        if self.n_clusters is not None:
            return f"k {self.k!r} and n_clusters {self.n_clusters}: give one of them (--k sweeps --n-clusters)"
        try:
            ks = parse_k(self.k)
        except ValueError as exc:
            return str(exc)
        tasks = len(self._base_variants) * len(ks)
        if tasks > MAX_CLUSTER_TASKS:
            return (f"{len(self._base_variants)} variants x {len(ks)} k = {tasks} cluster tasks, more than "
                    f"{MAX_CLUSTER_TASKS}: sweep fewer k (e.g. a coarser list) or fewer inits")
        return None

    def takes(self, name: str) -> bool:
        """Whether option ``name`` goes with the algorithm these params fit (the common ones always do)."""
        fitted = resolve_algorithm(self.algorithm, self.minibatch)
        return name not in ALGORITHM_SPECIFIC or name in ALGORITHM_OPTIONS[fitted]

    @property
    def _base_variants(self) -> tuple[str, ...]:
        """The inits for the K-Means family, else the algorithm: what :attr:`variants` sweeps k over."""
        return self.inits if self.algorithm in KMEANS_FAMILY else (self.algorithm,)

    @property
    def _variant_flags(self) -> dict[str, list[str]]:
        """Each of :attr:`variants` and the cluster flags that make it (its --variant last)."""
        kmeans = self.algorithm in KMEANS_FAMILY
        if self.k is None:  # a variant per init (kmeans), else the algorithm's: named as before sweeps
            return {base: [*([flag("init"), base] if kmeans else []), flag("variant"), base]
                    for base in self._base_variants}
        algorithm = resolve_algorithm(self.algorithm, self.minibatch)
        found = {}
        for base in self._base_variants:
            for k in parse_k(self.k):
                name = f"{algorithm}-{base}-k{k}" if kmeans else f"{algorithm}-k{k}"
                found[name] = [*([flag("init"), base] if kmeans else []), flag("n_clusters"), str(k),
                               flag("variant"), name]
        return found

    @property
    def variants(self) -> tuple[str, ...]:
        """The run's cluster variants: per init (K-Means family) or the algorithm, times each --k; of
        every :attr:`sweep` entry."""
        return tuple(variant for spec in self._specs for variant in spec._variant_flags)

    def for_variant(self, variant: str) -> PipelineParams:
        """The params whose cluster flags (:meth:`flags`) make ``variant``: its sweep entry's, else these."""
        (found,) = [spec for spec in self._specs if variant in spec._variant_flags]
        return found

    def variant_flags(self, variant: str) -> list[str]:
        """The cluster flags that make one of :attr:`variants`, after :meth:`for_variant`'s :meth:`flags`."""
        return self.for_variant(variant)._variant_flags[variant]

    def flags(self, step: str) -> list[str]:
        """Command-line flags of ``step`` for these params (the cluster init comes per task)."""
        args: list[str] = []
        for option in PIPELINE.values():
            value = getattr(self, option.name)
            if step not in option.steps or value is None or (option.when and not option.when(self)) \
                    or not self.takes(option.name):
                continue
            if isinstance(value, bool):
                args.append(option.flag if value else option.no_flag)
            else:
                args += [option.flag, str(value)]
        return args

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}


FIELDS = {f.name: f for f in dataclasses.fields(PipelineParams)}


def _pipeline_option(f: dataclasses.Field[Any], hint: Any) -> Option:
    kinds = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    kind = next(k for k in kinds if k is not type(None))
    return Option(f.name, str if typing.get_origin(kind) is tuple else kind, f.default, f.metadata["help"],
                  f.metadata["steps"], optional=type(None) in kinds, **f.metadata["option"])


_HINTS = typing.get_type_hints(PipelineParams)
PIPELINE: Mapping[str, Option] = {name: _pipeline_option(f, _HINTS[name]) for name, f in FIELDS.items()}

STEP_ONLY = (
    Option("max_input_bytes", int, None, "Input files: the most bytes their arrays may take in memory, checked "
           "before they are read (a CSV line may hold a fixed share of it in characters).", ("prepare", ASSIGN),
           pipeline=False, minimum=1),  # the default depends on the container's memory: prepare sets it
    Option("max_csv_cell_chars", int, None, ".csv only: the most characters in one cell (header names and labels "
           "included).", ("prepare", ASSIGN), pipeline=False, minimum=1),  # default: prepare's limits
    Option("init", str, INITS[0], "k-means++ or random (seeded, --n-init runs), or pca: the components of a PCA "
           "of the unscaled data as initial centers, one run.", ("cluster",), pipeline=False, choices=INITS),
    Option("variant", str, None, "Output name under cluster/.", ("cluster",), pipeline=False, optional=True,
           show_default="the --init name (kmeans), else the --algorithm name"),
    Option("batch_size", int, 4096, "minibatch-kmeans: samples per mini-batch.", ("cluster",), pipeline=False,
           minimum=1),
    Option("rank_by", str, None, "Metric that picks the best variant (inertia: lowest, others: highest).",
           ("evaluate",), pipeline=False, optional=True, choices=RANKABLE,
           show_default="adjusted_mutual_info with labels, else silhouette (inertia always prefers more clusters)"),
    Option("allow_failed_gate", bool, False, "Score with the run's best model even though it failed the run's "
           "quality gate.", (ASSIGN,), pipeline=False),
)
OPTIONS: Mapping[str, Option] = {**PIPELINE, **{o.name: o for o in STEP_ONLY}}
# The quality gate's thresholds: flag -> the metric it bounds ("--min-*" lower bounds, "--max-*" upper).
GATE = {o.flag: metric for o in OPTIONS.values() if (metric := o.gate_metric)}


def param_schema(name: str) -> dict[str, Any]:
    """The JSON schema of one :class:`PipelineParams` field (for Airflow's ``Param``)."""
    return PIPELINE[name].schema()


def of_step(step: str) -> list[Option]:
    """The options of ``step``'s CLI, in table order (``--cache`` is one of its run options)."""
    return [o for o in OPTIONS.values() if step in o.steps and o.name != "cache"]
