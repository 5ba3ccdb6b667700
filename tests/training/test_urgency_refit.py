"""``python -m training urgency-head --register``: a refit of the urgency head becomes a version of its own, evaluated
like a new training, tagged with what it refits, and handed to the promotion gate (never forced). On the small
fixture model, in a registry of its own (a real MLflow store in a temp dir; the fixture's registry stays untouched)."""

from __future__ import annotations

import json

import pytest

from training import urgency_refit

FAST = dict(per_statement=2, limit=8)


@pytest.mark.slow
def test_refit_is_registered_evaluated_and_gated(triage_model_dir, tmp_path):
    from mlflow import MlflowClient

    from serving.components import load_triage_classifier
    from serving.settings import Settings
    from training import registry
    from triage.taxonomy import URGENCY_LEVELS

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    # a gate file without minimums: the barely trained fixture encoder can pass it, so the promotion path runs
    lenient = tmp_path / "lenient.json"
    lenient.write_text(json.dumps({"dataset": "test", "minimums": {}}))
    first = urgency_refit.refit(settings, str(triage_model_dir), tmp_path / "v1", register=True, gates=lenient,
                                **FAST)
    assert first.version == "1" and first.promotion["promoted"] is True  # no champion yet: the lenient gate passes
    registry.configure(settings)
    assert registry.get_alias_version("triage-classifier", registry.CHAMPION) == "1"

    # the champion refitted: a new version tagged as a refit of version 1, refused by the shipped gate (the fixture
    # encoder is far below its minimums), so it stays a plain version and the champion does not move
    second = urgency_refit.refit(settings, "models:/triage-classifier@champion", tmp_path / "v2", register=True,
                                 **FAST)
    assert second.version == "2" and second.refit_of == "1"
    assert second.promotion["promoted"] is False and second.promotion["failures"]
    assert registry.get_alias_version("triage-classifier", registry.CHAMPION) == "1"
    client = MlflowClient()
    mv = client.get_model_version("triage-classifier", "2")
    assert mv.tags["urgency_refit_of"] == "1" and mv.tags["urgency_head"] == second.head_version
    run = client.get_run(mv.run_id)
    assert run.data.tags["promotion"] == "not promoted" and run.data.tags["urgency_refit_of"] == "1"
    metrics = run.data.metrics
    for name in urgency_refit.EVAL_SETS:  # the refit's own figures, with and without the head
        assert 0.0 <= metrics[f"urgency_{name}_emergency_recall"] <= 1.0
        assert f"rules_only_urgency_{name}_under_triage_rate" in metrics
    for key in ("registered_eval_accuracy", "registered_eval_urgency_emergency_recall",
                "registered_eval_urgency_under_triage_rate", "registered_eval_urgency_blind2_emergency_recall",
                "registered_eval_urgency_blind2_under_triage_rate"):  # what the gate reads
        assert key in metrics
    failed = {f["name"] for f in second.promotion["failures"]}
    assert any(name.startswith("min ") for name in failed)

    # served unchanged: the registered refit loads with its head, and its meta names the refit and its run
    clf = load_triage_classifier("models:/triage-classifier/2", settings)
    assert clf.urgency_head is not None and list(clf.urgency_head.labels) == list(URGENCY_LEVELS)
    assert clf.meta["urgency_run_id"] == mv.run_id and clf.meta["urgency_refit"]["of"] == "1"
    assert clf.meta["metrics"]["urgency_blind2_n"] == 100
    assert (clf.folder / "urgency_training_examples.csv").is_file()


def test_cli_refuses_an_existing_output_and_a_missing_gate_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        urgency_refit.main(["--model", str(tmp_path), "--output", str(tmp_path)])
    assert "exists" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        urgency_refit.main(["--model", str(tmp_path), "--output", str(tmp_path / "new"), "--register",
                            "--gates", str(tmp_path / "nope.json")])
    assert "nope.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        urgency_refit.main(["--model", str(tmp_path / "missing"), "--output", str(tmp_path / "new")])
    assert "not found" in capsys.readouterr().err
