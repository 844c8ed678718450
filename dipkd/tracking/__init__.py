"""MLflow tracking: one local SQLite store at the repository root."""
from .mlflow_runs import (artifact_location, ensure_experiment, git_commit, mlflow_vis_backend,
                          open_run, run_tags, tracking_uri)

__all__ = ["artifact_location", "ensure_experiment", "git_commit", "mlflow_vis_backend",
           "open_run", "run_tags", "tracking_uri"]
