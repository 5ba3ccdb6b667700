"""AcuityBench urgency evaluation: metric math and a run on the real (verified) file."""

from __future__ import annotations

import pytest

from evaluation.acuity_eval import acuity_metrics, evaluate_acuity, render_markdown
from training.offline_eval import acuity_main as main
from training.offline_eval import default_vignettes_path


def test_metric_math_by_hand():
    gold = ["emergency", "emergency", "urgent", "routine", "self_care", "self_care"]
    pred = ["emergency", "routine", "emergency", "routine", "routine", "self_care"]
    m = acuity_metrics(gold, pred)
    assert m["n"] == 6
    assert m["exact_accuracy"] == pytest.approx(3 / 6)
    # emergent / non-emergent / self-care: E-E, R-R (non-emergent), S-S right; E->R, U->E, S->R wrong
    assert m["three_level_accuracy"] == pytest.approx(3 / 6)
    assert acuity_metrics(["urgent"], ["routine"])["three_level_accuracy"] == 1.0  # both non-emergent
    # under-triaged: emergency->routine only
    assert m["safe_accuracy"] == pytest.approx(5 / 6)
    assert m["under_triage_rate"] == pytest.approx(1 / 6)
    assert m["over_triage_rate"] == pytest.approx(2 / 6)
    assert m["n_emergency"] == 2 and m["emergency_under_triaged"] == 1
    assert m["emergency_under_triage_rate"] == pytest.approx(0.5)
    assert m["confusion"]["emergency"]["routine"] == 1
    assert m["confusion"]["self_care"]["routine"] == 1
    assert sum(sum(r.values()) for r in m["confusion"].values()) == 6


def test_metric_input_errors():
    with pytest.raises(ValueError, match="length"):
        acuity_metrics(["urgent"], [])
    with pytest.raises(ValueError, match="unknown urgency"):
        acuity_metrics(["urgent"], ["soonish"])


@pytest.fixture(scope="module")
def report():
    return evaluate_acuity(default_vignettes_path())


def test_real_file_numbers_in_range(report):
    assert report["n"] == 100
    for key in ("exact_accuracy", "safe_accuracy", "under_triage_rate", "over_triage_rate"):
        assert 0.0 <= report[key] <= 1.0
    confusion = report["confusion"]
    assert sum(sum(r.values()) for r in confusion.values()) == 100
    diag = sum(confusion[g][g] for g in confusion)
    assert report["exact_accuracy"] == pytest.approx(diag / 100)
    assert report["safe_accuracy"] + report["under_triage_rate"] == pytest.approx(1.0)
    assert report["safe_accuracy"] >= report["exact_accuracy"]
    assert sum(report["gold_counts"].values()) == 100
    assert report["n_emergency"] == report["gold_counts"].get("emergency", 0) > 0
    # red flags must find at least some emergencies, or the pipeline is broken
    assert confusion["emergency"]["emergency"] >= 5
    md = render_markdown(report)
    assert "| exact accuracy |" in md and "49-57%" in md


def test_opening_utterance_field_and_cli(capsys):
    r = evaluate_acuity(default_vignettes_path(), field="opening_utterance")
    assert r["n"] == 100 and r["field"] == "opening_utterance"
    assert main(["--field", "opening_utterance"]) == 0
    assert "AcuityBench seed100" in capsys.readouterr().out


def test_bad_label_is_reported(tmp_path):
    path = tmp_path / "v.csv"
    path.write_text("id,vignette_text,gold_triage,age,sex\n1,chest pain,E,40,male\n")
    with pytest.raises(ValueError, match="gold_triage"):
        evaluate_acuity(path)
    path.write_text("id,vignette_text,gold_triage,age,sex\n1,I can't breathe,D,40,male\n")
    r = evaluate_acuity(path)
    assert r["exact_accuracy"] == 1.0 and r["emergency_under_triaged"] == 0
