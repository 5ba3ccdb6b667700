"""``python -m training register --folder F`` (training/register_folder.py, issue 16): an artefact folder built in
another work dir becomes a version of triage-classifier in this registry, with its lifecycle evaluation, and is
handed to the gated promotion; a folder the service could not load is refused before the registry is touched."""

from __future__ import annotations

import json
import shutil

import pytest

from training import register_folder as rf


def test_cli_is_dispatched_from_python_m_training():
    from training.__main__ import COMMANDS

    assert COMMANDS["register"][0] == "training.register_folder"


def test_a_folder_the_service_cannot_load_is_refused_before_the_registry_is_touched(tmp_path):
    from serving.settings import Settings

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    with pytest.raises(rf.RegisterError, match="artefact folder not found"):
        rf.register_folder(tmp_path / "nope", settings)
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "meta.json").write_text("{}")
    with pytest.raises(rf.RegisterError, match="not a servable triage artefact: .*lacks"):
        rf.register_folder(tmp_path / "half", settings)
    assert not (tmp_path / "var").exists()  # no MLflow store was created


def test_cli_refuses_a_malformed_tag(tmp_path, capsys):
    with pytest.raises(SystemExit):
        rf.main(["--folder", str(tmp_path), "--tag", "novalue"])
    assert "key=value" in capsys.readouterr().err


@pytest.mark.slow
def test_a_folder_built_elsewhere_becomes_its_own_evaluated_gated_version(triage_model_dir, tmp_path):
    from mlflow import MlflowClient

    from serving.components import load_triage_classifier
    from serving.settings import Settings
    from training import registry

    # a copy stands for a student built in another worktree: a run folder's layout (model/ beside report/)
    folder = tmp_path / "elsewhere" / "run" / "model"
    shutil.copytree(triage_model_dir, folder)
    (folder.parent / "report").mkdir()
    (folder.parent / "report" / "notes.md").write_text("built elsewhere\n")
    meta = json.loads((folder / "meta.json").read_text())
    meta["quantization"] = {"scheme": "dynamic-per-channel", "exclude": ["layer.0/output/dense"]}
    meta["distillation"] = {"teacher_uri": "/elsewhere/teacher", "teacher_version": None, "layer_map": [0, 1]}
    (folder / "meta.json").write_text(json.dumps(meta))

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    result = rf.register_folder(folder, settings, tags={"issue": "16"})
    assert result.version == "1"

    registry.configure(settings)
    client = MlflowClient()
    mv = client.get_model_version("triage-classifier", result.version)
    assert mv.tags["registered_from"] == str(folder.resolve()) and mv.tags["int8_scheme"] == "dynamic-per-channel"
    assert mv.tags["distilled_from"] == "/elsewhere/teacher" and mv.tags["issue"] == "16"
    assert mv.tags["origin_run_id"] == str(meta["run_id"])
    run = client.get_run(mv.run_id)
    assert run.data.params["int8_exclude"] == "layer.0/output/dense"
    assert run.data.tags["sha256_model_int8"] == rf.sha256(folder / "model.int8.onnx")
    assert "origin_test_accuracy" in run.data.metrics  # the figures measured where it was built, labelled so
    for key in ("registered_eval_accuracy", "registered_eval_macro_f1", "registered_eval_ece"):
        assert key in run.data.metrics
    assert run.data.metrics["registered_eval_n"] > 0
    logged = {a.path for a in client.list_artifacts(mv.run_id, "report")}
    assert {"report/notes.md", "report/registered_evaluation.json", "report/promotion.json"} <= logged

    # the registered version is served by the service's loader, from this registry's copy
    clf = load_triage_classifier(f"models:/triage-classifier/{result.version}", settings)
    assert clf.labels == json.loads((folder / "labels.json").read_text()) and clf.folder != folder

    # the gate decides, never forced: champion moves to it exactly when the gate passed
    promotion = result.promotion
    champion = registry.get_alias_version("triage-classifier", registry.CHAMPION)
    assert promotion["promoted"] == (champion == result.version)
    assert promotion["promoted"] or promotion["failures"] or promotion["error"]
    assert run.data.tags["promotion"] == ("champion" if promotion["promoted"] else "not promoted")

    # a second registration of the same folder is a new version, handed to the gate against the champion
    again = rf.register_folder(folder, settings, promote=False)
    assert again.version == "2" and again.promotion is None
