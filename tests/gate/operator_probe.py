"""Runs in the Airflow venv (not collected by pytest): launches the DAG's prepare container and
its cache commit container with the real StepOperator (DockerOperator) against the Docker URL in
argv[1], the data root (a volume name or a host path) in argv[2], the step limits and images
(CLUSTERFLOW_DIGESTS...) from the environment. Exit 0 when DockerOperator saw both through to
their end with exit 0 (pulling the image first when the engine lacks it)."""

from __future__ import annotations

import datetime as dt
import sys

from airflow.sdk import DAG

from clusterflow import dag, spec
from clusterflow.operators import StepOperator
from clusterflow.plan import render_plan


class TaskInstance:
    try_number = 1

    def xcom_push(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> None:
    url, source = sys.argv[1], sys.argv[2]
    plan = render_plan({}, "r1", source, dag.plan_images())  # limits, images from the env
    with DAG(spec.DAG_ID, start_date=dt.datetime(2026, 1, 1), schedule=None):
        operator = StepOperator(task_id="prepare", step="prepare", docker_url=url)
    for commit in (False, True):  # the step's container, then its cache commit's
        operator.render(plan, 1, "sha256:" + "a" * 64, commit=commit)
        operator.launch({"ti": TaskInstance()})


if __name__ == "__main__":
    main()
