"""Container entrypoint: ``python -m clusterflow_steps.cluster``."""

from clusterflow_steps.cluster.cli import main

if __name__ == "__main__":
    main(prog_name="cluster")
