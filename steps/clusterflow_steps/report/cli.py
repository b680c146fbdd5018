"""The report step's click shell: read the run, write ``report/report.html`` atomically."""

from __future__ import annotations

import click

from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.contract import RunLayout, step_output
from clusterflow_steps.report.build import build_report

REPORT = "report.html"


@step_command("Write one self-contained HTML report of a run: the demo's benchmark table, its "
              "PCA-reduced K-means figure, cluster centers, a cluster x label heat map and the lineage. "
              "Runs after a failed quality gate too, and shows the failure.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_envvar=True,
              help="Seed of the PCA/KMeans figure's fit and of its samples of large data.")
@run_options
def main(layout: RunLayout, seed: int) -> None:
    report = build_report(layout, seed)
    with step_output(layout, "report", {"seed": seed}) as run:
        path = run.out / REPORT
        path.write_text(report.html, encoding="utf-8")
        run.inputs.update(report.inputs)
        run.results.update(report.results)
    final = layout.step_dir("report") / REPORT
    gate = report.results["quality_gate_failures"]
    click.echo(f"report: wrote {final} ({report.results['page_bytes']:,} bytes; best variant "
               f"{report.results['best']})")
    if not report.results["quality_gate_passed"]:
        click.echo(f"report: documents that the quality gate failed: {'; '.join(gate) or 'see evaluate'}")
