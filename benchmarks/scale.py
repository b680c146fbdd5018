"""Row 4: synthetic data at growing N through the four step containers vs one bare process."""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

import docker

from benchmarks.containers import run_pipeline
from benchmarks.measure import PEAK_RSS_WRAPPER, Stat, Table, ratio, run_process, stats
from benchmarks.scale_params import MINIBATCH_FROM, N_CENTERS, N_FEATURES, N_INIT, SEED
from clusterflow import spec
from clusterflow_steps.contract import REPORT, RunLayout

MB = 1 << 20


def params(n_samples: int) -> spec.PipelineParams:
    return spec.PipelineParams(dataset="synthetic", n_samples=n_samples, n_features=N_FEATURES,
                               n_centers=N_CENTERS, inits=("k-means++",), n_init=N_INIT, seed=SEED,
                               minibatch=n_samples >= MINIBATCH_FROM, cache=False)


def one(client: docker.DockerClient, root: Path, n_samples: int, i: int) -> dict[str, float]:
    """One container run and one bare run at ``n_samples``: seconds and peak RSS (MiB) of each."""
    data = root / f"data-{n_samples}-{i}"
    data.mkdir()
    data.chmod(0o777)
    run_id = f"scale-{n_samples}-{i}"
    try:
        total, timings = run_pipeline(client, data, run_id, params(n_samples), peak_rss=True)
        report_mb = RunLayout(data, run_id).path(REPORT).stat().st_size / 1e6
    finally:
        shutil.rmtree(data, ignore_errors=True)
    sample = {"end_to_end": total, "without_report": sum(t.wall for t in timings if t.name != "report"),
              "report_mb": report_mb}
    for t in timings:
        step = t.name.split("[")[0]
        sample[f"{step}_s"], sample[f"{step}_rss"] = t.wall, t.peak_rss / MB
    bare = run_process([sys.executable, "-c", PEAK_RSS_WRAPPER, "benchmarks.bare", "scale", str(n_samples)])
    sample["bare_s"], sample["bare_rss"] = bare.seconds, bare.peak_rss_bytes / MB
    return sample


def run(client: docker.DockerClient, sizes: list[int], repeats: int) -> tuple[Table, dict[int, dict[str, Stat]]]:
    measured = {}
    with tempfile.TemporaryDirectory(prefix="clusterflow-bench-scale-") as tmp:
        for n in sizes:
            measured[n] = stats([one(client, Path(tmp), n, i) for i in range(repeats)])
    table = Table(f"Scale: synthetic N x {N_FEATURES} (float32), 1 k-means++ variant; "
                  f"MiniBatchKMeans from {MINIBATCH_FROM:,}",
                  ("N", "features", "prepare", "cluster", "evaluate", "report", "all four (runner)",
                   "bare process", "all four / bare", "without report / bare", "cluster RSS / features",
                   "report.html"))
    for n, m in measured.items():
        features = n * N_FEATURES * 4 / MB
        cell = lambda step, m=m: f"{m[step + '_s'].median:.2f} s, {m[step + '_rss'].median:.0f} MiB"  # noqa: E731
        table.add(f"{n:,}", f"{features:.0f} MiB", cell("prepare"), cell("cluster"), cell("evaluate"),
                  cell("report"), m["end_to_end"].cell(), f"{m['bare_s'].cell()}, {m['bare_rss'].median:.0f} MiB",
                  ratio(m["end_to_end"].median, m["bare_s"].median),
                  ratio(m["without_report"].median, m["bare_s"].median),
                  ratio(m["cluster_rss"].median, features), f"{m['report_mb'].median:.2f} MB")
    table.notes += ["Each step cell: median container wall time and peak RSS of the step's process "
                    "(getrusage, inside the container).",
                    "The bare process generates the same blobs and runs the same pipeline fit and demo scores "
                    "(`benchmarks/bare.py`), without files, hashing, containers or a report."]
    return table, measured


def plot(measured: dict[int, dict[str, Stat]], path: Path) -> None:
    """Time and peak memory against N, per step and for the bare process."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = sorted(measured)
    figure, (times, memory) = plt.subplots(1, 2, figsize=(11, 4.2))
    for key, label in (("prepare", "prepare"), ("cluster", "cluster"), ("evaluate", "evaluate"),
                       ("report", "report"), ("bare", "bare process (all the work)")):
        style = {"linestyle": "--", "color": "black"} if key == "bare" else {}
        times.plot(sizes, [measured[n][f"{key}_s"].median for n in sizes], marker="o", label=label, **style)
        memory.plot(sizes, [measured[n][f"{key}_rss"].median for n in sizes], marker="o", label=label, **style)
    times.plot(sizes, [measured[n]["end_to_end"].median for n in sizes], marker="s", color="grey",
               label="all four steps (runner)")
    memory.plot(sizes, [n * N_FEATURES * 4 / MB for n in sizes], linestyle=":", color="grey",
                label="feature matrix size")
    for axis, unit in ((times, "wall time (s)"), (memory, "peak RSS (MiB)")):
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel(f"N samples (x {N_FEATURES} features)")
        axis.set_ylabel(unit)
        axis.grid(True, which="both", alpha=0.3)
    times.legend(fontsize=8)
    figure.suptitle("clusterflow scale runs: medians per step vs one bare process")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
