"""Where things live, shared by the trainer, resume and cleanup: paths, artifact folders, tags."""

from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DB = PROJECT_ROOT / "mlflow.db"
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # what kind of experiment, in MLflow 3's words
EXPERIMENT_KIND = "custom_model_development"  # model training, not "genai_development"
# MLflow 3.17's UI ignores that tag when it picks a view: it follows ?workflowType= in the URL,
# else the sidebar switch a browser saved (localStorage "mlflow.workflowType_v1"), else GenAI.
# So every UI link hype prints carries this.
UI_WORKFLOW = "workflowType=machine_learning"

# Our checkpoint artifact folder. Not "checkpoints/": mlflow.pytorch.autolog writes there.
CHECKPOINT_FOLDER = "hype_checkpoints"
FINAL_FOLDER = "hype_model"  # <model>.pth, the final embedding; never deleted
PYFUNC_FOLDER = "model"  # the MLflow model (pyfunc) of the final embedding
PLOT_FOLDER = "plots"

TAG_MODEL_NAME = "hype.model_name"
TAG_CHECKPOINT_DIR = "hype.checkpoint_dir"  # local folder of this run's checkpoints
TAG_BEST_EPOCH = "hype.best_epoch"  # protected from retention and cleanup
TAG_BEST_VALUE = "hype.best_value"
TAG_MONITOR = "hype.monitor"
TAG_RETAINED = "hype.retained_checkpoints"  # how many epoch checkpoints the run holds now
TAG_RETAINED_EPOCHS = "hype.retained_epochs"
TAG_STOP_REASON = "hype.stop_reason"
TAG_FINAL_EPOCH = "hype.final_model_epoch"  # which epoch's weights the final model holds
TAG_INIT_FROM = "hype.init_from"  # warm start: RUN_ID:EPOCH or a checkpoint file, as given
TAG_INIT_FROM_RUN = "hype.init_from_run"  # the run it came from, when it came from one
TAG_NOTE = "mlflow.note.content"  # the run's description: markdown the UI shows on the run page
TAG_RETENTION_ERROR = "hype.retention_error"  # why retention stopped deleting in this run
# The params as resumes changed them, JSON {param: value} (params are immutable): what the next
# resume starts from. The hype.resume.<n> tags say the same in words, one per resume.
TAG_RESUMED_PARAMS = "hype.resumed_params"


def ui_link(base: str, experiment_id: str, run_id: str | None = None) -> str:
    """The model-training view of an experiment's runs (or of one run) in the MLflow UI at base."""
    run = f"/{run_id}" if run_id else ""
    return f"{base.rstrip('/')}/#/experiments/{experiment_id}/runs{run}?{UI_WORKFLOW}"
