"""Register a copy of a model folder as a new version in a test's own MLflow registry."""

from __future__ import annotations

import shutil
from pathlib import Path


def register_copy(settings, src: Path, dest: Path, model_name: str, mutate=None) -> str:
    """Copy ``src`` to ``dest``, let ``mutate(dest)`` damage or edit it, register it as a new version."""
    import mlflow

    from training import registry

    shutil.copytree(src, dest)
    if mutate:
        mutate(dest)
    registry.configure(settings)
    with mlflow.start_run(experiment_id=registry.experiment_id(f"{model_name}-tests", settings)) as run:
        mlflow.log_artifacts(str(dest), "model")
    return registry.register_run_artifact(model_name, run.info.run_id, "model")
