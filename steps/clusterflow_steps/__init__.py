"""clusterflow step images: prepare, cluster, evaluate, report.

Each step is a subpackage with a functional core (plain functions on numpy arrays) and a thin
click shell (``cli.py``); ``contract`` holds the artifact contract they all share.
"""
