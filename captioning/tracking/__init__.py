"""MLflow bookkeeping, one job per module: `store` (where runs go), `identity` (names, commit, data
hashes), `environment` (package versions, CPU), `runs` (what train and evaluate record, and how
their runs link), `registry` (model versions and the champion). The stages use these four."""

from captioning.tracking.runs import epoch_logger, log_evaluation, log_scst, log_training, train_run

__all__ = ["epoch_logger", "log_evaluation", "log_scst", "log_training", "train_run"]
