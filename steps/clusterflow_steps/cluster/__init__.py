"""The cluster step: fit one variant on the prepared features, K-Means as the digits demo does or
another of scikit-learn's clusterers (``--algorithm``), always with a StandardScaler in front.

``model`` is the functional core (arrays in, a fitted pipeline and its outputs out), ``algorithms``
the other clusterers' settings, estimators and refusals, ``kdistance`` DBSCAN's eps from the
k-distance curve; ``cli`` is the click shell.
"""
