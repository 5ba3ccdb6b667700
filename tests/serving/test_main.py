"""Start-up decisions (``python -m training bootstrap``, ``python -m serving``): which models are resolved, trained
or left out, and why; dev API keys."""

from __future__ import annotations

from serving.__main__ import ensure_api_keys
from serving.settings import Settings
from training.bootstrap import ensure_ddi_model, ensure_model


def test_registered_models_are_resolved_not_retrained(triage_registry, ddi_settings):
    triage_settings, version = triage_registry
    assert ensure_model(triage_settings, train=True).startswith(
        f"triage model models:/triage-classifier@champion -> version {version} (")
    assert ensure_ddi_model(ddi_settings, train=True).startswith(
        "ddi model models:/ddi-severity@champion -> version 1 (")


def test_without_training_the_service_says_what_is_missing(tmp_path):
    empty = Settings(work_dir=tmp_path / "var", api_keys={})
    triage = ensure_model(empty, train=False)
    assert "not available" in triage and "starts NOT ready" in triage
    ddi = ensure_ddi_model(empty, train=False)
    assert "not available" in ddi and ddi.endswith("prescription checks run rules-only")
    # a folder that is not a model is never "trained over"
    folder = empty.model_copy(update={"ddi_model_uri": str(tmp_path / "nowhere")})
    assert "rules-only" in ensure_ddi_model(folder, train=True)


def test_dev_api_keys_are_written_once_with_private_mode(tmp_path):
    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    with_keys, path = ensure_api_keys(settings)
    assert path is not None and (path.stat().st_mode & 0o777) == 0o600
    roles = sorted(with_keys.resolved_api_keys().values())
    assert roles == sorted({"chat", "prescriber", "pharmacist", "admin", "ml", "clinician"})
    again, _ = ensure_api_keys(settings)
    assert again.resolved_api_keys() == with_keys.resolved_api_keys()
