"""digits_kmeans: scikit-learn's K-Means digits demo as container steps, nightly at 22:00.

A thin file on purpose: the Airflow DAG is built by :func:`clusterflow.dag.build_dag` from the
pipeline spec (``clusterflow.spec``), the same spec the local runner renders. Building it does
no work beyond constructing the DAG (no Docker, no Variables, no file access). Airflow's DagBag
parses only files that mention both "airflow" and "dag" (its safe mode): this docstring does.
"""

from __future__ import annotations

from clusterflow.dag import build_dag

dag = build_dag()
