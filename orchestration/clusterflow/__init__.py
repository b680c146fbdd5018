"""clusterflow orchestration: the pipeline spec and its renderings (local runner, Airflow DAG)."""
