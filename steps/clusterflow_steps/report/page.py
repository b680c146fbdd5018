"""The report page: one self-contained HTML document (inline CSS, figures as ``data:`` URIs).

Every string that comes from a run's artifacts (params, names, manifests) goes through
:func:`esc`; nothing on the page links or loads anything outside the file.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from typing import Any

from clusterflow_steps.contract import ESTIMATORS, KMEANS_FAMILY, NOISE
from clusterflow_steps.launch import LAPTOP_NOTE, manifest_line
from clusterflow_steps.params import INITS
from clusterflow_steps.report.figures import Figure
from clusterflow_steps.report.formats import COLUMN_TITLES, COLUMNS, NULL, esc, format_metric
from clusterflow_steps.report.inputs import RunInputs

CSS = """
*{box-sizing:border-box}
body{margin:0;font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1d232a;background:#f4f5f7}
main{max-width:1000px;margin:0 auto;padding:1rem 1.25rem 3rem;background:#fff}
h1{font-size:1.5rem;margin:.5rem 0}
h2{font-size:1.2rem;margin:2rem 0 .5rem;border-bottom:1px solid #dde1e6;padding-bottom:.2rem}
h3{font-size:1rem;margin:1rem 0 .3rem}
img{max-width:100%;height:auto;display:block;margin:0 auto}
figure{margin:1rem 0}
figcaption,.note{color:#4a5560;font-size:.9rem}
.facts{display:grid;grid-template-columns:max-content minmax(0,1fr);gap:.15rem 1rem;margin:.5rem 0}
.facts dt{font-weight:600}.facts dd{margin:0;overflow-wrap:anywhere}
.banner{padding:.75rem 1rem;border-radius:6px;margin:1rem 0;font-weight:600}
.banner.failed{background:#fde8e8;border:2px solid #c81e1e;color:#8a1010}
.banner.passed{background:#e7f6ec;border:1px solid #2f855a;color:#1f5e3d}
.scroll{overflow-x:auto}
table{border-collapse:collapse;width:100%;font-size:.92rem}
th,td{padding:.3rem .5rem;border-bottom:1px solid #e3e6ea;text-align:left;vertical-align:top}
table.metrics td.num,table.metrics th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
tr.best{background:#fff4c2;font-weight:600}
.tag{display:inline-block;margin-left:.4rem;padding:0 .4rem;border-radius:3px;background:#b7791f;color:#fff;font-size:.75rem}
details{margin:.5rem 0}
summary{cursor:pointer;font-weight:600}
details details{border-left:3px solid #dde1e6;padding-left:.75rem}
code,pre{font:12.5px/1.4 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;overflow-wrap:anywhere;word-break:break-all}
pre{white-space:pre-wrap;background:#f6f8fa;padding:.5rem;border-radius:4px;margin:.3rem 0}
table.files{table-layout:fixed}table.files td:nth-child(2){width:6rem;text-align:right}
"""  # noqa: E501 (one rule a line, as the page carries them)


def _data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _figure(figure: Figure, figure_id: str) -> str:
    return (f'<figure id="{figure_id}"><img src="{_data_uri(figure.png)}" alt="{esc(figure.alt)}">'
            f"<figcaption>{esc(figure.caption)}</figcaption></figure>")


def _facts(pairs: Iterable[tuple[str, str]]) -> str:
    """A definition list; values are already HTML."""
    return '<dl class="facts">' + "".join(f"<dt>{esc(k)}</dt><dd>{v}</dd>" for k, v in pairs) + "</dl>"


def _gate_banner(run: RunInputs) -> str:
    thresholds = run.gate.get("thresholds") or {}
    if run.gate_failed:
        reasons = run.gate_failures or ["no reason recorded (see the evaluate manifest in the lineage)"]
        return (f'<div class="banner failed" role="alert" id="quality-gate">quality gate failed: '
                f'{esc("; ".join(reasons))}</div>')
    if isinstance(thresholds, dict) and any(v is not None for v in thresholds.values()):
        return '<div class="banner passed" id="quality-gate">quality gate passed</div>'
    return ""


def _gate_status(run: RunInputs) -> str:
    thresholds = run.gate.get("thresholds") or {}
    set_ = {k: v for k, v in thresholds.items() if v is not None} if isinstance(thresholds, dict) else {}
    limits = ", ".join(f"{k} {v}" for k, v in sorted(set_.items()))
    if run.gate_failed:
        status = '<strong style="color:#c81e1e">failed</strong>'
    elif set_:
        status = "passed"
    else:
        status = "no thresholds set"
    return status + (f" ({esc(limits)})" if limits else "")


def metrics_table(run: RunInputs) -> str:
    head = "".join(f'<th class="num" scope="col" title="{esc(COLUMN_TITLES[key])}">{esc(name)}</th>'
                   for name, key, _ in COLUMNS)
    rows = []
    for variant in run.ranked_variants():
        values = run.variants[variant]
        best = variant == run.best
        cells = "".join(f'<td class="num" data-metric="{key}">{esc(format_metric(values.get(key), spec))}</td>'
                        for _, key, spec in COLUMNS)
        tag = '<span class="tag">best</span>' if best else ""
        row_class = ' class="best"' if best else ""
        rows.append(f'<tr{row_class} data-variant="{esc(variant)}">'
                    f'<th scope="row">{esc(variant)}{tag}</th>{cells}</tr>')
    ranked_by = run.metrics.get("ranked_by")
    note = (f"Rows in ranking order: the best variant first, then by {esc(ranked_by)}"
            if ranked_by else "Rows: the best variant first, then by name")
    note += (f". Formatted as the demo prints its benchmark (time in seconds to 3 decimals, inertia to the "
             f"integer, scores to 3 decimals); {NULL} marks a score that needs true labels the data do not have"
             + (", or that is undefined (below)." if run.undefined else "."))
    # named by their init (the demo's table), not by algorithm and k (a sweep)
    by_init = set(run.variants) <= set(INITS) and all(_algorithm(run, v) in KMEANS_FAMILY for v in run.variants)
    return (f'<div class="scroll"><table class="metrics" id="metrics"><thead><tr><th scope="col">'
            f'{"init" if by_init else "variant"}</th>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'
            f'</div><p class="note">{note}</p>{_noise_notes(run)}')


def _algorithm(run: RunInputs, variant: str) -> str:
    results = run.manifests.get(f"cluster/{variant}", {}).get("results")
    algorithm = results.get("algorithm") if isinstance(results, dict) else None
    return algorithm if algorithm in ESTIMATORS else KMEANS_FAMILY[0]


def _noise_notes(run: RunInputs) -> str:
    """The noise points of each variant that has any, how the scores treat them, and why scores are null."""
    parts = []
    noisy = {v: n for v, n in run.n_noise.items() if n}
    if noisy:
        counts = "; ".join(f"{v}: {n:,}" for v, n in sorted(noisy.items()))
        by_treatment: dict[str, list[str]] = {}
        for metric, how in run.noise_treatment.items():
            by_treatment.setdefault(how, []).append(metric)
        how = "; ".join(f"{', '.join(metrics)}: {text}" for text, metrics in by_treatment.items())
        parts.append(f'<p class="note" id="noise">Noise points (label {NOISE}, in no cluster): {esc(counts)}. '
                     f"{esc(how)}</p>")
    undefined = run.undefined
    if undefined:
        reasons = "; ".join(f"{v} {m}: {r}" for v, found in sorted(undefined.items()) for m, r in found.items())
        parts.append(f'<p class="note" id="undefined">Undefined scores: {esc(reasons)}.</p>')
    return "".join(parts)


def _files_table(files: Any) -> str:
    if not isinstance(files, dict) or not files:
        return '<p class="note">none</p>'
    rows = "".join(
        f"<tr><td><code>{esc(path)}</code></td><td>{esc(info.get('bytes', '') if isinstance(info, dict) else '')}"
        f"</td><td><code>{esc(info.get('sha256', '') if isinstance(info, dict) else info)}</code></td></tr>"
        for path, info in sorted(files.items()))
    return ('<div class="scroll"><table class="files"><thead><tr><th>path</th><th>bytes</th><th>sha256</th>'
            f"</tr></thead><tbody>{rows}</tbody></table></div>")


def _manifest_section(key: str, manifest: dict[str, Any]) -> str:
    image = manifest["image"] if isinstance(manifest.get("image"), dict) else {}
    packages = manifest["packages"] if isinstance(manifest.get("packages"), dict) else {}
    status = manifest.get("exit_status")
    facts = _facts([
        ("step", f"<code>{esc(manifest.get('step'))}</code>"
                 + (f" variant <code>{esc(manifest.get('variant'))}</code>" if manifest.get("variant") else "")),
        ("run id", f"<code>{esc(manifest.get('run_id'))}</code>"),
        ("image", f"<code>{esc(image.get('name') or NULL)}</code>"),
        ("image digest", f"<code>{esc(image.get('digest') or NULL)}</code>"),
        ("python", esc(manifest.get("python", NULL))),
        ("packages", esc(", ".join(f"{k} {v}" for k, v in sorted(packages.items())) or NULL)),
        ("started", esc(manifest.get("started_at", NULL))),
        ("finished", esc(manifest.get("finished_at", NULL))),
        ("duration", esc(f"{manifest.get('duration_seconds', NULL)} s")),
        ("exit status", esc(status)),
        ("schema", esc(manifest.get("schema", NULL))),
    ])
    params = json.dumps(manifest.get("params", {}), indent=2, sort_keys=True, default=str)
    results = json.dumps(manifest.get("results", {}), indent=2, sort_keys=True, default=str)
    line = manifest_line(manifest)
    rerun = (f'<pre class="rerun">{esc(line)}</pre>' if line
             else '<p class="note rerun">not recorded (the step\'s manifest lists no arguments)</p>')
    return (f'<details open><summary>{esc(key)} <span class="note">(exit {esc(status)})</span></summary>{facts}'
            f"<h3>re-run it</h3>{rerun}"
            f"<h3>params</h3><pre>{esc(params)}</pre>"
            f"<h3>results</h3><pre>{esc(results)}</pre>"
            f"<h3>inputs</h3>{_files_table(manifest.get('inputs'))}"
            f"<h3>outputs</h3>{_files_table(manifest.get('outputs'))}</details>")


def lineage(run: RunInputs) -> str:
    order = ["prepare", *sorted(k for k in run.manifests if k.startswith("cluster/")), "evaluate"]
    sections = "".join(_manifest_section(key, run.manifests[key]) for key in order if key in run.manifests)
    return (f'<details id="lineage"><summary>Lineage: params, images, versions and file digests of every step '
            f'of run {esc(run.run_id)}</summary><p class="note">Each step\'s docker run line re-runs it. '
            f"{esc(LAPTOP_NOTE)}</p>{sections}</details>")


def render(run: RunInputs, *, generated_at: str, decision: Figure | None, decision_note: str,
           centers: Figure | None, centers_note: str, heatmap: Figure | None, heatmap_note: str,
           k_distance: Figure | None, k_curves: Figure | None, report_image: str | None) -> str:
    """The whole page as one string."""
    n, d = run.features.shape
    evaluated = run.manifests["evaluate"].get("finished_at")
    n_noise = run.n_noise.get(run.best, 0)
    noise = f", {n_noise:,} noise points" if n_noise else ""
    estimator = ESTIMATORS[run.best_algorithm]
    title = "K-means" if run.best_algorithm in KMEANS_FAMILY else estimator
    header = _facts([
        ("run id", f"<code>{esc(run.run_id)}</code>"),
        ("generated", esc(generated_at) + (f" (evaluated {esc(evaluated)})" if evaluated else "")),
        ("dataset", f"<code>{esc(run.dataset or NULL)}</code>, {n:,} samples × {d:,} features, "
                    + ("with true labels" if run.true_labels is not None else "without true labels")),
        ("best variant", f'<span class="tag" style="margin-left:0">{esc(run.best)}</span> '
                         f"({run.n_clusters} clusters{noise}; ranked by {esc(run.metrics.get('ranked_by') or NULL)})"),
        ("quality gate", _gate_status(run)),
    ])

    def section(title: str, section_id: str, figure: Figure | None, note: str) -> str:
        body = (_figure(figure, f"{section_id}-figure") if figure
                else f'<p class="note" id="{section_id}-note">{esc(note)}</p>')
        return f'<section id="{section_id}"><h2>{esc(title)}</h2>{body}</section>'

    footer = f"Generated by the clusterflow report step{f' ({esc(report_image)})' if report_image else ''}."
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>clusterflow report: {esc(run.run_id)}</title><style>{CSS}</style></head><body><main>"
        f"<header><h1>{esc(title)} clustering report: run {esc(run.run_id)}</h1>{header}</header>"
        f"{_gate_banner(run)}"
        f'<section id="benchmark"><h2>Benchmark</h2>{metrics_table(run)}</section>'
        + (section("Choosing k", "k-curves", k_curves, "") if k_curves else "")
        + section("K-means on PCA-reduced data", "decision-regions", decision, decision_note)
        + section("Cluster centers", "centers", centers, centers_note)
        + section("Clusters and true labels", "contingency", heatmap, heatmap_note)
        + (section("DBSCAN's k-distance curve", "k-distance", k_distance, "") if k_distance else "")
        + f'<section><h2>Lineage</h2>{lineage(run)}</section>'
        f'<footer><p class="note">{footer}</p></footer></main></body></html>\n'
    )
