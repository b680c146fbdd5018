"""The report's figures: matplotlib (Agg, no pyplot state) rendered to PNG bytes.

Each builder returns a :class:`Figure` carrying the PNG, its alt text and a caption; the page
embeds it as a ``data:`` URI. matplotlib is imported by the builders, so ``report --help`` and a
cache hit never pay for it. The report image has no scikit-learn: the decision-region figure draws
what evaluate computed (a ``contract.Projection``), and the contingency table is counted with numpy.
"""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from clusterflow_steps.contract import PROJECTION_N_INIT, Projection

if TYPE_CHECKING:
    from matplotlib.figure import Figure as MplFigure

DPI = 80
MAX_ANNOTATED_CELLS = 30  # contingency counts are written in cells while both sides are this small
MAX_CENTER_IMAGES = 100


@dataclass(frozen=True)
class Figure:
    png: bytes
    alt: str
    caption: str


def _new_figure(figsize: tuple[float, float]) -> MplFigure:
    from matplotlib.figure import Figure as MplFigure  # Agg: savefig of a bare Figure needs no backend

    return MplFigure(figsize=figsize)


def _png(fig: MplFigure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return buffer.getvalue()


def _text(value: object) -> str:
    """A data value as matplotlib text: ``$`` would otherwise start mathtext."""
    return str(value).replace("$", r"\$")


def decision_regions(projection: Projection, *, digits: bool, note: str = "") -> Figure:
    """The demo's final figure: K-means on PCA-reduced data, regions coloured, centroids as crosses.

    Only draws: evaluate computed the PCA, the KMeans fit and the region mesh. ``note`` ends the caption.
    """
    low_x, high_x, low_y, high_y = projection.extent
    grid_rows, grid_cols = projection.regions.shape
    fig = _new_figure((8, 6.5))
    ax = fig.add_subplot()
    ax.imshow(projection.regions, interpolation="nearest", extent=(low_x, high_x, low_y, high_y),
              cmap="Paired", aspect="auto", origin="lower")
    points = projection.points
    ax.plot(points[:, 0], points[:, 1], "k.", markersize=2, label="samples")
    centroids = projection.centroids
    ax.scatter(centroids[:, 0], centroids[:, 1], marker="x", s=169, linewidths=3, color="w", zorder=10,
               label="centroids")
    ax.legend(loc="upper right", facecolor="0.55", framealpha=0.9, labelcolor="w", markerscale=1.5)
    what = "the digits dataset" if digits else "the dataset"
    ax.set_title(f"K-means clustering on {what} (PCA-reduced data)\nCentroids are marked with white cross")
    ax.set_xlabel("first principal component")
    ax.set_ylabel("second principal component")
    ax.set_xlim(low_x, high_x)
    ax.set_ylim(low_y, high_y)
    ax.set_xticks(())
    ax.set_yticks(())

    seed, k = projection.seed, projection.n_clusters
    caption = (f"As in the scikit-learn demo: the data reduced to 2-D by PCA(n_components=2), then "
               f"KMeans(init=\"k-means++\", n_clusters={k}, n_init={PROJECTION_N_INIT}, random_state={seed}) "
               f"fitted on the reduced data; the background colours each point of a {grid_cols}×{grid_rows} "
               "grid by the cluster it is assigned to. This is a 2-D illustration, not the model of the table.")
    if projection.n_fitted < projection.n_samples:
        caption += (f" PCA and KMeans were fitted on a random sample (seed {seed}) of {projection.n_fitted:,} of "
                    f"the {projection.n_samples:,} samples.")
    if len(points) < projection.n_fitted:
        caption += (f" The dots show a random sample (seed {seed}) of {len(points):,} of the "
                    f"{projection.n_fitted:,} fitted points.")
    caption += f" {note}" if note else ""
    alt = f"Decision regions of {k} K-means clusters on PCA-reduced data, with centroids."
    return Figure(_png(fig), alt, caption)


def center_images(centers: np.ndarray, variant: str, cluster_sizes: np.ndarray, *, means_of: str | None = None
                  ) -> Figure:
    """Each 64-feature cluster center drawn as an 8x8 grayscale image, labelled ``cluster i``; with
    ``means_of`` (an estimator without centers), the mean of each cluster's points instead."""
    shown = centers[:MAX_CENTER_IMAGES]
    k = len(shown)
    cols = min(k, 10)
    rows = -(-k // cols)
    fig = _new_figure((1.2 * cols + 0.8, 1.45 * rows + 0.5))
    vmin, vmax = float(np.min(shown)), float(np.max(shown))
    axes = []
    for i, center in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        axes.append(ax)
        image = ax.imshow(np.asarray(center, dtype=np.float64).reshape(8, 8), cmap="gray_r", vmin=vmin,
                          vmax=vmax if vmax > vmin else vmin + 1, interpolation="nearest")
        ax.set_title(f"cluster {i}", fontsize=9)
        ax.set_xlabel(f"n={int(cluster_sizes[i]):,}", fontsize=8)
        ax.set_xticks(())
        ax.set_yticks(())
    fig.colorbar(image, ax=axes, shrink=0.9, pad=0.02).set_label("feature value", fontsize=8)
    what = "Cluster means" if means_of else "Cluster centers"
    fig.suptitle(f"{what} of variant {_text(variant)} as 8×8 images (dark = high)", fontsize=11)
    drawn = (f"{means_of} has no centers: these are the means of the points of each of the best variant's "
             f"{len(centers)} clusters (noise points left out)" if means_of else
             f"The {len(centers)} cluster centers of the best variant")
    caption = (f"{drawn} in the original feature space, each of its 64 features drawn as one pixel of an 8×8 "
               "image on a common gray scale; n is the number of samples in the cluster.")
    if len(centers) > k:
        caption += f" The first {k} of {len(centers)} centers are shown."
    return Figure(_png(fig), f"{what} of variant {variant} as 8x8 grayscale images.", caption)


def contingency_matrix(cluster_labels: np.ndarray, true_labels: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sorted distinct clusters and true labels, and the int64 count of samples of each pair
    (rows: clusters, columns: true labels), as ``sklearn.metrics.cluster.contingency_matrix``."""
    clusters, cluster_index = np.unique(np.asarray(cluster_labels), return_inverse=True)
    truths, truth_index = np.unique(np.asarray(true_labels), return_inverse=True)
    pairs = cluster_index.ravel().astype(np.int64) * len(truths) + truth_index.ravel()
    table = np.bincount(pairs, minlength=len(clusters) * len(truths)).astype(np.int64)
    return clusters, truths, table.reshape(len(clusters), len(truths))


def contingency_heatmap(cluster_labels: np.ndarray, true_labels: np.ndarray, variant: str) -> Figure:
    """Counts of samples per (cluster, true label), cluster rows, annotated while the grid is small."""
    clusters, truths, table = contingency_matrix(cluster_labels, true_labels)  # rows: clusters
    n_rows, n_cols = table.shape
    fig = _new_figure((min(2.5 + 0.55 * n_cols, 11), min(1.8 + 0.42 * n_rows, 11)))
    ax = fig.add_subplot()
    image = ax.imshow(table, cmap="Blues", aspect="auto", interpolation="nearest")
    colorbar = fig.colorbar(image, ax=ax)
    colorbar.set_label("samples")
    if n_rows <= MAX_ANNOTATED_CELLS and n_cols <= MAX_ANNOTATED_CELLS:
        threshold = table.max() / 2
        for (r, c), count in np.ndenumerate(table):
            ax.text(c, r, str(count), ha="center", va="center", fontsize=8,
                    color="white" if count > threshold else "black")
    step_r, step_c = max(1, n_rows // MAX_ANNOTATED_CELLS), max(1, n_cols // MAX_ANNOTATED_CELLS)
    ax.set_yticks(range(0, n_rows, step_r), [_text(c) for c in clusters[::step_r]])
    ax.set_xticks(range(0, n_cols, step_c), [_text(t) for t in truths[::step_c]])
    ax.set_ylabel("cluster")
    ax.set_xlabel("true label")
    ax.set_title(f"Samples per cluster and true label (variant {_text(variant)})")
    caption = (f"Contingency matrix of the best variant's {n_rows} clusters against the {n_cols} true "
               "labels (as sklearn.metrics.cluster.contingency_matrix counts them): a clustering that recovers "
               "the labels puts one dark cell in each row.")
    return Figure(_png(fig), f"Heat map of sample counts per cluster and true label for variant {variant}.",
                  caption)


# The metric-against-k panels of a sweep, in order: (metric, title); a panel is drawn when any
# variant of the sweep has that metric.
K_CURVE_METRICS = (("inertia", "inertia (look for the elbow)"), ("silhouette", "silhouette"),
                   ("adjusted_mutual_info", "AMI"), ("adjusted_rand", "ARI"))


def k_curves(curves: Mapping[str, Sequence[tuple[int, str]]], rows: Mapping[str, Mapping[str, Any]], best: str,
             ranked_by: str) -> Figure | None:
    """Each metric against k, a line per curve (algorithm and init), the chosen variant ringed;
    ``None`` when no variant of the curves has any of the metrics."""
    swept = {variant for points in curves.values() for _, variant in points}
    shown = [(m, title) for m, title in K_CURVE_METRICS if any(rows[v].get(m) is not None for v in swept)]
    if not shown:
        return None
    fig = _new_figure((4.2 * len(shown), 4))
    for i, (metric, title) in enumerate(shown):
        ax = fig.add_subplot(1, len(shown), i + 1)
        for curve, points in curves.items():
            defined = [(k, rows[v][metric]) for k, v in points if rows[v].get(metric) is not None]
            ax.plot([k for k, _ in defined], [value for _, value in defined], marker=".", label=_text(curve))
            chosen = [(k, rows[best][metric]) for k, v in points if v == best and rows[best].get(metric) is not None]
            for k, value in chosen:
                ax.plot([k], [value], marker="o", markersize=12, fillstyle="none", color="#c81e1e", linestyle="",
                        label=f"chosen: {_text(best)}")
        ax.set_xlabel("number of clusters k")
        ax.set_ylabel(metric)
        ax.set_title(title + (" (ranked by)" if metric == ranked_by else ""))
        ax.legend(loc="best", fontsize="small")
    caption = ("Each score against the number of clusters k, a line per algorithm (and init). The inertia "
               "always falls as k grows: look for the elbow. The silhouette and, with true labels, AMI and ARI "
               f"peak near a good k. Ringed: the chosen variant, {best}, the best by {ranked_by}.")
    return Figure(_png(fig), f"Scores against k for {len(swept)} variants; the chosen one is {best}.", caption)


MAX_CURVE_POINTS = 2_000  # the k-distance curve is drawn through at most this many of its points


def k_distance(curve: np.ndarray, eps: float, min_samples: int, variant: str, rule: str) -> Figure:
    """DBSCAN's sorted k-distance curve, the ``eps`` picked from it as a horizontal line."""
    shown = np.unique(np.linspace(0, len(curve) - 1, min(len(curve), MAX_CURVE_POINTS)).astype(np.int64))
    fig = _new_figure((7, 4.5))
    ax = fig.add_subplot()
    ax.plot(shown, curve[shown], color="#1f5e9e", label=f"distance to the {min_samples}th nearest neighbour")
    ax.axhline(eps, color="#c81e1e", linestyle="--", label=f"eps = {eps:.4g}")
    ax.legend(loc="upper left")
    ax.set_xlabel("samples, sorted by that distance")
    ax.set_ylabel("distance (scaled features)")
    ax.set_title(f"k-distance curve of variant {_text(variant)} (k = {min_samples})")
    caption = (f"DBSCAN was given no eps: it was picked as {rule}. Samples below the line are core points; "
               "those above it are noise unless they lie within eps of a core point.")
    return Figure(_png(fig), f"k-distance curve of variant {variant} with eps {eps:.4g}.", caption)
