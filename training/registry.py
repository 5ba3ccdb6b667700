"""Thin helpers over the MLflow tracking store and model registry, shared by every model.

A registered model version's artifact is a plain folder (ONNX files, tokenizer, label map,
``meta.json``) so that serving needs neither torch nor MLflow's flavours to load it.
Aliases (``champion``, ``challenger``) are used; deprecated stages are not.
"""

from __future__ import annotations

import logging
from pathlib import Path

from training.config import Settings, get_settings

log = logging.getLogger(__name__)

CHAMPION = "champion"
_current_settings: Settings | None = None  # the settings of the last configure() call
CHALLENGER = "challenger"


class ModelNotFoundError(LookupError):
    """A registry URI, alias or local model path does not exist."""


def configure(settings: Settings | None = None) -> str:
    """Point MLflow at the configured tracking store; returns the URI."""
    import mlflow

    global _current_settings
    settings = settings or get_settings()
    _current_settings = settings
    settings.work_dir.mkdir(parents=True, exist_ok=True)
    uri = settings.resolved_tracking_uri()
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    return uri


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
        from training.model_card import model_card

        model_card(model_name, str(version.version), log=True, settings=None if _current_settings is None else _current_settings)
    except Exception as exc:  # noqa: BLE001 - a card failure must not lose the registered model
        log.warning("model card for %s v%s not written: %s", model_name, version.version, exc)
    return str(version.version)


def get_alias_version(model_name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def set_alias(model_name: str, alias: str, version: str, *, actor: str | None = None, reason: str | None = None,
              action: str = "model.alias.set", details: dict | None = None,
              settings: Settings | None = None) -> int:
    """Point ``alias`` at ``version`` and write the change to the audit log; returns the audit entry id.

    The audit entry and the alias move succeed or fail together: the entry is appended in a
    transaction that commits only after the registry accepted the alias.
    """
    from mlflow import MlflowClient

    from serving.audit import record
    from serving.db.session import session_scope

    settings = settings or _current_settings or get_settings()
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


def resolve_model_dir(uri: str, settings: Settings | None = None) -> tuple[Path, str | None]:
    """Local folder of a model given ``models:/name@alias``, ``models:/name/3`` or a path.

    Returns (folder, registry version or None for a plain path).  Raises ModelNotFoundError
    naming what is missing.
    """
    settings = settings or get_settings()
    if not uri.startswith("models:/"):
        path = Path(uri)
        if not path.is_dir():
            raise ModelNotFoundError(f"model folder not found: {path}")
        return path, None

    import mlflow
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    configure(settings)
    spec = uri[len("models:/") :]
    client = MlflowClient()
    try:
        if "@" in spec:
            name, alias = spec.split("@", 1)
            mv = client.get_model_version_by_alias(name, alias)
        else:
            name, version = spec.rsplit("/", 1)
            mv = client.get_model_version(name, version)
    except MlflowException as exc:
        raise ModelNotFoundError(f"registry has no {uri}: {exc.message}") from exc
    dest = settings.work_dir / "model-cache" / name / str(mv.version)
    try:
        local = mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dest))
    except Exception as exc:  # noqa: BLE001 - any storage failure means the artifact is unusable
        raise ModelNotFoundError(f"artifacts of {uri} (version {mv.version}) cannot be fetched: {exc}") from exc
    return Path(local), str(mv.version)
