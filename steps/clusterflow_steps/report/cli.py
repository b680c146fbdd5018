"""The report step's click shell: read the run, write the report (``contract.REPORT``) atomically."""

from __future__ import annotations

import click

from clusterflow_steps.artifacts import StepRun
from clusterflow_steps.cache import run_step
from clusterflow_steps.cli import run_options, step_command
from clusterflow_steps.contract import REPORT, RunLayout
from clusterflow_steps.report.build import render_run
from clusterflow_steps.report.inputs import load_run


@step_command("Write one self-contained HTML report of a run: the demo's benchmark table, its "
              "PCA-reduced K-means figure, cluster centers, a cluster x label heat map and the lineage. "
              "Runs after a failed quality gate too, and shows the failure.")
@run_options
def main(layout: RunLayout, use_cache: bool) -> None:
    run_inputs = load_run(layout)  # reads and checks the small files; the figures are the work

    def work(run: StepRun) -> None:
        report = render_run(run_inputs)
        (run.out / REPORT.name).write_text(report.html, encoding="utf-8")
        run.results.update(report.results)

    # The page shows every upstream manifest's run id and timings: key on their exact bytes.
    results = run_step(layout, "report", {}, dict(run_inputs.read), work, use_cache=use_cache,
                       manifests_by_content=False).results
    final = layout.path(REPORT)
    gate = results["quality_gate_failures"]
    click.echo(f"report: wrote {final} ({results['page_bytes']:,} bytes; best variant {results['best']})")
    if not results["quality_gate_passed"]:
        click.echo(f"report: documents that the quality gate failed: {'; '.join(gate) or 'see evaluate'}")
