"""Read-only access to the MLflow model registry: what the service needs to find a model folder.

- ``configure(settings)`` points MLflow at the configured tracking store.
- ``resolve_model_dir(uri, settings)`` turns ``models:/name@alias``, ``models:/name/3`` or a plain folder
  into a local folder (downloaded into ``<work_dir>/model-cache``) and the registry version.
- ``get_alias_version(name, alias)`` is what the reload poller asks.

Writing to the registry (registering versions, moving aliases with their audit entries) is offline work
and lives in ``training.registry``.  A registered version's artifact is a plain folder (ONNX files,
tokenizer, label map, ``meta.json``), so the service needs neither torch nor MLflow's flavours to load it.
"""

from __future__ import annotations

from pathlib import Path

from serving.settings import Settings, get_settings

CHAMPION = "champion"
CHALLENGER = "challenger"

_current_settings: Settings | None = None  # the settings of the last configure() call


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


def current_settings() -> Settings:
    """The settings of the last ``configure()`` call (else the environment's)."""
    return _current_settings or get_settings()


def parse_alias_uri(uri: str) -> tuple[str, str] | None:
    """``models:/name@alias`` -> (name, alias); anything else (a path, a fixed version) -> None."""
    if not uri.startswith("models:/"):
        return None
    spec = uri[len("models:/") :]
    if "@" not in spec:
        return None
    name, alias = spec.split("@", 1)
    return (name, alias) if name and alias else None


def get_alias_version(model_name: str, alias: str) -> str | None:
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    try:
        return str(MlflowClient().get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


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
        local = _fetch_once(mv.source, dest)
    except Exception as exc:  # noqa: BLE001 - any storage failure means the artifact is unusable
        raise ModelNotFoundError(f"artifacts of {uri} (version {mv.version}) cannot be fetched: {exc}") from exc
    return Path(local), str(mv.version)


_COMPLETE = ".rxt-complete"  # written last into a fetched copy: its files are all there


def _fetch_once(source: str, dest: Path) -> Path:
    """The artifact folder of a registered version, fetched once into ``dest`` and shared by every process.

    A registered version's artifacts never change, so a complete copy is reused.  A copy is fetched into a
    private temp folder and renamed into place, so worker processes that fetch the same version at the same
    moment (a promotion seen by every worker's poller) never read one another's half-written files.
    """
    import os
    import shutil
    import tempfile

    import mlflow

    def folder_of(root: Path) -> Path:
        entries = [p for p in root.iterdir() if p.name != _COMPLETE]
        return entries[0] if len(entries) == 1 and entries[0].is_dir() else root

    if (dest / _COMPLETE).is_file():
        return folder_of(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(tmp))
        (tmp / _COMPLETE).write_text("")
        try:
            os.rename(tmp, dest)  # atomic; fails when dest exists
        except OSError:
            if (dest / _COMPLETE).is_file():  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:  # an incomplete copy (an interrupted fetch of an older version of this code): replace it
                stale = dest.with_name(f".{dest.name}.stale.{os.getpid()}")
                os.rename(dest, stale)
                os.rename(tmp, dest)
                shutil.rmtree(stale, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder_of(dest)
