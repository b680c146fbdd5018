"""The report of a sweep over k (issue 15, item 2): metric-against-k curves per algorithm and
init, the chosen point marked, every variant x k in the table (fixture runs, no Docker)."""

from __future__ import annotations

import numpy as np
import pytest

from clusterflow_steps.report import figures
from clusterflow_steps.report.build import render_run
from clusterflow_steps.report.inputs import load_run
from tests.steps.report_fixtures import blobs, make_run
from tests.steps.test_report import Page, png_size

KS = (2, 3, 4, 5, 6)


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    layout = make_run(tmp_path_factory.mktemp("sweep"), "sweep-1", dataset="synthetic",
                      data=blobs(n_samples=150, n_features=8, centers=4), variants=("k-means++", "random"), sweep=KS)
    run = load_run(layout)
    report = render_run(run)
    return run, report, Page(report.html)


def test_the_curves_are_per_init_by_k(swept):
    run, _, _ = swept
    assert run.k_curves() == {f"kmeans {init}": [(k, f"kmeans-{init}-k{k}") for k in KS]
                              for init in ("k-means++", "random")}


def test_the_report_has_a_choosing_k_figure_and_lists_every_variant(swept):
    run, report, page = swept
    assert "k_curves" in report.results["figures"] and "k-curves-figure" in page.ids
    assert len(page.images) == len(report.results["figures"]) and all(min(png_size(uri)) > 100 for uri in page.images)
    assert "Choosing k" in report.html and f"the best by {run.metrics['ranked_by']}" in report.html
    listed = [attrs["data-variant"] for attrs, _ in page.rows]
    assert listed[0] == run.best and sorted(listed) == sorted(run.variants) and len(listed) == 2 * len(KS)


def test_the_figure_draws_each_metric_against_k_and_rings_the_chosen_variant(swept, monkeypatch):
    run, _, _ = swept
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    figures.k_curves(run.k_curves(), run.variants, run.best, "adjusted_mutual_info")
    (fig,) = drawn
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["inertia (look for the elbow)", "silhouette", "AMI (ranked by)", "ARI"]
    best_k = int(run.best.rsplit("-k", 1)[1])
    for ax, metric in zip(fig.axes, ("inertia", "silhouette", "adjusted_mutual_info", "adjusted_rand"), strict=True):
        assert ax.get_xlabel() == "number of clusters k" and ax.get_legend() is not None
        lines = {line.get_label(): line for line in ax.get_lines()}
        assert list(lines["kmeans random"].get_xdata()) == list(KS)
        np.testing.assert_allclose(lines["kmeans random"].get_ydata(),
                                   [run.variants[f"kmeans-random-k{k}"][metric] for k in KS])
        chosen = lines[f"chosen: {run.best}"]
        assert list(chosen.get_xdata()) == [best_k]
        assert list(chosen.get_ydata()) == [run.variants[run.best][metric]]


def test_without_labels_only_inertia_and_silhouette_are_drawn(tmp_path, monkeypatch):
    layout = make_run(tmp_path, "sweep-2", dataset="synthetic", data=blobs(n_samples=120, n_features=8),
                      with_labels=False, variants=("k-means++",), sweep=(2, 3, 4))
    run = load_run(layout)
    assert run.metrics["ranked_by"] == "silhouette"
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    figures.k_curves(run.k_curves(), run.variants, run.best, "silhouette")
    assert [ax.get_title() for ax in drawn[0].axes] == ["inertia (look for the elbow)", "silhouette (ranked by)"]


def test_a_run_without_a_sweep_has_no_curve(tmp_path):
    run = load_run(make_run(tmp_path, "plain-1", dataset="synthetic", data=blobs(n_samples=120, n_features=8)))
    assert run.k_curves() == {}
    report = render_run(run)
    assert "k_curves" not in report.results["figures"] and "Choosing k" not in report.html


def test_the_table_of_a_sweep_is_by_variant_not_by_init(swept):
    assert swept[2].headers[0] == "variant"
