"""The plugin's own HTML: the runs page (sortable table, trend plot) and one-line message pages.

Self-contained like the report: inline CSS and SVG, no script, every link relative (so the pages
work under any API server base path), every value from the data root escaped.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from clusterflow.ui.runs import METRICS, RunSummary
from clusterflow_steps import contract
from clusterflow_steps.contract import LOWER_IS_BETTER
from clusterflow_steps.launch import LAPTOP_NOTE
from clusterflow_steps.report.formats import COLUMN_TITLES, FORMATS, NULL, esc, format_metric

# Served with every HTML response: nothing but inline styles and data: images, framed only by Airflow.
SECURITY_HEADERS = {
    "Content-Security-Policy": ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                                "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}
LABELS = {"run_id": "run", "date": "date", "best": "best variant", "adjusted_rand": "ARI",
          "adjusted_mutual_info": "AMI", "silhouette": "silhouette", "inertia": "inertia", "gate": "quality gate"}
GATE_COLOURS = {"passed": "#2f6fb0", "failed": "#c81e1e"}
RUNS_PAGE = "runs"  # the runs page; runs/<run id>/<file> serves a run's files, as the data root holds them
STEPS_PAGE = "steps"  # runs/<run id>/steps: the docker run line of each step

CSS = """
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;background:#fff}
main{max-width:1200px;margin:0 auto;padding:.75rem 1rem 2rem}
h1{font-size:1.35rem;margin:.25rem 0 .5rem}
.note{color:#4a5560;font-size:.88rem}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%}
th,td{padding:.3rem .45rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
th a{color:inherit}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.params{font-size:.82rem;color:#3a444e;min-width:12rem}
.gate-failed{color:#c81e1e;font-weight:600}
.gate-passed{color:#1f5e3d}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:#f6f8fa;padding:.5rem;border-radius:4px;
font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
code{font:12.5px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere}
figure{margin:1rem 0}
svg{width:100%;max-width:760px;height:auto;display:block}
nav.metrics a,nav.metrics strong{margin-right:.6rem}
"""


def document(title: str, body: str) -> str:
    return ('<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{esc(title)}</title><style>{CSS}</style></head><body><main>{body}</main></body></html>\n")


def message_page(title: str, message: str, *, runs_link: str = "") -> str:
    """A page saying one thing (e.g. that a run has no report yet), linking to the runs page."""
    link = f'<p><a href="{esc(runs_link)}">All runs</a></p>' if runs_link else ""
    return document(title, f"<h1>{esc(title)}</h1><p id=\"message\">{esc(message)}</p>{link}")


def _query(**params: str) -> str:
    return "?" + urlencode(params)


def _run_path(run_id: str, relative: str) -> str:
    return f"{RUNS_PAGE}/{quote(run_id, safe='')}/{relative}"


def _metric(run: RunSummary, key: str) -> str:
    return format_metric(run.scores.get(key), FORMATS[key])


def _header(key: str, sort: str, descending: bool, metric: str) -> str:
    """A column header that links to the table sorted by it (again: the other way round)."""
    first_descending = key in METRICS and key not in LOWER_IS_BETTER or key == "date"
    order_desc = not descending if key == sort else first_descending
    href = _query(sort=key, order="desc" if order_desc else "asc", metric=metric)
    aria = f' aria-sort="{"descending" if descending else "ascending"}"' if key == sort else ""
    arrow = (" \u25bc" if descending else " \u25b2") if key == sort else ""
    numeric = ' class="num"' if key in METRICS else ""
    title = f' title="{esc(COLUMN_TITLES[key])} of the best variant"' if key in METRICS else ""
    return (f'<th scope="col" data-key="{key}"{numeric}{aria}{title}>'
            f'<a href="{esc(href)}">{esc(LABELS[key])}{arrow}</a></th>')


def _row(run: RunSummary) -> str:
    params = "; ".join(f"{k} {v}" for k, v in run.params) or NULL
    links = [f'<a href="{esc(_run_path(run.run_id, relative))}">{name}</a>'
             for name, relative, shown in (("report", contract.REPORT.relative(), run.has_report),
                                           ("metrics", contract.METRICS.relative(), run.gate != "not evaluated"),
                                           ("re-run", STEPS_PAGE, run.date is not None))
             if shown]
    cells = "".join(f'<td class="num" data-key="{k}">{esc(_metric(run, k))}</td>' for k in METRICS)
    return (f'<tr data-run="{esc(run.run_id)}"><td data-key="run_id"><code>{esc(run.run_id)}</code></td>'
            f'<td data-key="date">{esc((run.date or NULL)[:19].replace("T", " "))}</td>'
            f'<td class="params">{esc(params)}</td><td data-key="best">{esc(run.best or NULL)}</td>{cells}'
            f'<td data-key="gate" class="gate-{esc(run.gate.split()[0])}" title="{esc(run.gate_detail)}">'
            f"{esc(run.gate)}</td><td>{' · '.join(links) or NULL}</td></tr>")



def steps_page(run_id: str, lines: list[tuple[str, str | None]]) -> str:
    """The ``docker run`` line that re-runs each step of a run (the report's lineage shows the same)."""
    sections = "".join(
        f'<section data-step="{esc(key)}"><h2>{esc(key)}</h2>'
        + (f'<pre class="rerun">{esc(line)}</pre>' if line
           else '<p class="note">not recorded (the step\'s manifest lists no arguments)</p>') + "</section>"
        for key, line in lines) or '<p class="note" id="message">No step of this run has written a manifest yet.</p>'
    return document(f"clusterflow run {run_id}: re-run a step", (
        f"<h1>Re-run a step of run <code>{esc(run_id)}</code></h1><p class=\"note\">{esc(LAPTOP_NOTE)} "
        f"<code>clusterflow reproduce --run-id {esc(run_id)} --step STEP</code> re-runs one here and compares "
        f'its outputs with the manifest.</p>{sections}<p><a href="../../{RUNS_PAGE}">All runs</a></p>'))


def trend_svg(points: list[RunSummary], metric: str, total: int) -> str:
    """A small line plot of ``metric`` over the runs, oldest left; dots coloured by quality gate."""
    label = COLUMN_TITLES[metric]
    if not points:
        return f'<p class="note" id="trend-empty">No run has a value of {esc(label)} yet.</p>'
    width, height, left, right, top, bottom = 760, 280, 70, 150, 34, 46
    values = [float(v) for run in points if (v := run.scores[metric]) is not None]  # trend() gave runs with it
    low, high = min(values), max(values)
    if high == low:  # one value: centre it in a band of ±5 %
        pad = 0.05 * abs(low) or 0.05
        low, high = low - pad, high + pad
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(i: int) -> float:
        return left + (plot_w * i / (len(points) - 1) if len(points) > 1 else plot_w / 2)

    def y(v: float) -> float:
        return top + plot_h * (1 - (v - low) / (high - low))

    spec = FORMATS[metric]
    ticks = "".join(
        f'<line x1="{left - 4}" x2="{left + plot_w}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e3e6ea"/>'
        f'<text x="{left - 8}" y="{y(v) + 4:.1f}" text-anchor="end">{esc(spec.format(v))}</text>'
        for v in (low, (low + high) / 2, high))
    line = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, v in enumerate(values))
    dots = "".join(
        f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="4.5" fill="{GATE_COLOURS[run.gate]}">'
        f"<title>{esc(run.run_id)}: {esc(spec.format(v))} (gate {esc(run.gate)})</title></circle>"
        for i, (run, v) in enumerate(zip(points, values, strict=True)))
    legend = "".join(
        f'<circle cx="{width - right + 22}" cy="{top + 12 + 20 * n}" r="4.5" fill="{colour}"/>'
        f'<text x="{width - right + 32}" y="{top + 16 + 20 * n}">quality gate {gate}</text>'
        for n, (gate, colour) in enumerate(GATE_COLOURS.items()))
    first, last = (points[0].date or points[0].run_id)[:10], (points[-1].date or points[-1].run_id)[:10]
    shown = f"the newest {len(points)} of {total} runs" if len(points) < total else f"{len(points)} runs"
    title = f"{LABELS[metric]} of the best variant, run by run"
    return (
        f'<svg id="trend" role="img" viewBox="0 0 {width} {height}" font-size="12" '
        f'font-family="system-ui,sans-serif" xmlns="http://www.w3.org/2000/svg">'
        f"<title>{esc(title)}</title>"
        f'<text x="{left + plot_w / 2}" y="18" text-anchor="middle" font-size="14" font-weight="600">'
        f"{esc(title)}</text>"
        f"{ticks}"
        f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + plot_h}" stroke="#59636e"/>'
        f'<line x1="{left}" x2="{left + plot_w}" y1="{top + plot_h}" y2="{top + plot_h}" stroke="#59636e"/>'
        f'<polyline points="{line}" fill="none" stroke="#8a96a3" stroke-width="1.5"/>{dots}{legend}'
        f'<text x="{left}" y="{top + plot_h + 16}">{esc(first)}</text>'
        f'<text x="{left + plot_w}" y="{top + plot_h + 16}" text-anchor="end">{esc(last)}</text>'
        f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">'
        f"runs, oldest to newest ({esc(shown)})</text>"
        f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
        f"{esc(LABELS[metric])}</text>"
        "</svg>")


def runs_page(runs: list[RunSummary], trend: list[RunSummary], *, sort: str, descending: bool,
              metric: str) -> str:
    """The runs page: every run side by side, sorted by ``sort``, and the trend of ``metric``."""
    headers = [*(_header(key, sort, descending, metric) for key in ("run_id", "date")), '<th scope="col">params</th>',
               *(_header(key, sort, descending, metric) for key in ("best", *METRICS, "gate")),
               '<th scope="col">files</th>']
    body = "".join(_row(run) for run in runs) \
        or f'<tr><td colspan="{len(headers)}">No runs under the data root yet.</td></tr>'
    order = "desc" if descending else "asc"
    choices = " ".join(
        f"<strong>{esc(LABELS[m])}</strong>" if m == metric
        else f'<a href="{esc(_query(sort=sort, order=order, metric=m))}">{esc(LABELS[m])}</a>' for m in METRICS)
    return document("clusterflow runs", (
        f"<h1>clusterflow runs</h1><p class=\"note\">{len(runs)} runs on the data root. Scores and inertia are "
        "the best variant's, printed as the demo prints them (scores to 3 decimals, inertia to the integer). "
        "Click a column to sort by it.</p>"
        f'<div class="scroll"><table id="runs"><thead><tr>{"".join(headers)}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
        f'<h2>Trend</h2><nav class="metrics">Plot: {choices}</nav>'
        f"<figure>{trend_svg(trend, metric, sum(r.scores.get(metric) is not None for r in runs))}</figure>"))
