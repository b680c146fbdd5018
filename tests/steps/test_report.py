"""The report step: its page (table, figures, escaping, self-containment) and its CLI."""

from __future__ import annotations

import base64
import dataclasses
import html
import io
import json
import re
import shlex
import subprocess
import sys
from html.parser import HTMLParser

import matplotlib.image
import numpy as np
import pytest
from click.testing import CliRunner

from clusterflow_steps.artifacts import sha256_file
from clusterflow_steps.contract import Projection
from clusterflow_steps.evaluate import projection
from clusterflow_steps.report import figures
from clusterflow_steps.report.build import render_run
from clusterflow_steps.report.cli import main
from clusterflow_steps.report.inputs import load_run

try:  # tests/steps as a package or as a rootdir-inserted directory
    from tests.steps.report_fixtures import VARIANTS, blobs, make_run
except ImportError:
    from report_fixtures import VARIANTS, blobs, make_run

DEMO_FORMATS = {"fit_seconds": "{:.3f}s", "inertia": "{:.0f}", "homogeneity": "{:.3f}", "completeness": "{:.3f}",
                "v_measure": "{:.3f}", "adjusted_rand": "{:.3f}", "adjusted_mutual_info": "{:.3f}",
                "silhouette": "{:.3f}"}
HEADERS = ["init", "time", "inertia", "homo", "compl", "v-meas", "ARI", "AMI", "silhouette"]
EVIL = '<script>alert("x")</script>'
EXTERNAL_URL = re.compile(r"""(src|href)=["']?(https?:)?//""", re.IGNORECASE)
MAX_PAGE_BYTES = 1_500_000


class Page(HTMLParser):
    """The parts of a report page the tests look at."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.headers: list[str] = []
        self.rows: list[tuple[dict[str, str | None], list[str]]] = []
        self.images: list[str] = []
        self.ids: set[str] = set()
        self.scripts = 0
        self._table_depth = 0  # > 0 inside table#metrics
        self._cell: list[str] | None = None
        self._where = ""
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if attrs.get("id"):
            self.ids.add(attrs["id"])
        if tag == "script":
            self.scripts += 1
        if tag == "img":
            self.images.append(attrs.get("src") or "")
        if tag == "table" and (attrs.get("id") == "metrics" or self._table_depth):
            self._table_depth += 1
        if self._table_depth:
            if tag == "thead":
                self._where = "head"
            elif tag == "tbody":
                self._where = "body"
            elif tag == "tr" and self._where == "body":
                self.rows.append((attrs, []))
            elif tag in ("td", "th"):
                self._cell = []

    def handle_endtag(self, tag):
        if self._table_depth and tag in ("td", "th") and self._cell is not None:
            text = "".join(self._cell).strip()
            (self.headers if self._where == "head" else self.rows[-1][1]).append(text)
            self._cell = None
        if self._table_depth and tag == "table":
            self._table_depth -= 1

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)


def png_size(uri: str) -> tuple[int, int]:
    prefix = "data:image/png;base64,"
    assert uri.startswith(prefix), uri[:40]
    raw = base64.b64decode(uri[len(prefix):], validate=True)
    assert raw.startswith(b"\x89PNG\r\n\x1a\n")
    pixels = matplotlib.image.imread(io.BytesIO(raw), format="png")
    return pixels.shape[1], pixels.shape[0]


def html_escaped(text: str) -> str:
    return html.escape(text, quote=True)


def metrics_of(layout) -> dict:
    return json.loads((layout.run_dir / "evaluate/metrics.json").read_text())


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    layout = make_run(tmp_path_factory.mktemp("digits"), "digits-1")
    report = render_run(load_run(layout))
    return layout, report, Page(report.html)


@pytest.fixture(scope="module")
def unlabelled(tmp_path_factory):
    layout = make_run(tmp_path_factory.mktemp("blobs"), "blobs-1", dataset="synthetic", with_labels=False)
    report = render_run(load_run(layout))
    return layout, report, Page(report.html)


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """Small labelled blobs, a failed quality gate, markup in params and reasons, fixed metric values."""
    layout = make_run(
        tmp_path_factory.mktemp("gated"), "gated-1", dataset=f"/input/{EVIL}.csv",
        data=blobs(n_features=5), prepare_params={"label_column": EVIL},
        gate_failures=[f"adjusted_rand 0.41 < min_ari 0.99 {EVIL}"],
        metric_overrides={"random": {"fit_seconds": 1.23456, "inertia": 69432.6, "homogeneity": 0.6789,
                                     "completeness": None, "silhouette": -0.0004}},
        best="random")
    report = render_run(load_run(layout))
    return layout, report, Page(report.html)


# --- the benchmark table ---------------------------------------------------------------------------

def test_table_has_the_demo_columns_and_its_formatting_for_every_variant(digits):
    layout, _, page = digits
    assert page.headers == HEADERS
    scores = metrics_of(layout)["variants"]
    rows = {attrs["data-variant"]: cells for attrs, cells in page.rows}
    assert set(rows) == set(VARIANTS)
    for variant, cells in rows.items():
        assert cells[0].removesuffix("best") == variant
        expected = [DEMO_FORMATS[key].format(scores[variant][key]) for key in DEMO_FORMATS]
        assert cells[1:] == expected, variant


def test_fixed_values_render_exactly_as_the_demo_prints_them(gated):
    _, _, page = gated
    cells = {attrs["data-variant"]: cells for attrs, cells in page.rows}["random"]
    assert cells[1:4] == ["1.235s", "69433", "0.679"]
    assert cells[4] == "\u2013"  # completeness null
    assert cells[8] == "-0.000"


def test_best_variant_row_comes_first_and_is_the_only_one_marked(digits, gated):
    for layout, _, page in (digits, gated):
        metrics = metrics_of(layout)
        best_rows = [attrs["data-variant"] for attrs, _ in page.rows if "best" in (attrs.get("class") or "")]
        assert best_rows == [metrics["best"]]
        assert page.rows[0][0]["data-variant"] == metrics["best"]
    # the rest in ranking order: adjusted mutual information, highest first
    layout, _, page = digits
    ami = [metrics_of(layout)["variants"][attrs["data-variant"]]["adjusted_mutual_info"] for attrs, _ in page.rows]
    assert ami == sorted(ami, reverse=True)


def test_without_labels_scores_show_a_dash_and_there_is_no_heat_map(unlabelled):
    _, report, page = unlabelled
    for attrs, cells in page.rows:
        assert cells[3:8] == ["\u2013"] * 5, attrs["data-variant"]
        assert re.fullmatch(r"\d+\.\d{3}s", cells[1]) and re.fullmatch(r"\d+", cells[2])
        assert re.fullmatch(r"-?\d\.\d{3}", cells[8])
    assert "contingency-figure" not in page.ids and "contingency-note" in page.ids
    assert "No true labels" in report.html
    assert report.results["figures"] == ["decision_regions", "cluster_centers"]
    assert len(page.images) == 2


# --- figures ----------------------------------------------------------------------------------------

def test_digits_page_has_three_valid_figures(digits):
    _, report, page = digits
    assert {"decision-regions-figure", "centers-figure", "contingency-figure"} <= page.ids
    assert len(page.images) == 3
    for uri in page.images:
        width, height = png_size(uri)
        assert width > 100 and height > 100


def test_non_digit_shaped_data_get_a_note_instead_of_center_images(gated):
    _, report, page = gated
    assert "centers-note" in page.ids and "centers-figure" not in page.ids
    assert "these data have 5" in report.html
    assert len(page.images) == 2 and all(png_size(uri) for uri in page.images)


def projected(tmp_path, features, n_clusters, seed):
    """What the report reads: evaluate's projection of ``features``, written and read back."""
    path = projection.compute(features, n_clusters, seed).save(tmp_path / "projection.npz")
    return Projection.load(path)


def test_large_data_are_sampled_for_the_pca_figure_and_the_caption_says_so(tmp_path):
    features = np.random.default_rng(1).normal(size=(60_000, 3)).astype(np.float32)
    figure = figures.decision_regions(projected(tmp_path, features, 3, seed=7), digits=False)
    assert "sample (seed 7) of 50,000 of the 60,000 samples" in figure.caption
    assert f"random sample (seed 7) of {projection.MAX_PLOT_ROWS:,} of the 50,000 fitted points" in figure.caption
    assert projection.MAX_PLOT_ROWS <= 5_000  # keeps a 1M-sample run's page small
    assert png_size("data:image/png;base64," + base64.b64encode(figure.png).decode())[0] > 100
    small = figures.decision_regions(projected(tmp_path, features[:500], 3, seed=7), digits=False)
    assert "sample" not in small.caption


def test_pca_figure_is_drawn_as_the_demo_draws_it(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    features, _ = blobs(n_samples=150, n_features=6, centers=3)
    figures.decision_regions(projected(tmp_path, features, 3, seed=0), digits=True)
    figures.decision_regions(projected(tmp_path, features, 3, seed=0), digits=False)
    titles = [fig.axes[0].get_title() for fig in drawn]
    assert titles == [f"K-means clustering on {what} (PCA-reduced data)\nCentroids are marked with white cross"
                      for what in ("the digits dataset", "the dataset")]
    ax = drawn[0].axes[0]
    assert ax.get_xlabel() and ax.get_ylabel() and not len(ax.get_xticks()) and not len(ax.get_yticks())
    assert ax.get_images()[0].get_array().shape == (projection.GRID_POINTS, projection.GRID_POINTS)
    (crosses,) = ax.collections
    assert len(crosses.get_offsets()) == 3 and crosses.get_zorder() == 10
    assert list(crosses.get_linewidths()) == [3] and list(crosses.get_sizes()) == [169]
    assert ax.lines[0].get_xydata().shape == (150, 2)  # every point, as black dots
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["samples", "centroids"]


def test_large_data_draw_the_same_sample_every_time(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    features = np.random.default_rng(2).normal(size=(20_000, 4))
    figures.decision_regions(projected(tmp_path, features, 3, seed=5), digits=False)
    figures.decision_regions(projected(tmp_path, features, 3, seed=5), digits=False)
    first, second = (fig.axes[0].lines[0].get_xydata() for fig in drawn)
    assert first.shape == (projection.MAX_PLOT_ROWS, 2) and np.array_equal(first, second)


def demo_projection(features, n_clusters, seed):
    """The demo's final figure's data, as the report computed it before evaluate did: PCA to 2-D and
    KMeans(k-means++, n_init=4) on a seeded sample of at most 50,000 rows, a 400 x 400 region mesh."""
    from sklearn.cluster import KMeans
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(seed)
    n = features.shape[0]
    fit_rows = None if n <= 50_000 else np.sort(rng.choice(n, size=50_000, replace=False))
    reduced = PCA(n_components=2).fit_transform(np.asarray(features if fit_rows is None else features[fit_rows],
                                                           dtype=np.float64))
    kmeans = KMeans(init="k-means++", n_clusters=n_clusters, n_init=4, random_state=seed).fit(reduced)
    low, high = reduced.min(axis=0), reduced.max(axis=0)
    margin = np.maximum((high - low) * 0.05, 1e-9)
    low, high = low - margin, high + margin
    xx, yy = np.meshgrid(np.linspace(low[0], high[0], 400), np.linspace(low[1], high[1], 400))
    regions = kmeans.predict(np.c_[xx.ravel(), yy.ravel()]).reshape(xx.shape)
    plot_rows = None if len(reduced) <= 3_000 else np.sort(rng.choice(len(reduced), size=3_000, replace=False))
    return (reduced if plot_rows is None else reduced[plot_rows], kmeans.cluster_centers_, regions,
            (low[0], high[0], low[1], high[1]))


@pytest.mark.parametrize("shape", [(1797, 64), (60_000, 3)])
def test_evaluates_projection_is_the_demos_pca_and_kmeans(tmp_path, shape):
    if shape[1] == 64:
        from sklearn.datasets import load_digits
        features = load_digits().data
    else:
        features = np.random.default_rng(3).normal(size=shape).astype(np.float32)
    written = projected(tmp_path, features, 10, seed=0)
    points, centroids, regions, extent = demo_projection(features, 10, 0)
    np.testing.assert_array_equal(written.points, points)
    np.testing.assert_array_equal(written.centroids, centroids)
    np.testing.assert_array_equal(written.regions, regions)
    assert written.extent == extent


def test_the_report_draws_what_evaluate_wrote(tmp_path, monkeypatch):
    layout = make_run(tmp_path, "proj-1", dataset="synthetic", data=blobs(n_samples=120, n_features=8))
    path = layout.run_dir / "evaluate/projection.npz"
    written = Projection.load(path)
    assert (written.n_samples, written.n_fitted, written.n_clusters) == (120, 120, 4)
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    render_run(load_run(layout))
    ax = drawn[0].axes[0]
    np.testing.assert_array_equal(ax.collections[0].get_offsets(), written.centroids)
    np.testing.assert_array_equal(ax.lines[0].get_xydata(), written.points)
    np.testing.assert_array_equal(ax.get_images()[0].get_array(), written.regions)
    assert (*ax.get_xlim(), *ax.get_ylim()) == written.extent


@pytest.mark.parametrize("damage, expect", [
    ("missing", "missing input"), ("garbage", "is unreadable"), ("stale", "was computed for 60 samples"),
    ("labels", "region labels outside")])
def test_a_missing_or_damaged_projection_is_one_line_naming_evaluate(tmp_path, damage, expect):
    layout = make_run(tmp_path, "proj-2", dataset="synthetic", data=blobs(n_samples=120, n_features=8))
    path = layout.run_dir / "evaluate/projection.npz"
    features = np.load(layout.run_dir / "prepare/features.npy")
    if damage == "missing":
        path.unlink()
    elif damage == "garbage":
        path.write_bytes(b"PK\x03\x04 not a zip")
    elif damage == "stale":
        projection.compute(features[:60], 4, seed=0).save(path)
    else:
        good = projection.compute(features, 4, seed=0)
        dataclasses.replace(good, regions=good.regions + 7).save(path)
    result = CliRunner().invoke(main, ["--run-id", "proj-2", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "evaluate/projection.npz" in line and expect in line and "evaluate step" in line


def test_one_feature_data_need_no_projection(tmp_path):
    features = np.random.default_rng(0).normal(size=(100, 1))
    layout = make_run(tmp_path, "proj-3", dataset="synthetic", data=(features, None), with_labels=False,
                      variants=("random",), n_clusters=2)
    assert not (layout.run_dir / "evaluate/projection.npz").exists()
    report = render_run(load_run(layout))
    assert "needs at least 2 features; these data have 1" in report.html
    assert report.results["figures"] == []


@pytest.mark.parametrize("truth", [np.arange(200) % 7, np.array(list("abcde") * 40)])
def test_the_contingency_matrix_counts_as_scikit_learn_does(truth):
    from sklearn.metrics.cluster import contingency_matrix

    clusters = np.random.default_rng(4).integers(0, 9, size=200)
    rows, columns, table = figures.contingency_matrix(clusters, truth)
    np.testing.assert_array_equal(rows, np.unique(clusters))
    np.testing.assert_array_equal(columns, np.unique(truth))
    expected = contingency_matrix(clusters, truth)
    assert table.dtype == expected.dtype and np.array_equal(table, expected)


def test_every_figure_has_a_title_axis_labels_and_a_legend(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(figures, "_png", lambda fig: drawn.append(fig) or b"")
    features, labels = blobs(n_samples=120, n_features=64, centers=3)
    figures.decision_regions(projected(tmp_path, features, 3, seed=0), digits=False)
    figures.center_images(features[:3], "random", np.array([40, 40, 40]))
    figures.contingency_heatmap(labels, labels, "random")
    decision, centers, heatmap = drawn
    assert decision.axes[0].get_title() and decision.axes[0].get_legend() is not None
    assert centers.get_suptitle() and centers.axes[-1].get_ylabel() == "feature value"  # its colorbar
    assert all(ax.get_title() for ax in centers.axes[:3])
    ax, colorbar = heatmap.axes
    assert ax.get_title() and (ax.get_xlabel(), ax.get_ylabel()) == ("true label", "cluster")
    assert colorbar.get_ylabel() == "samples"


def test_help_imports_neither_matplotlib_nor_scikit_learn():
    code = ("import sys; from click.testing import CliRunner; from clusterflow_steps.report.cli import main; "
            "assert CliRunner().invoke(main, ['--help']).exit_code == 0; "
            "print(sorted(m for m in ('matplotlib', 'sklearn', 'scipy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_the_report_renders_every_figure_without_scikit_learn_or_scipy(digits):
    """The report image has neither: rendering a digits run must not even try to import them."""
    layout, _, _ = digits
    code = ("import sys\n"
            "for blocked in ('sklearn', 'scipy', 'joblib', 'threadpoolctl'): sys.modules[blocked] = None\n"
            "from pathlib import Path\n"
            "from clusterflow_steps.contract import RunLayout\n"
            "from clusterflow_steps.report.build import render_run\n"
            "from clusterflow_steps.report.inputs import load_run\n"
            f"report = render_run(load_run(RunLayout(Path({str(layout.data_root)!r}), {layout.run_id!r})))\n"
            "print(report.results['figures'])")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['decision_regions', 'cluster_centers', 'contingency']"


# --- a safe, self-contained page ----------------------------------------------------------------------

@pytest.mark.parametrize("which", ["digits", "unlabelled", "gated"])
def test_page_loads_nothing_from_outside(which, request):
    _, report, page = request.getfixturevalue(which)
    assert not EXTERNAL_URL.search(report.html)
    assert not re.search(r"<link|@import|url\(", report.html, re.IGNORECASE)
    assert page.scripts == 0
    assert all(src.startswith("data:image/png;base64,") for src in page.images)


def test_text_from_params_and_manifests_is_escaped(gated):
    _, report, page = gated
    assert EVIL not in report.html and "<script" not in report.html.lower()
    assert page.scripts == 0
    assert html_escaped(EVIL) in report.html  # shown, as text: in the header, the banner and the lineage


def test_a_failed_quality_gate_shows_a_banner_with_its_reasons(gated, digits):
    _, report, page = gated
    assert "quality-gate" in page.ids
    banner = re.search(r'<div class="banner failed"[^>]*>(.*?)</div>', report.html, re.S)
    assert banner and banner.group(1).startswith("quality gate failed: adjusted_rand 0.41 &lt; min_ari 0.99")
    assert report.results["quality_gate_passed"] is False
    _, report, _ = digits
    assert "banner failed" not in report.html and report.results["quality_gate_passed"] is True


def test_lineage_lists_every_step_manifest_with_digests(digits):
    layout, report, _ = digits
    lineage = report.html[report.html.index('id="lineage"'):]
    for key in ("prepare", *(f"cluster/{v}" for v in VARIANTS), "evaluate"):
        manifest = json.loads((layout.run_dir / key / "manifest.json").read_text())
        assert f"<summary>{html_escaped(key)} " in lineage
        for info in (*manifest["inputs"].values(), *manifest["outputs"].values()):
            assert info["sha256"] in lineage
    assert json.loads((layout.run_dir / "prepare/manifest.json").read_text())["packages"]["numpy"] in lineage


RERUN = re.compile(r'<pre class="rerun">(.*?)</pre>', re.S)
DIGEST = "sha256:" + "ab" * 32


def test_lineage_shows_a_docker_run_line_per_step_that_gives_back_the_recorded_arguments(tmp_path):
    """Every value of the line comes from a manifest a step wrote: HTML-escaped on the page, and
    shell-quoted so that a shell hands docker the recorded image and arguments unchanged."""
    layout = make_run(tmp_path, "lines-1")
    evil_args = {key: ["--run-id", "lines-1", "--note", f"{EVIL} it's \"$(id)\" `x` {key}", "--flag"]
                 for key in ("prepare", "cluster/random", "evaluate")}
    images = {"prepare": {"name": "clusterflow/prepare:0.1.0", "digest": DIGEST},
              "cluster/random": {"name": f"registry.test:5000/clusterflow/cluster@{DIGEST}", "digest": DIGEST},
              "evaluate": {"name": "clusterflow/evaluate:0.1.0", "digest": None}}
    for key, argv in evil_args.items():
        path = layout.run_dir / key / "manifest.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), "argv": argv, "image": images[key]}))
    report = render_run(load_run(layout))
    assert "<script" not in report.html.lower() and Page(report.html).scripts == 0
    lineage = report.html[report.html.index('id="lineage"'):]
    sections = re.split(r"<details open><summary>", lineage)[1:]
    shown = {section.split(" ", 1)[0]: RERUN.search(section) for section in sections}
    assert set(shown) == {"prepare", *(f"cluster/{v}" for v in VARIANTS), "evaluate"}
    for key, match in shown.items():
        if key not in evil_args:  # written without a command (make_run): nothing made up
            assert match is None and "not recorded" in sections[list(shown).index(key)]
            continue
        words = shlex.split(html.unescape(match.group(1)))
        image = images[key]["name"]
        assert words[:2] == ["docker", "run"] and words[-len(evil_args[key]) - 1:] == [image, *evil_args[key]]
        assert f"CLUSTERFLOW_IMAGE={image}" in words
        assert ("CLUSTERFLOW_IMAGE_DIGEST=" + str(images[key]["digest"]) in words) == bool(images[key]["digest"])
    assert '"$PWD/data"' in html.unescape(lineage)  # the one placeholder, explained once
    assert html.unescape(lineage).count("replace \"$PWD/data\"") == 1


def test_digits_page_stays_small(digits):
    _, report, _ = digits
    assert report.results["page_bytes"] == len(report.html.encode()) < MAX_PAGE_BYTES


# --- the CLI ----------------------------------------------------------------------------------------

def test_cli_writes_the_page_and_its_manifest_atomically(tmp_path):
    layout = make_run(tmp_path, "cli-1", dataset="synthetic", data=blobs(n_samples=120, n_features=64))
    result = CliRunner().invoke(main, ["--data-root", str(tmp_path)], env={"CLUSTERFLOW_RUN_ID": "cli-1"})
    assert result.exit_code == 0, result.output
    out = layout.step_dir("report")
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "report.html"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary directory left
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["step"] == "report" and manifest["params"] == {} and manifest["exit_status"] == 0
    assert manifest["outputs"]["report.html"]["sha256"] == sha256_file(out / "report.html")
    best = manifest["results"]["best"]
    assert set(manifest["inputs"]) == {
        "evaluate/metrics.json", "evaluate/manifest.json", "evaluate/projection.npz", "prepare/manifest.json",
        "prepare/features.npy",
        "prepare/labels.npy", *(f"cluster/{v}/manifest.json" for v in VARIANTS),
        f"cluster/{best}/labels.npy", f"cluster/{best}/centers.npy"}
    for name, info in manifest["inputs"].items():
        assert info["sha256"] == sha256_file(layout.run_dir / name)
    assert manifest["results"]["page_bytes"] == (out / "report.html").stat().st_size
    assert f"report: wrote {out / 'report.html'}" in result.stdout


def test_cli_says_what_is_missing_in_one_line_and_keeps_the_previous_report(tmp_path):
    layout = make_run(tmp_path, "cli-2", dataset="synthetic", data=blobs(n_samples=120, n_features=8))
    args = ["--run-id", "cli-2", "--data-root", str(tmp_path)]
    assert CliRunner().invoke(main, args).exit_code == 0
    page = layout.step_dir("report") / "report.html"
    before = page.read_bytes()
    (layout.run_dir / "evaluate/metrics.json").unlink()
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "metrics.json" in lines[0] and "run the evaluate step" in lines[0]
    assert page.read_bytes() == before


def test_cli_on_a_run_without_evaluate_output_exits_2(tmp_path):
    result = CliRunner().invoke(main, ["--run-id", "never-ran", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "evaluate/metrics.json" in lines[0] and "evaluate step" in lines[0]
    assert not (tmp_path / "runs/never-ran/report").exists()


def test_cli_reports_a_failed_gate_and_still_succeeds(tmp_path):
    make_run(tmp_path, "cli-3", dataset="synthetic", data=blobs(n_samples=120, n_features=8),
             gate_failures=["silhouette 0.05 < min_silhouette 0.1"])
    result = CliRunner().invoke(main, ["--run-id", "cli-3", "--data-root", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "quality gate failed: silhouette 0.05 < min_silhouette 0.1" in result.stdout
    page = (tmp_path / "runs/cli-3/report/report.html").read_text()
    assert "quality gate failed: silhouette 0.05 &lt; min_silhouette 0.1" in page


def test_missing_cluster_output_of_the_best_variant_names_the_cluster_step(tmp_path):
    layout = make_run(tmp_path, "cli-4", dataset="synthetic", data=blobs(n_samples=120, n_features=8))
    best = metrics_of(layout)["best"]
    (layout.run_dir / f"cluster/{best}/centers.npy").unlink()
    result = CliRunner().invoke(main, ["--run-id", "cli-4", "--data-root", str(tmp_path)])
    assert result.exit_code == 2
    assert f"cluster/{best}/centers.npy" in result.stderr and f"--variant {best}" in result.stderr


def test_metrics_naming_an_unknown_best_variant_is_a_one_line_user_error(tmp_path):
    layout = make_run(tmp_path, "cli-5", dataset="synthetic", data=blobs(n_samples=120, n_features=8),
                      variants=("k-means++",))
    path = layout.run_dir / "evaluate/metrics.json"
    path.write_text(json.dumps({**metrics_of(layout), "best": "nope"}))
    result = CliRunner().invoke(main, ["--run-id", "cli-5", "--data-root", str(tmp_path)])
    assert result.exit_code == 2 and len(result.stderr.strip().splitlines()) == 1
    assert "'nope'" in result.stderr and "re-run the evaluate step" in result.stderr


def test_page_header_names_the_run_and_best_variant(digits):
    layout, report, _ = digits
    header = report.html[report.html.index("<header>"):report.html.index("</header>")]
    assert "digits-1" in header and html_escaped(metrics_of(layout)["best"]) in header
    assert "1,797 samples × 64 features" in header and "quality gate" in header
