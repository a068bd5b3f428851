"""Loads a checkpoint's LoggedModel for `mlflow models serve -m models:/<model_id>`.

Shipped in each checkpoint model as ``code/hype_checkpoint.py`` (MLflow puts ``code/`` on
sys.path and calls ``_load_pyfunc`` with the model's folder). The model holds only its MLmodel
and this file: its ``hype`` flavor names the weights (the run's ``hype_checkpoints/<name>``)
and the run's code (``hype_code.zip``: the ``hype`` package and the final model's pyfunc code),
both fetched through the tracking store the server was started against. So a checkpoint is
servable without storing its weights twice, and serves with the code of the run that made it.

Nothing here may import hype or tracker: they come from the zip.
"""

from __future__ import annotations

import importlib
import os
import sys
import tempfile
from types import SimpleNamespace

FLAVOR = "hype"  # the MLmodel flavor with the pointers: {"weights": runs:/..., "code": runs:/...}
SERVED_MODULE = "hype_served_model"  # tracker/serving/pyfunc_model.py, under this name in the zip
_BAR = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


class CheckpointModel:
    """What pyfunc calls: predict(table) -> table, as the final model answers."""

    def __init__(self, model):
        self._model = model

    def predict(self, model_input, params=None):
        return self._model.predict(None, model_input, params)


def _load_pyfunc(path: str) -> CheckpointModel:
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    conf = Model.load(os.path.join(path, "MLmodel")).flavors[FLAVOR]
    work = tempfile.mkdtemp(prefix="hype-checkpoint-")
    bar = os.environ.get(_BAR)
    os.environ[_BAR] = "false"  # two single-file downloads: no bars in the server's log
    try:
        code = download_artifacts(conf["code"], dst_path=os.path.join(work, "code"))
        weights = download_artifacts(conf["weights"], dst_path=os.path.join(work, "weights"))
    finally:
        if bar is None:
            os.environ.pop(_BAR)
        else:
            os.environ[_BAR] = bar
    sys.path.insert(0, code)  # a zip: Python imports hype and the model code straight from it
    served = importlib.import_module(SERVED_MODULE)
    model = served.HypeEmbedding()
    model.load_context(SimpleNamespace(artifacts={"embedding": weights}))
    return CheckpointModel(model)
