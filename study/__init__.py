"""Many trials: config → space → tuner → tracking → export.

Entry points: ``python -m study.run`` (run / resume a study), ``python -m study.export``,
``python -m study.predict``, ``python -m study.evaluate``.
"""

__all__ = ["config", "space", "searcher", "tracking", "run", "report", "store", "export", "inference", "serving"]
