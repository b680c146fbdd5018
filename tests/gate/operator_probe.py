"""Runs in the Airflow venv (not collected by pytest): launches the DAG's prepare task with the
real StepOperator (DockerOperator) against the Docker URL in argv[1], the data volume in argv[2].
Exit 0 when DockerOperator saw the container through to its end."""

from __future__ import annotations

import datetime as dt
import sys

from airflow.sdk import DAG

from clusterflow import airflow_dag, spec


class TaskInstance:
    try_number = 1

    def xcom_push(self, *args: object, **kwargs: object) -> None:
        pass


def main() -> None:
    url, source = sys.argv[1], sys.argv[2]
    plan = airflow_dag.render_plan({}, "r1", source, "0.1.0", spec.StepLimits(2 << 30, 2.0))
    with DAG(spec.DAG_ID, start_date=dt.datetime(2026, 1, 1), schedule=None):
        operator = airflow_dag.StepOperator(task_id="prepare", step="prepare", docker_url=url)
    for name, value in operator.render(plan, 1, "sha256:" + "a" * 64).items():
        setattr(operator, name, value)
    operator.nano_cpus = plan["limits"]["nano_cpus"]
    operator.launch({"ti": TaskInstance()})


if __name__ == "__main__":
    main()
