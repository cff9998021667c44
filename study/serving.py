"""The MLflow pyfunc class under its first import path.

Why this module: a model registered by lora-study 0.1 stores the pyfunc's code, which imports
``study.serving.LoraTextClassifier``; those versions must keep loading. The class lives in
:mod:`study.deploy.serving`.
"""

from .deploy.serving import LoraTextClassifier

__all__ = ["LoraTextClassifier"]
