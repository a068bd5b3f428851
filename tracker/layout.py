"""Names shared by the trainer, resume and cleanup: artifact folders and run tags."""

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
TAG_RETENTION_ERROR = "hype.retention_error"  # why retention stopped deleting in this run
