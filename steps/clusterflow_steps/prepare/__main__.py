"""Container entrypoint: ``python -m clusterflow_steps.prepare``."""

from clusterflow_steps.prepare.cli import main

if __name__ == "__main__":
    main(prog_name="prepare")
