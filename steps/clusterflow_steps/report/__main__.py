"""Container entrypoint: ``python -m clusterflow_steps.report``."""

from clusterflow_steps.report.cli import main

if __name__ == "__main__":
    main(prog_name="report")
