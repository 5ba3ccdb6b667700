"""DDIPredictor: loads the registered ddi-severity artifact, numpy + onnxruntime only."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from prescription_check.ddi_model import DDIModelNotFoundError, DDIPredictor
from serving.components import load_ddi_predictor
from serving.registry import ModelNotFoundError


@pytest.fixture(scope="module")
def predictor(ddi_model_dir):
    return DDIPredictor.load(str(ddi_model_dir))


def test_loads_from_registry_alias(ddi_settings):
    p = load_ddi_predictor("models:/ddi-severity@champion", ddi_settings)
    assert p.version == "1"
    assert p.knows("warfarin")


def test_loads_from_path_and_names_the_run(predictor, ddi_model_dir):
    meta = json.loads((ddi_model_dir / "meta.json").read_text())
    assert predictor.version == f"run:{meta['run_id'][:12]}"
    assert predictor.labels == ["major", "moderate", "minor"]


def test_knows_canonical_ddinter_and_who_names(predictor):
    assert predictor.knows("acetaminophen")
    assert predictor.knows("Paracetamol ")        # WHO INN name, any case/spacing
    assert predictor.knows("WARFARIN")
    assert not predictor.knows("not-a-drug-xyz")
    assert not predictor.knows(None)


def test_predict_pairs_symmetric_batched_and_normalised(predictor):
    pairs = [("warfarin", "fluconazole"), ("fluconazole", "warfarin"), ("simvastatin", "clarithromycin"),
             ("clarithromycin", "simvastatin"), ("acetaminophen", "amoxicillin")]
    out = predictor.predict_pairs(pairs)
    assert len(out) == len(pairs)
    for p in out:
        assert set(p) == {"major", "moderate", "minor", "interaction"}  # + the detector's calibrated probability
        assert abs(sum(v for k, v in p.items() if k != "interaction") - 1) < 1e-5
        assert 0 <= p["interaction"] <= 1
    for i in (0, 2):
        for k in out[i]:
            assert out[i][k] == pytest.approx(out[i + 1][k], abs=1e-6)
    # one batched call gives what single calls give
    single = [predictor.predict_pairs([pr])[0] for pr in pairs]
    for a, b in zip(out, single):
        assert a == pytest.approx(b, abs=1e-6)


def test_unknown_drugs_and_self_pairs_get_no_prediction(predictor):
    out = predictor.predict_pairs([("warfarin", "not-a-drug-xyz"), ("warfarin", "Warfarin"),
                                   ("warfarin", "aspirin")])
    assert out[0] == {} and out[1] == {}
    assert set(out[2]) == {"major", "moderate", "minor", "interaction"}
    assert predictor.predict_pairs([]) == []


def test_bad_pair_shape_is_named(predictor):
    with pytest.raises(ValueError, match="pair 0"):
        predictor.predict_pairs([("warfarin",)])


def test_missing_model_raises_model_not_found(settings, tmp_path, ddi_model_dir):
    with pytest.raises(ModelNotFoundError):
        load_ddi_predictor("models:/ddi-severity@champion", settings)
    with pytest.raises(ModelNotFoundError):
        load_ddi_predictor(str(tmp_path / "nowhere"), settings)
    with pytest.raises(DDIModelNotFoundError, match="nowhere"):
        DDIPredictor.load(tmp_path / "nowhere")
    broken = tmp_path / "broken"
    shutil.copytree(ddi_model_dir, broken)
    (broken / "model.onnx").unlink()
    with pytest.raises(DDIModelNotFoundError, match="model.onnx"):
        DDIPredictor.load(broken)


def test_serving_imports_neither_torch_nor_rdkit_nor_sklearn(ddi_model_dir):
    code = (
        "import sys\n"
        "from prescription_check.ddi_model import DDIPredictor\n"
        f"p = DDIPredictor.load({str(ddi_model_dir)!r})\n"
        "assert p.predict_pairs([('warfarin', 'aspirin')])[0]\n"
        "bad = [m for m in ('torch', 'rdkit', 'sklearn', 'mlflow') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_predictions_match_the_trained_models_classes(predictor):
    """A drug pair DDInter lists: the prediction should usually rank its true class above chance."""
    x, keep = predictor.features([("warfarin", "aspirin")])
    assert x.shape == (1, predictor.context.n_features) and keep.tolist() == [0]
    assert np.isfinite(predictor.predict_proba(x)).all()


def test_checker_reports_predictions_for_undocumented_pairs_only(predictor, rx_checker):
    """Integration with the engine (prescription_check.Checker): none of these 10 pairs is in DDInter, so each
    one the KB lacks reaches the model; with the interaction detector a finding appears only where its calibrated
    probability reaches the artifact's threshold, marked as predicted, never documented, never above moderate."""
    from prescription_check import Checker, Prescription

    assert predictor.has_detector and predictor.detector_threshold is not None
    drugs = ["amoxicillin", "escitalopram", "docusate", "melatonin", "cyanocobalamin"]
    rx = Prescription.model_validate({"patient": {"age_years": 50}, "items": [{"drug": d} for d in drugs]})
    result = Checker.load(rx_checker.kb.path, ddi_predictor=predictor).check(rx)
    assert result.model_status == "ok" and result.model_version == predictor.version
    predicted = {frozenset(f.drugs): f for f in result.findings if f.category == "predicted_interaction"}
    documented = {frozenset(f.drugs) for f in result.findings if f.category == "interaction"}
    asked = [(a, b) for i, a in enumerate(drugs) for b in drugs[i + 1:]
             if frozenset((a, b)) not in documented and rx_checker.kb.interaction(a, b) is None]
    assert asked
    for (a, b), p in zip(asked, predictor.predict_pairs(asked)):
        f = predicted.get(frozenset((a, b)))
        if not p or p["interaction"] < predictor.detector_threshold:
            assert f is None, (a, b, p)
            continue
        assert f is not None and f.predicted and f.probability == pytest.approx(p["interaction"])
        assert f.severity in {"moderate", "minor"} and "Possible interaction" in f.message
        assert "not documented" in f.message
    rules_only = Checker.load(rx_checker.kb.path).check(rx)
    assert rules_only.model_status.startswith("rules-only")
    assert not [f for f in rules_only.findings if f.predicted]


def test_detector_probabilities_are_calibrated_values(predictor):
    """The detector's output goes through the artifact's isotonic map: values lie in the calibration's range."""
    out = predictor.predict_pairs([("sertraline", "tramadol"), ("amoxicillin", "melatonin")])
    ys = predictor.detector_meta["calibration_y"]
    for p in out:
        assert min(ys) - 1e-9 <= p["interaction"] <= max(ys) + 1e-9
    assert predictor.detector_meta["target_precision"] == 0.8
    assert predictor.detector_meta["max_predicted_severity"] == "moderate"


def test_service_with_the_model_names_it_in_readiness_and_responses(ddi_model_dir, rx_checker_settings, tmp_path):
    """The app loads the DDI model from its URI at start-up; /readyz and each check name its version."""
    from fastapi.testclient import TestClient

    from serving.app import create_app
    from serving.settings import Settings
    from tests.plugins.db import API_KEYS, auth

    settings = Settings(work_dir=tmp_path / "var", api_keys=API_KEYS, kb_path=rx_checker_settings.resolved_kb_path(),
                        ddi_model_uri=str(ddi_model_dir), triage_model_uri=str(tmp_path / "no-triage"))
    app = create_app(settings)
    with TestClient(app) as client:
        state = client.get("/readyz").json()["components"]["ddi_model"]
        version = app.state.rxt.checker.current.model_version
        assert state == {"ok": True, "detail": f"ddi-severity {version}"} and version.startswith("run:")
        rx = {"patient": {"age_years": 50}, "items": [{"drug": "amoxicillin"}, {"drug": "escitalopram"}]}
        body = client.post("/v1/prescriptions/check", json=rx, headers=auth("prescriber")).json()
        assert body["model_status"] == "ok" and body["model_version"] == version
        predicted = [f for f in body["findings"] if f["predicted"]]
        # with the interaction detector a predicted finding appears only at or above the artifact's threshold
        model = DDIPredictor.load(ddi_model_dir)
        p = model.predict_pairs([("amoxicillin", "escitalopram")])[0]
        assert bool(predicted) == (p["interaction"] >= model.detector_threshold)
        assert all(f["source"] == f"ddi-severity model {version} (interaction detector)" for f in predicted)
