"""The code of the registered MLflow model (models-from-code, see ``study/deploy/serving.py``).

MLflow copies this file into the logged model and runs it when the model is loaded
(``mlflow.pyfunc.load_model``, ``mlflow models serve``); the model object is built here, never
unpickled. It needs lora-study importable where the model is served.
"""

from mlflow.models import set_model

from study.deploy.serving import LoraTextClassifier

set_model(LoraTextClassifier())
