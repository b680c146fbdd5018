"""The cluster step: fit one K-Means variant on the prepared features, as the digits demo does.

``model`` is the functional core (arrays in, a fitted pipeline and its outputs out); ``cli`` is the
click shell.
"""
