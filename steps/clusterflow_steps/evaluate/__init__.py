"""The evaluate step: score every cluster variant of a run, pick the best, apply the quality gate.

``metrics`` scores and ranks variants, ``gate`` checks thresholds (both functional cores on
arrays and dicts), ``projection`` computes the data of the report's PCA-reduced K-means figure
(so the report image needs no scikit-learn); ``cli`` is the click shell.
"""
