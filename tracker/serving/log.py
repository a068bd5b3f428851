"""The final embedding as an MLflow pyfunc model (logged once per run, with explicit requirements)."""

from __future__ import annotations

from pathlib import Path

from tracker import layout
from tracker.layout import PROJECT_ROOT

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")  # models-from-code: no pickled classes


def pip_requirements() -> list[str]:
    """Pinned from requirements.txt: what the served model imports."""
    wanted = ("torch", "numpy", "pandas", "mlflow")
    lines = (PROJECT_ROOT / "requirements.txt").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.split("==")[0].strip() in wanted]


def _model_args(embedding: Path) -> dict:
    """What every hype pyfunc model is made of: the model code, one embedding, hype's package."""
    return {"python_model": str(MODEL_CODE), "artifacts": {"embedding": str(embedding)},
            "code_paths": [str(PROJECT_ROOT / "hype")], "pip_requirements": pip_requirements()}


def log_pyfunc(client, run_id: str, final_path: Path) -> None:
    import mlflow

    mlflow.set_tracking_uri(client.tracking_uri)
    with mlflow.start_run(run_id=run_id, log_system_metrics=False):
        mlflow.pyfunc.log_model(name=layout.PYFUNC_FOLDER, **_model_args(final_path))
    # start_run/end_run marked the run FINISHED; the caller closes it properly right after.


def save_pyfunc(path: Path, checkpoint: Path) -> None:
    """The same model, saved to a local folder (any checkpoint, for ``cli.py serve``)."""
    import mlflow

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
