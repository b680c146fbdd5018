"""The prepare step: load or generate a dataset, validate it, write features (and labels).

``datasets`` is the functional core (sources in, validated arrays out), ``limits`` bounds what a
user's file may make it allocate, and ``cli`` is the click shell.
"""
