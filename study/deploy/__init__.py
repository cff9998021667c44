"""From a finished study to a model others use.

``export``: the best (or a chosen) adapter as a directory (``python -m study.export``);
``registry``: logged and registered in MLflow with the ``best`` alias; ``logged_model``: what travels
with the logged model (its code, requirements, signature); ``serving``/``pyfunc_model``: the MLflow
pyfunc that ``mlflow models serve`` runs; ``predict``/``evaluate``: the command lines
(``python -m study.predict``, ``python -m study.evaluate``).
"""
