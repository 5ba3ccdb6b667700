"""Model lifecycle against a real MLflow store: gated promotion, forced promotion, rollback, history.

Versions are made from the session's tiny triage model: an identical copy (passes the
non-inferiority gate) and a copy whose label order is scrambled (a genuinely worse model).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone

import pytest

from tests.plugins.registry_support import register_copy
from training import lifecycle, registry
from training.lifecycle import LifecycleError
from training.triage_train import TRIAGE_MODEL_NAME


def _register_copy(settings, model_dir, tmp_path, name, mutate=None) -> str:
    return register_copy(settings, model_dir, tmp_path / name, TRIAGE_MODEL_NAME, mutate)


def _broken_export(folder):
    """A version whose ONNX export failed its parity check (as recorded by training)."""
    meta = json.loads((folder / "meta.json").read_text())
    meta["parity_max_abs_diff"] = 0.5
    (folder / "meta.json").write_text(json.dumps(meta))


def _scramble_labels(folder):
    labels = json.loads((folder / "labels.json").read_text())
    rotated = labels[3:] + labels[:3]
    (folder / "labels.json").write_text(json.dumps(rotated))
    meta = json.loads((folder / "meta.json").read_text())
    meta["labels"] = rotated
    (folder / "meta.json").write_text(json.dumps(meta))
    for sidecar in folder.glob("center_exemplars*"):  # its exemplars name the old order: a consistent artefact has none
        sidecar.unlink()


@pytest.fixture
def lc(triage_model_dir, tmp_path):
    """An isolated registry (own MLflow store + audit DB) whose champion is a copy of the session model.

    The session fixture's registry is shared with other tests, so its aliases are never moved here.
    """
    from serving.settings import Settings

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    v1 = _register_copy(settings, triage_model_dir, tmp_path, "v1")
    registry.set_alias(TRIAGE_MODEL_NAME, "champion", v1, actor="setup", reason="first model", settings=settings)
    return settings, v1


@pytest.fixture
def gates(tmp_path):
    path = tmp_path / "gates.json"
    path.write_text(json.dumps({
        "dataset": "test",
        "minimums": {"accuracy": 0.0},
        "maximums": {"ece": 0.9},
        "extra": {"onnx_parity_max_abs_diff": {"max": 0.01}},
        "non_inferiority": {"accuracy": 0.02, "macro_f1": 0.02},
    }))
    return path


def test_gated_promotion_force_rollback_and_history(lc, triage_model_dir, tmp_path, gates):
    settings, v1 = lc
    registry.configure(settings)
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == str(v1)

    same = _register_copy(settings, triage_model_dir, tmp_path, "same")
    worse = _register_copy(settings, triage_model_dir, tmp_path, "worse", _broken_export)

    # a version whose export failed parity is refused by the gate, and nothing moves
    refused = lifecycle.promote("triage", worse, settings=settings, gates_path=gates, actor="alice")
    assert refused["promoted"] is False
    failed = {c.name for c in refused["gate"].failures()}
    assert failed == {"onnx_parity_max_abs_diff"}
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == str(v1)

    # an equivalent retrain passes every gate
    before_same = datetime.now(timezone.utc)
    time.sleep(0.05)
    ok = lifecycle.promote("triage", same, settings=settings, gates_path=gates, actor="alice", reason="retrain")
    assert ok["promoted"] is True, ok["gate"].failures()
    assert ok["previous"] == str(v1)
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == same

    # --force needs a reason, and the override is audited as forced
    with pytest.raises(LifecycleError, match="reason"):
        lifecycle.promote("triage", worse, settings=settings, gates_path=gates, force=True)
    forced = lifecycle.promote("triage", worse, settings=settings, gates_path=gates, force=True,
                               reason="emergency hotfix approved by CMO", actor="bob")
    assert forced["promoted"] is True, forced
    after_forced = datetime.now(timezone.utc)

    history = lifecycle.alias_history("triage", settings=settings)
    assert [h["version"] for h in history][-2:] == [same, worse]
    assert history[-1]["forced"] is True and history[-1]["actor"] == "bob"
    assert history[-1]["reason"] == "emergency hotfix approved by CMO"

    # which version served at a time T
    assert lifecycle.serving_at("triage", before_same, settings=settings) == str(v1)
    assert lifecycle.serving_at("triage", after_forced, settings=settings) == worse

    # rollback returns to the previous champion, with a reason, audited
    with pytest.raises(LifecycleError, match="reason"):
        lifecycle.rollback("triage", settings=settings)
    back = lifecycle.rollback("triage", settings=settings, reason="accuracy complaints", actor="carol")
    assert back["to"] == same and back["from"] == worse
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, "champion") == same

    from serving.audit import verify_chain
    from serving.db.session import database_for

    result = verify_chain(database_for(settings.resolved_database_url()).engine)
    assert result.ok, str(result)


def test_compare_reports_per_class_deltas(lc, triage_model_dir, tmp_path):
    settings, v1 = lc
    other = _register_copy(settings, triage_model_dir, tmp_path, "scrambled", _scramble_labels)
    kind = lifecycle.kind_of("triage")
    a = lifecycle.evaluate_version(kind, str(v1), "test", settings)
    b = lifecycle.evaluate_version(kind, other, "test", settings)
    assert a["n"] == b["n"] > 0  # the same held-out rows for both versions
    diff = lifecycle.compare(a, b)
    assert diff["overall"]["accuracy"]["delta"] == pytest.approx(b["accuracy"] - a["accuracy"])
    assert set(diff["per_class"]) == set(a["per_class"]) | set(b["per_class"])
    assert any(d["delta"] != 0 for d in diff["per_class"].values() if d["delta"] is not None)


def test_gate_arithmetic():
    gates = {"dataset": "test", "minimums": {"accuracy": 0.8}, "maximums": {"ece": 0.1},
             "per_class_min_recall": 0.5, "per_class_min_recall_overrides": {"oral_care": 0.3},
             "non_inferiority": {"macro_f1": 0.01, "ece": 0.02}, "lower_is_better": ["ece"],
             "extra": {"redflag_recall": {"min": 1.0}}}
    champion = {"accuracy": 0.85, "macro_f1": 0.80, "ece": 0.03}
    good = {"accuracy": 0.84, "macro_f1": 0.795, "ece": 0.045,
            "per_class": {"ent": {"recall": 0.6, "support": 5}, "oral_care": {"recall": 0.35, "support": 3},
                          "pediatrics": {"recall": 0.0, "support": 0}}}
    assert lifecycle.apply_gates(gates, good, champion, {"redflag_recall": 1.0}).passed
    bad = dict(good, macro_f1=0.78, ece=0.06, per_class={"ent": {"recall": 0.4, "support": 5}})
    report = lifecycle.apply_gates(gates, bad, champion, {"redflag_recall": 0.98})
    assert {c.name for c in report.failures()} == {
        "not worse: macro_f1", "not worse: ece", "per-class recall", "redflag_recall"}
    assert lifecycle.apply_gates(gates, dict(good, accuracy=0.79), None, {"redflag_recall": 1.0}).failures()[0].name \
        == "min accuracy"


def test_cli_errors_name_the_problem(lc, capsys):
    settings, _ = lc
    assert lifecycle.main(["promote", "triage", "999"], settings=settings) == 2
    assert "no version 999" in capsys.readouterr().out
    assert lifecycle.main(["evaluate", "triage", "--version", "1", "--dataset", "nope"], settings=settings) == 2
    assert "no data set 'nope'" in capsys.readouterr().out


def test_model_card_is_logged_with_each_version(triage_registry):
    from mlflow import MlflowClient

    from training.model_card import model_card

    settings, v1 = triage_registry
    registry.configure(settings)
    tags = MlflowClient().get_model_version(TRIAGE_MODEL_NAME, str(v1)).tags
    assert tags.get("model_card") == f"model_card_v{v1}.md"
    card = model_card(TRIAGE_MODEL_NAME, str(v1), settings=settings, log=False)
    assert "## Intended use" in card and "## Training data and licences" in card
    assert "medical_speech_intent" in card  # data provenance with its licence row


def test_shipped_triage_gate_reads_redflag_recall_and_parity(lc):
    """The shipped gate's extra values come from the red-flag phrase set and the version's meta.json."""
    settings, v1 = lc
    gates = lifecycle.load_gates(lifecycle.kind_of("triage"))
    extra = lifecycle._extra_gate_values(lifecycle.kind_of("triage"), v1, settings, gates)
    assert extra["redflag_recall"] == 1.0  # no missed red-flag phrase (docs/red-flags.md)
    assert extra["onnx_parity_max_abs_diff"] is not None and extra["onnx_parity_max_abs_diff"] < 1e-3


# a candidate's figures that pass every minimum of the shipped triage gate (each gate test moves one of them)
GATE_BASE = {"accuracy": 0.9, "macro_f1": 0.85, "top3_accuracy": 0.97, "selective_accuracy": 0.95, "ece": 0.04,
             "urgency_emergency_recall": 0.98, "urgency_under_triage_rate": 0.08,
             "urgency_blind2_emergency_recall": 0.9, "urgency_blind2_under_triage_rate": 0.1,
             "routing_blind_top1": 0.70, "routing_blind_coverage": 0.65,
             "routing_blind2_top1": 0.74, "routing_blind2_coverage": 0.61,
             "urgency_blind5_emergency_recall": 0.86, "urgency_blind5_under_triage_rate": 0.126,
             "routing_blind3_top1": 0.75, "routing_blind3_coverage": 0.68}


def test_shipped_triage_gate_refuses_worse_urgency_safety():
    """A challenger that misses more emergencies, or under-triages more, than the champion is refused."""
    from training.lifecycle import apply_gates, kind_of, load_gates

    gates = load_gates(kind_of("triage"))
    base = dict(GATE_BASE)
    assert apply_gates(gates, dict(base), dict(base)).passed
    worse_recall = {**base, "urgency_emergency_recall": 0.96}
    report = apply_gates(gates, worse_recall, base)
    assert not report.passed and [c.name for c in report.failures()] == ["not worse: urgency_emergency_recall"]
    worse_under = {**base, "urgency_under_triage_rate": 0.09}
    report = apply_gates(gates, worse_under, base)
    assert [c.name for c in report.failures()] == ["not worse: urgency_under_triage_rate"]
    # the second blind set is read the same way, each set on its own
    report = apply_gates(gates, {**base, "urgency_blind2_emergency_recall": 0.8667}, base)
    assert [c.name for c in report.failures()] == ["not worse: urgency_blind2_emergency_recall"]
    report = apply_gates(gates, {**base, "urgency_blind2_under_triage_rate": 0.11}, base)
    assert [c.name for c in report.failures()] == ["not worse: urgency_blind2_under_triage_rate"]
    # and the fifth (the largest written blind, first run 2026-12-07)
    report = apply_gates(gates, {**base, "urgency_blind5_emergency_recall": 0.84}, base)
    assert [c.name for c in report.failures()] == ["not worse: urgency_blind5_emergency_recall"]
    report = apply_gates(gates, {**base, "urgency_blind5_under_triage_rate": 0.13}, base)
    assert [c.name for c in report.failures()] == ["not worse: urgency_blind5_under_triage_rate"]
    report = apply_gates(gates, {**base, "routing_blind3_top1": 0.72}, base)
    assert [c.name for c in report.failures()] == ["not worse: routing_blind3_top1"]
    better = {**base, "urgency_blind2_emergency_recall": 0.95, "urgency_blind2_under_triage_rate": 0.05}
    assert apply_gates(gates, better, base).passed


def test_shipped_triage_gate_refuses_worse_blind_routing():
    """Issue 12: a challenger that routes the blind set worse, or hands more of it to a human, is refused."""
    from training.lifecycle import apply_gates, kind_of, load_gates

    gates = load_gates(kind_of("triage"))
    base = dict(GATE_BASE)
    assert apply_gates(gates, {**base, "routing_blind_top1": 0.685}, base).passed  # within the 2-point margin
    report = apply_gates(gates, {**base, "routing_blind_top1": 0.67}, base)
    assert [c.name for c in report.failures()] == ["not worse: routing_blind_top1"]
    report = apply_gates(gates, {**base, "routing_blind_coverage": 0.60}, base)
    assert [c.name for c in report.failures()] == ["not worse: routing_blind_coverage"]
    report = apply_gates(gates, {**base, "routing_blind2_top1": 0.70}, base)  # the second blind set counts too
    assert [c.name for c in report.failures()] == ["not worse: routing_blind2_top1"]
    report = apply_gates(gates, {**base, "routing_blind2_coverage": 0.55}, base)
    assert [c.name for c in report.failures()] == ["not worse: routing_blind2_coverage"]


def test_shipped_triage_gate_compares_cross_source_when_the_champion_has_it():
    """Issue 12: cross-source top-1 (the training run's source-to-source tests) may not drop by more than 2 points;
    a champion trained without cross-source tests cannot be compared, a candidate without them is refused."""
    from training.lifecycle import apply_gates, kind_of, load_gates
    from training.lifecycle_eval import cross_source_figures

    gates = load_gates(kind_of("triage"))
    base = dict(GATE_BASE)
    meta = {"metrics": {"xsrc_speech_to_s2d_accuracy": 0.76, "xsrc_s2d_to_speech_accuracy": 0.56,
                        "xsrc_speech_to_s2d_baseline_accuracy": 0.5, "xsrc_speech_to_s2d_top3_accuracy": 0.9,
                        "xsrc_s2d_to_speech_top3_accuracy": 0.8, "test_accuracy": 0.88,
                        # same prefix, other models: the exemplar blend, the head, the WiSE-FT grid (not counted)
                        "xsrc_speech_to_s2d_blend_accuracy": 0.1, "xsrc_s2d_to_speech_head_accuracy": 0.1,
                        "xsrc_s2d_to_speech_wise_ft_accuracy": 0.99, "xsrc_s2d_to_speech_fine_tuned_accuracy": 0.1}}
    figures = cross_source_figures(meta)
    assert figures == {"cross_source_top1": pytest.approx(0.66), "cross_source_top3": pytest.approx(0.85)}
    assert cross_source_figures({"metrics": {"test_accuracy": 0.9}}) == {}
    champion = {**base, **figures}
    assert apply_gates(gates, {**base, "cross_source_top1": 0.645}, champion).passed
    report = apply_gates(gates, {**base, "cross_source_top1": 0.62}, champion)
    assert [c.name for c in report.failures()] == ["not worse: cross_source_top1"]
    report = apply_gates(gates, dict(base), champion)
    assert [c.name for c in report.failures()] == ["not worse: cross_source_top1"]
    assert "candidate has no cross_source_top1" in report.failures()[0].detail
    report = apply_gates(gates, {**base, "cross_source_top1": 0.3}, dict(base))  # quick champion: nothing to compare
    assert report.passed and any("not compared" in c.detail for c in report.checks)
