"""What the terminal shows while a study runs.

``logs``: the study's own warnings on stderr, one line each, libraries to ``study.log``;
``progress``: one line per trial event; ``ctrl_c``: the first Ctrl-C at any moment stops the
study, resumable; ``labels``: the short names of trials and their values that
the console, MLflow and the report share.
"""
