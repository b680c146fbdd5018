"""The clusterflow report in the Airflow UI: an Airflow 3 plugin serving the data root read-only.

``files`` finds and reads a run's files safely, ``runs`` summarises every run for comparison,
``pages`` renders the runs page (stdlib only, unit-tested without Airflow); ``app`` is the thin
FastAPI shell and ``plugin`` registers it with Airflow's API server and UI.
"""
