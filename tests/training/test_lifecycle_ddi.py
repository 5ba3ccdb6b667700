"""Lifecycle verbs on the ddi-severity model, against a real MLflow store and the session's small real model."""

from __future__ import annotations

import json

import pytest

from tests.plugins.registry_support import register_copy
from training import lifecycle, registry
from training.ddi_train import MODEL_NAME


def _register_copy(settings, model_dir, tmp_path, name, mutate=None) -> str:
    return register_copy(settings, model_dir, tmp_path / name, MODEL_NAME, mutate)


def _edit_meta(fn):
    def mutate(folder):
        meta = json.loads((folder / "meta.json").read_text())
        fn(meta)
        (folder / "meta.json").write_text(json.dumps(meta))
    return mutate


@pytest.fixture
def ddi_lc(ddi_model_dir, tmp_path):
    from serving.settings import Settings

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    v1 = _register_copy(settings, ddi_model_dir, tmp_path, "v1")
    registry.set_alias(MODEL_NAME, "champion", v1, actor="setup", reason="first model", settings=settings)
    return settings, v1


@pytest.fixture
def permissive_gates(tmp_path):
    path = tmp_path / "ddi-gates.json"
    path.write_text(json.dumps({
        "dataset": "one_unseen",
        "minimums": {"accuracy": 0.0},
        "extra": {"onnx_parity_max_abs_diff": {"max": 0.001}},
        "non_inferiority": {"macro_f1": 0.02},
    }))
    return path


def test_evaluate_reads_each_split_and_scores_the_artefact(ddi_lc, ddi_model_dir):
    settings, v1 = ddi_lc
    kind = lifecycle.kind_of("ddi")
    meta = json.loads((ddi_model_dir / "meta.json").read_text())
    seen = set()
    for dataset in ("random", "one_unseen", "both_unseen"):
        m = lifecycle.evaluate_version(kind, v1, dataset, settings)
        recorded = meta["metrics"][dataset]["model"]
        assert m["n"] == recorded["n"] > 0
        assert m["macro_f1"] == pytest.approx(recorded["macro_f1"])
        assert set(m["per_class"]) == {"major", "moderate", "minor"}
        base = meta["metrics"][dataset]["logreg_id_atc"]
        assert m["macro_f1_over_baseline"] == pytest.approx(recorded["macro_f1"] - base["macro_f1"])
        assert m["smoke_pairs"] > 0
        seen.add(m["heldout_id"])
    assert len(seen) == 1  # one run, one split fingerprint
    with pytest.raises(lifecycle.LifecycleError, match="no data set"):
        lifecycle.evaluate_version(kind, v1, "test", settings)


def test_promotion_refuses_other_split_and_broken_artefact(ddi_lc, ddi_model_dir, tmp_path, permissive_gates, capsys):
    settings, v1 = ddi_lc
    same = _register_copy(settings, ddi_model_dir, tmp_path, "same")
    other_split = _register_copy(settings, ddi_model_dir, tmp_path, "other",
                                 _edit_meta(lambda m: m["options"].update(seed=m["options"]["seed"] + 1)))
    bad_parity = _register_copy(settings, ddi_model_dir, tmp_path, "parity",
                                _edit_meta(lambda m: m["parity"].update(parity_max_abs_prob_diff=0.2)))
    broken = _register_copy(settings, ddi_model_dir, tmp_path, "broken",
                            lambda f: (f / "model.onnx").write_bytes(b"not an onnx model"))

    refused = lifecycle.promote("ddi", other_split, settings=settings, gates_path=permissive_gates)
    assert refused["promoted"] is False
    assert {c.name for c in refused["gate"].failures()} == {"same held-out data"}

    refused = lifecycle.promote("ddi", bad_parity, settings=settings, gates_path=permissive_gates)
    assert {c.name for c in refused["gate"].failures()} == {"onnx_parity_max_abs_diff"}
    assert registry.get_alias_version(MODEL_NAME, "champion") == str(v1)

    with pytest.raises(ValueError, match="does not load"):
        lifecycle.promote("ddi", broken, settings=settings, gates_path=permissive_gates)
    # the CLI names the problem and exits non-zero
    assert lifecycle.main(["promote", "ddi", broken, "--gates", str(permissive_gates)], settings=settings) == 2
    assert "does not load" in capsys.readouterr().out

    ok = lifecycle.promote("ddi", same, settings=settings, gates_path=permissive_gates, actor="ml-eng", reason="retrain")
    assert ok["promoted"] is True, ok["gate"].failures()
    back = lifecycle.rollback("ddi", settings=settings, reason="check rollback", actor="ml-eng")
    assert back == {"rolled_back": True, "model": MODEL_NAME, "from": same, "to": str(v1), "audit_id": back["audit_id"]}
    assert [h["version"] for h in lifecycle.alias_history("ddi", settings=settings)] == [str(v1), same, str(v1)]


def test_shipped_gate_passes_the_documented_champion_and_refuses_a_baseline():
    """training/gates/ddi.json against the full run's one-unseen figures (docs/ddi-model.md)."""
    gates = lifecycle.load_gates(lifecycle.kind_of("ddi"))
    assert gates["dataset"] == "one_unseen"
    champion = {"accuracy": 0.857, "macro_f1": 0.761, "major_auroc": 0.919, "ece": 0.044,
                "macro_f1_over_baseline": 0.761 - 0.598, "major_auroc_over_baseline": 0.919 - 0.872,
                "per_class": {"major": {"recall": 0.659}, "moderate": {"recall": 0.933}, "minor": {"recall": 0.602}}}
    report = lifecycle.apply_gates(gates, champion, None, {"onnx_parity_max_abs_diff": 3.3e-7})
    assert report.passed, report.failures()
    baseline = {"accuracy": 0.806, "macro_f1": 0.598, "major_auroc": 0.872, "ece": 0.048,
                "macro_f1_over_baseline": 0.0, "major_auroc_over_baseline": 0.0,
                "per_class": {"major": {"recall": 0.479}, "moderate": {"recall": 0.943}, "minor": {"recall": 0.240}}}
    failed = {c.name for c in lifecycle.apply_gates(gates, baseline, champion,
                                                    {"onnx_parity_max_abs_diff": 0.0}).failures()}
    assert {"min macro_f1", "per-class recall", "not worse: macro_f1", "not worse: major_auroc"} <= failed
