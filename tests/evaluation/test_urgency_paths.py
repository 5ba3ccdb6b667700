"""eval-urgency's failure analysis (issue 11): for each negation / history trap raised to emergency, which path
raised it, and how many texts cost a second encoder pass."""

from __future__ import annotations

from evaluation.urgency_eval import emergency_path, evaluate_urgency, pipeline
from triage.redflags import RedFlagMatcher
from triage.urgency import UrgencyDecision


def test_emergency_path_names_what_raised_the_level():
    assert emergency_path(UrgencyDecision("emergency", ["red flag x"], "red_flag:stroke_fast")) == "red_flag:stroke_fast"
    rescored = UrgencyDecision("emergency", ["urgency model: p(emergency)=0.9 (scored without the denied / past "
                                             "mention(s) of negated scope; ...)"], "model")
    assert emergency_path(rescored) == "model_rescored"
    assert emergency_path(UrgencyDecision("emergency", ["urgency model: p(emergency)=0.9"], "model")) == \
        "model_not_rescored"


def test_trap_paths_and_rescore_counts_are_reported():
    decisions = {
        "a": UrgencyDecision("emergency", ["red flag"], "red_flag:anaphylaxis_swelling"),
        "b": UrgencyDecision("emergency", ["urgency model: p=0.9"], "model"),
        "c": UrgencyDecision("routine", ["urgency model: p=0.1"], "model"),
    }

    def decide(row):
        decide.texts += 1
        decide.rescored += row["id"] == "c"
        return decisions[row["id"]]

    decide.texts, decide.rescored = 0, 0
    rows = [{"id": i, "text": f"text {i}", "urgency": "routine", "group": "negation_trap"} for i in "abc"]
    report = evaluate_urgency(rows, decide)
    assert report["traps"]["raised_to_emergency"] == 2
    assert report["traps"]["paths"] == {"red_flag": 1, "model_not_rescored": 1}
    assert [r["path"] for r in report["traps"]["raised"]] == ["red_flag:anaphylaxis_swelling", "model_not_rescored"]
    assert report["rescored"] == {"texts": 3, "rescored": 1}


def test_the_rules_only_pipeline_counts_texts_and_never_rescores():
    decide = pipeline(RedFlagMatcher(), None)
    report = evaluate_urgency([{"text": "no chest pain, just a cold", "urgency": "self_care",
                                "group": "negation_trap"}], decide)
    assert report["rescored"] == {"texts": 1, "rescored": 0} and report["traps"]["raised_to_emergency"] == 0
