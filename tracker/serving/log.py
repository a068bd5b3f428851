"""The final embedding as an MLflow pyfunc model (logged once per run, with explicit requirements)."""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path

from tracker import layout
from tracker.layout import PROJECT_ROOT

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # models-from-code: no pickled classes
CODE_PACKAGE = PROJECT_ROOT / "hype"  # what the model code imports, shipped with every hype model


def pip_requirements() -> list[str]:
    """Pinned from requirements.txt: what the served model imports."""
    wanted = ("torch", "numpy", "pandas", "mlflow")
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.split("==")[0].strip() in wanted]


def _model_args(embedding: Path) -> dict:
    """What every hype pyfunc model is made of: the model code, one embedding, hype's package."""
    return {"python_model": str(MODEL_CODE), "artifacts": {"embedding": str(embedding)},
            "code_paths": [str(CODE_PACKAGE)], "pip_requirements": pip_requirements()}


class _NoSignatureNotice(logging.Filter):
    """Drops MLflow's one warning that the model has no signature. It has none on purpose: it
    takes two tables, (u, v) or (node, k), and with a signature the scoring server would check
    and convert every request against one schema before the model's own checks name what is
    wrong (tests/test_serving.py holds the answers they give)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Failed to infer model signature")


@contextmanager
def _without_signature_notice():
    logger = logging.getLogger("mlflow.pyfunc")  # where save_model logs it
    quiet = _NoSignatureNotice()
    logger.addFilter(quiet)
    try:
        yield
    finally:
        logger.removeFilter(quiet)


@contextmanager
def _without_run_links():
    """log_pyfunc's end_run is not the end of the run (finish closes it right after), so it must
    not print MLflow's "View run ... at:" lines too: they come once, when the run is closed."""
    key = "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"
    before = os.environ.get(key)
    os.environ[key] = "true"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = before


def log_pyfunc(client, run_id: str, final_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    with _without_run_links(), mlflow.start_run(run_id=run_id, log_system_metrics=False), \
            _without_signature_notice():
        mlflow.pyfunc.log_model(name=layout.PYFUNC_FOLDER, **_model_args(final_path))
    # start_run/end_run marked the run FINISHED; the caller closes it properly right after.


def save_pyfunc(path: Path, checkpoint: Path) -> None:
    """The same model, saved to a local folder (any checkpoint, for ``cli.py serve``)."""
    import mlflow

    with _without_signature_notice():
        mlflow.pyfunc.save_model(str(path), **_model_args(checkpoint))


def remove_pyfunc(client, run_id: str) -> int:
    """Delete the final-model LoggedModels this run logged before (a FINISHED run continued);
    returns how many. Checkpoints and other runs' models are not touched."""
    run = client.get_run(run_id)
    models = client.search_logged_models(
        experiment_ids=[run.info.experiment_id],
        filter_string=f"source_run_id = '{run_id}' AND name = '{layout.PYFUNC_FOLDER}'")
    for m in models:
        client.delete_logged_model(m.model_id)
    return len(models)
