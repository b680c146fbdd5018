"""Container entrypoint: ``python -m clusterflow_steps.assign``."""

from clusterflow_steps.assign.cli import main

if __name__ == "__main__":
    main(prog_name="assign")
