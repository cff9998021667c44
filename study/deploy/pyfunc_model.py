"""The code of the registered MLflow model (models-from-code, see ``study.deploy.logged_model``).

MLflow copies this file into the logged model and runs it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``); the model object is built here, never
unpickled. ``study.deploy.serving`` and the ``trainables`` it uses come from the model's own
``code/`` directory, which MLflow puts first on ``sys.path``: lora-study need not be installed.
"""

from mlflow.models import set_model

from study.deploy.serving import LoraTextClassifier

set_model(LoraTextClassifier())
