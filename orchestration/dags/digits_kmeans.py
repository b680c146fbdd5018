"""digits_kmeans: scikit-learn's K-Means digits demo as container steps, nightly at 22:00.

A thin file on purpose: the DAG is built by :func:`clusterflow.airflow_dag.build_dag` from the
pipeline spec (``clusterflow.spec``), the same spec the local runner renders. Building it does
no work beyond constructing the DAG (no Docker, no Variables, no file access).
"""

from __future__ import annotations

from clusterflow.airflow_dag import build_dag

dag = build_dag()
