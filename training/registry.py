"""Writing to the MLflow tracking store and model registry (offline work), shared by every model.

Read-only look-ups (``resolve_model_dir``, ``get_alias_version``, ``configure``) live in
``serving.registry`` and are re-exported here.  Registering a version writes its model card; moving an
alias writes an audit entry in the same transaction.  Aliases (``champion``, ``challenger``) are used;
deprecated stages are not.
"""

from __future__ import annotations

import logging

from serving.audit import record
from serving.db.session import session_scope
from serving.registry import (
    CHALLENGER,
    CHAMPION,
    ModelNotFoundError,
    configure,
    current_settings,
    get_alias_version,
    parse_alias_uri,
    resolve_model_dir,
)
from serving.settings import Settings, get_settings
from training.model_card import model_card

__all__ = ["CHALLENGER", "CHAMPION", "ModelNotFoundError", "configure", "current_settings", "default_actor",
           "experiment_id", "get_alias_version", "parse_alias_uri", "register_run_artifact", "resolve_model_dir",
           "set_alias"]

log = logging.getLogger(__name__)


def experiment_id(name: str, settings: Settings | None = None) -> str:
    """Create the experiment on first use, with its artifacts under the configured root."""
    import mlflow

    settings = settings or get_settings()
    configure(settings)
    found = mlflow.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    if settings.mlflow_artifact_root is None and settings.resolved_tracking_uri().startswith(("http://", "https://")):
        return mlflow.create_experiment(name)  # a tracking server decides (e.g. mlflow-artifacts:/ it proxies)
    root = settings.resolved_artifact_root().rstrip("/")
    return mlflow.create_experiment(name, artifact_location=f"{root}/{name}")


def register_run_artifact(model_name: str, run_id: str, artifact_path: str, tags: dict | None = None) -> str:
    """Register ``<run artifacts>/<artifact_path>`` as a new version of ``model_name``."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    client = MlflowClient()
    try:
        client.get_registered_model(model_name)
    except MlflowException:
        client.create_registered_model(model_name)
    run = client.get_run(run_id)
    source = f"{run.info.artifact_uri.rstrip('/')}/{artifact_path}"
    version = client.create_model_version(
        model_name, source=source, run_id=run_id, tags={k: str(v) for k, v in (tags or {}).items()}
    )
    try:  # every registered version gets its model card, generated from the run and logged with it
        model_card(model_name, str(version.version), log=True, settings=current_settings())
    except Exception as exc:  # noqa: BLE001 - a card failure must not lose the registered model
        log.warning("model card for %s v%s not written: %s", model_name, version.version, exc)
    return str(version.version)


def set_alias(model_name: str, alias: str, version: str, *, actor: str | None = None, reason: str | None = None,
              action: str = "model.alias.set", details: dict | None = None,
              settings: Settings | None = None) -> int:
    """Point ``alias`` at ``version`` and write the change to the audit log; returns the audit entry id.

    The audit entry and the alias move succeed or fail together: the entry is appended in a
    transaction that commits only after the registry accepted the alias.
    """
    from mlflow import MlflowClient

    settings = settings or current_settings()
    client = MlflowClient()
    before = get_alias_version(model_name, alias)
    with session_scope(settings) as session:
        entry = record(
            session, actor=actor or default_actor(), action=action, subject=f"model:{model_name}@{alias}",
            before={"version": before},
            after={"version": str(version), "reason": reason, **(details or {})},
        )
        client.set_registered_model_alias(model_name, alias, str(version))
    return entry


def default_actor() -> str:
    import getpass
    import os

    try:
        return os.environ.get("RXT_ACTOR") or getpass.getuser()
    except Exception:  # noqa: BLE001 - no login name in some containers
        return "unknown"
