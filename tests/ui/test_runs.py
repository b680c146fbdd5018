"""The runs page's core: every run summarised from its files, sorted, and rendered with a trend plot."""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from clusterflow.ui import pages, runs
from clusterflow_steps.artifacts import step_output
from clusterflow_steps.contract import RunLayout
from tests.steps.report_fixtures import blobs, make_run

EVIL = '<script>alert("x")</script>'
EXTERNAL_URL = re.compile(r"""(src|href)=["']?(https?:)?//""", re.IGNORECASE)


class Table(HTMLParser):
    """The runs table's rows (cells by ``data-key``), header links, and the trend plot's circles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.rows: list[dict[str, str]] = []
        self.links: dict[str, str] = {}
        self.circles = self.scripts = 0
        self._key: str | None = None
        self._header: str | None = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.scripts += tag == "script"
        self.circles += tag == "circle"
        if tag == "tr" and "data-run" in attrs:
            self.rows.append({})
        if tag == "th" and "data-key" in attrs:
            self._header = attrs["data-key"]
        if tag == "a" and self._header:
            self.links[self._header] = attrs["href"]
        if tag == "td" and "data-key" in attrs and self.rows:
            self._key = attrs["data-key"]
            self.rows[-1][self._key] = ""

    def handle_endtag(self, tag):
        if tag == "td":
            self._key = None
        if tag == "th":
            self._header = None

    def handle_data(self, data):
        if self._key:
            self.rows[-1][self._key] += data


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Three scored runs (one failing its gate, one with markup in its params) and one unfinished."""
    root = tmp_path_factory.mktemp("ui") / "data"
    small = blobs(n_samples=60, n_features=3, centers=3)
    make_run(root, "run-a", dataset="synthetic", data=small, variants=("k-means++", "random"),
             metric_overrides={"k-means++": {"adjusted_rand": 0.5, "adjusted_mutual_info": 0.61, "silhouette": 0.2,
                                             "inertia": 300.4}}, best="k-means++")
    make_run(root, "run-b", dataset=f"/input/{EVIL}.csv", data=small, variants=("random",),
             gate_failures=["adjusted_rand 0.41 < min_ari 0.99"],
             metric_overrides={"random": {"adjusted_rand": 0.41, "adjusted_mutual_info": 0.7, "silhouette": -0.0004,
                                          "inertia": 120.6}})
    make_run(root, "run-c", dataset="synthetic", data=small, variants=("pca",),
             metric_overrides={"pca": {"adjusted_rand": 0.9, "adjusted_mutual_info": None, "silhouette": 0.3,
                                       "inertia": 99.0}})
    (root / "runs/run-a/report").mkdir()
    (root / "runs/run-a/report/report.html").write_text("<p>report</p>")
    with step_output(RunLayout(root, "run-d"), "prepare", {"dataset": "digits", "seed": 0}) as run:
        (run.out / "features.npy").write_bytes(b"")
    return root


@pytest.fixture(scope="module")
def found(root) -> dict[str, runs.RunSummary]:
    return {run.run_id: run for run in runs.load_runs(root)}


def test_a_run_is_summarised_from_its_metrics_and_manifests(found, root):
    a = found["run-a"]
    metrics = json.loads((root / "runs/run-a/evaluate/metrics.json").read_text())
    assert a.best == metrics["best"] == "k-means++"
    assert a.scores == {"adjusted_rand": 0.5, "adjusted_mutual_info": 0.61, "silhouette": 0.2, "inertia": 300.4}
    params = dict(a.params)
    assert params["dataset"] == "synthetic" and params["shape"] == "60×3"
    assert params["inits"] == "k-means++, random" and params["n_clusters"] == "3" and params["n_init"] == "4"
    assert a.gate == "passed" and a.gate_detail == "no thresholds set" and a.has_report
    assert a.date == json.loads((root / "runs/run-a/prepare/manifest.json").read_text())["started_at"]


def test_a_failed_gate_and_an_unfinished_run(found):
    b = found["run-b"]
    assert b.gate == "failed" and b.gate_detail == "adjusted_rand 0.41 < min_ari 0.99" and not b.has_report
    assert dict(b.params)["min_ari"] == "0.99"
    d = found["run-d"]
    assert d.gate == "not evaluated" and d.best is None and set(d.scores.values()) == {None}
    assert dict(d.params) == {"dataset": "digits"} and d.date


@pytest.mark.parametrize("key, descending, expected", [
    ("adjusted_rand", True, ["run-c", "run-a", "run-b", "run-d"]),
    ("adjusted_rand", False, ["run-b", "run-a", "run-c", "run-d"]),
    ("adjusted_mutual_info", True, ["run-b", "run-a", "run-c", "run-d"]),  # run-c has none: last
    ("inertia", False, ["run-c", "run-b", "run-a", "run-d"]),
    ("date", True, ["run-d", "run-c", "run-b", "run-a"]),
    ("run_id", False, ["run-a", "run-b", "run-c", "run-d"]),
    ("gate", False, ["run-b", "run-d", "run-a", "run-c"]),
])
def test_sorting_puts_runs_without_a_value_last(found, key, descending, expected):
    assert [r.run_id for r in runs.sort_runs(list(found.values()), key, descending)] == expected


def test_sorting_by_an_unknown_column_says_which_exist(found):
    with pytest.raises(ValueError, match="cannot sort by 'nope': use one of run_id, date"):
        runs.sort_runs(list(found.values()), "nope", True)


def test_the_trend_is_chronological_and_skips_runs_without_the_metric(found):
    assert [r.run_id for r in runs.trend(list(found.values()), "adjusted_mutual_info")] == ["run-a", "run-b"]
    assert [r.run_id for r in runs.trend(list(found.values()), "inertia")] == ["run-a", "run-b", "run-c"]


def render(found, sort="adjusted_rand", descending=True, metric="adjusted_rand") -> str:
    ordered = runs.sort_runs(list(found.values()), sort, descending)
    return pages.runs_page(ordered, runs.trend(list(found.values()), metric), sort=sort, descending=descending,
                           metric=metric)


def test_the_runs_page_shows_every_run_in_order_with_the_demo_precision(found):
    table = Table(render(found))
    assert [row["run_id"] for row in table.rows] == ["run-c", "run-a", "run-b", "run-d"]
    by_run = {row["run_id"]: row for row in table.rows}
    assert [by_run["run-b"][k] for k in ("adjusted_rand", "adjusted_mutual_info", "silhouette", "inertia")] == \
        ["0.410", "0.700", "-0.000", "121"]
    assert by_run["run-c"]["adjusted_mutual_info"] == "\u2013" and by_run["run-d"]["best"] == "\u2013"
    assert by_run["run-b"]["gate"] == "failed" and by_run["run-d"]["gate"] == "not evaluated"


def test_column_headers_link_to_the_table_sorted_by_them(found):
    links = Table(render(found)).links
    assert links["adjusted_rand"] == "?sort=adjusted_rand&order=asc&metric=adjusted_rand"  # the other way
    assert links["inertia"] == "?sort=inertia&order=asc&metric=adjusted_rand"  # lower is better first
    assert links["silhouette"] == "?sort=silhouette&order=desc&metric=adjusted_rand"
    assert links["run_id"] == "?sort=run_id&order=asc&metric=adjusted_rand"


def test_reports_and_metrics_are_linked_relative_to_the_page(found):
    page = render(found)
    assert 'href="runs/run-a/report/report.html"' in page and 'href="runs/run-b/evaluate/metrics.json"' in page
    assert "runs/run-b/report/report.html" not in page  # no report yet: no link
    unfinished = page[page.index('data-run="run-d"'):]
    # neither report nor metrics: only its steps' docker run lines
    assert unfinished[:unfinished.index("</tr>")].endswith('<td><a href="runs/run-d/steps">re-run</a></td>')


def test_the_trend_plot_has_a_title_axis_labels_a_legend_and_one_dot_per_run(found):
    page = render(found, metric="inertia")
    svg = page[page.index("<svg"):page.index("</svg>")]
    assert "inertia of the best variant, run by run" in svg and "runs, oldest to newest (3 runs)" in svg
    assert "rotate(-90)" in svg and "quality gate passed" in svg and "quality gate failed" in svg
    assert Table(page).circles == 3 + 2  # three runs, two legend entries
    assert "No run has a value" in render({}, metric="inertia")


def test_the_page_is_self_contained_and_escapes_what_it_shows(found):
    page = render(found)
    assert EVIL not in page and pages.esc(EVIL) in page and Table(page).scripts == 0
    assert not EXTERNAL_URL.search(page.replace('xmlns="http://www.w3.org/2000/svg"', ""))
    message = pages.message_page("Not served", EVIL, runs_link="runs")
    assert EVIL not in message and pages.esc(EVIL) in message


def test_the_steps_page_shows_each_steps_docker_run_line_escaped(tmp_path):
    """The same line as the report's lineage (one rendering), for every step that wrote a manifest."""
    from clusterflow_steps.launch import manifest_line

    layout = make_run(tmp_path, "r1")
    path = layout.run_dir / "cluster/random/manifest.json"
    recorded = {**json.loads(path.read_text()), "argv": ["--run-id", "r1", "--note", EVIL + " '\""],
                "image": {"name": "clusterflow/cluster:0.1.0", "digest": "sha256:" + "0" * 64}}
    path.write_text(json.dumps(recorded))
    lines = runs.step_lines(tmp_path, "r1")
    assert [key for key, _ in lines] == ["prepare", "cluster/k-means++", "cluster/pca", "cluster/random", "evaluate"]
    assert dict(lines)["cluster/random"] == manifest_line(recorded) and dict(lines)["prepare"] is None
    text = pages.steps_page("r1", lines)
    assert "<script" not in text.lower()
    assert pages.esc(manifest_line(recorded)) in text and text.count("not recorded") == 4
    assert pages.steps_page("r1", []).count('id="message"') == 1
    (layout.run_dir / "cluster/evil").symlink_to(layout.run_dir / "cluster/random")  # not a variant directory
    assert [key for key, _ in runs.step_lines(tmp_path, "r1")].count("cluster/evil") == 0


def test_an_empty_runs_table_spans_every_column():
    page = render({})
    header_cells = page[page.index("<thead>"):page.index("</thead>")].count("<th ")
    assert header_cells == 10 and f'<td colspan="{header_cells}">No runs under the data root yet.' in page


def test_the_trend_plots_at_most_the_newest_200_runs():
    """The README's cap: 250 runs with the metric, the trend holds the newest 200, oldest first."""
    many = [runs.RunSummary(run_id=f"run-{i:03d}", date=f"2026-11-{1 + i // 24:02d}T{i % 24:02d}:00:00+00:00",
                            params=(), best="pca", scores={"adjusted_mutual_info": i / 250}, gate="passed",
                            gate_detail="", has_report=True) for i in range(250)]
    shown = runs.trend(many[::-1], "adjusted_mutual_info")
    assert [r.run_id for r in shown] == [f"run-{i:03d}" for i in range(50, 250)]
