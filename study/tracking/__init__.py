"""What MLflow shows, and the study's own summary.

``server``: the tracking store (checked before Ray starts, short HTTP timeouts); ``trust``: where
the user's credentials may go; ``runs``: the parent run and one child run per trial; ``tracker``:
the Tune callback that writes them through ``queue`` (ordered, outage-safe); ``summary``: the
study's result (``summary.json``, the closing table).
"""
