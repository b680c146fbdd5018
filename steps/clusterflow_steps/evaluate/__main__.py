"""Container entrypoint: ``python -m clusterflow_steps.evaluate``."""

from clusterflow_steps.evaluate.cli import main

if __name__ == "__main__":
    main(prog_name="evaluate")
