"""Urgency decision: flags override, then the documented rule set."""

from __future__ import annotations

import pytest

from triage.redflags import FlagHit, RedFlagMatcher, Span
from triage.urgency import URGENCY_LEVELS, UrgencyDecision, decide_urgency


@pytest.fixture(scope="module")
def matcher() -> RedFlagMatcher:
    return RedFlagMatcher()


def _flag(urgency: str, rule_id: str = "x_rule") -> FlagHit:
    return FlagHit(rule_id, "Label", urgency, "emergency", [Span("w", 0, 1)], "Title, Section, https://e.org")


def test_levels():
    assert URGENCY_LEVELS == ("emergency", "urgent", "routine", "self_care")


def test_emergency_flag_wins_over_everything():
    d = decide_urgency("mild cold for months", [("ent", 0.9)], [_flag("urgent", "u"), _flag("emergency", "e")])
    assert isinstance(d, UrgencyDecision)
    assert d.level == "emergency"
    assert any("red flag e" in r for r in d.reasons)
    assert not any("red flag u" in r for r in d.reasons)


def test_urgent_flag():
    d = decide_urgency("runny nose", [], [_flag("urgent", "coughing_blood")])
    assert d.level == "urgent" and "coughing_blood" in d.reasons[0]


@pytest.mark.parametrize(
    "text, kwargs, level, reason_part",
    [
        ("my baby has a fever", {"age_years": 0.5}, "urgent", "NG51"),
        ("fever and aching since yesterday", {"age_years": 80}, "urgent", "over 75"),
        ("I have a fever", {"pregnant": True}, "urgent", "pregnant"),
        ("I'm pregnant and have a temperature of 38.4", {}, "urgent", "pregnant"),
        ("I'm 30 weeks and I've had a fever since this morning", {}, "urgent", "pregnant"),  # gestation, no word
        ("temperature of 39.6 and shivery", {"age_years": 30}, "urgent", "39"),
        ("severe pain in my knee after a fall", {}, "urgent", "severe"),
        ("the rash is getting worse quickly", {}, "urgent", "worse"),
        ("itchy patches on my elbows for years", {}, "routine", "won't go away"),
        ("heel pain that keeps coming back", {}, "routine", "keeps coming back"),
        ("runny nose and sneezing", {}, "self_care", "self-care"),
        ("a mild headache since this afternoon", {}, "self_care", "mild"),
        ("my knee clicks when I squat", {}, "routine", "default"),
    ],
)
def test_rule_set(text, kwargs, level, reason_part):
    d = decide_urgency(text, [], [], **kwargs)
    assert d.level == level, d
    assert any(reason_part in r for r in d.reasons), d.reasons


def test_a_past_or_denied_pregnancy_is_not_a_sepsis_risk_group():
    for text in ("when I was 30 weeks with my son I had a fever, now I have a fever again",
                 "not pregnant, just a fever and a cough"):
        d = decide_urgency(text, [], [])
        assert not any("pregnant" in r for r in d.reasons), d.reasons


def test_negated_modifiers_do_not_count():
    assert decide_urgency("the pain is not severe, my knee clicks", [], []).level == "routine"
    assert decide_urgency("no fever at all, just tired", [], [], age_years=0.5).level == "routine"


def test_adult_fever_without_risk_factor_is_not_urgent():
    assert decide_urgency("mild fever and a cold", [], [], age_years=30).level == "self_care"


def test_centers_recorded_not_used_and_validated():
    a = decide_urgency("my knee clicks", [], [])
    b = decide_urgency("my knee clicks", [("orthopedics", 0.8), ("foot_ankle", 0.1)], [])
    assert a.level == b.level == "routine"
    assert any("orthopedics" in r for r in b.reasons)
    with pytest.raises(ValueError):
        decide_urgency("x", [("orthopedics", "high")], [])  # type: ignore[list-item]
    with pytest.raises(ValueError):
        decide_urgency("x", [("orthopedics",)], [])  # type: ignore[list-item]
    np = pytest.importorskip("numpy")
    d = decide_urgency("my knee clicks", [("orthopedics", np.float32(0.7))], [])
    assert d.level == "routine" and any("0.70" in r for r in d.reasons)
    with pytest.raises(TypeError):
        decide_urgency(None, [], [])  # type: ignore[arg-type]


def test_end_to_end_with_matcher(matcher):
    text = "my dad's face has dropped on one side, he has had a mild cold for weeks"
    d = decide_urgency(text, [], matcher.match(text))
    assert d.level == "emergency" and "stroke_fast" in d.reasons[0]
    text = "I'm 12 weeks pregnant and spotting a little"
    d = decide_urgency(text, [], matcher.match(text))
    assert d.level == "urgent" and "pregnancy_bleeding" in d.reasons[0]
    text = "my father had a stroke years ago; I have a runny nose"
    assert decide_urgency(text, [], matcher.match(text)).level == "self_care"


# --- negation and history applied to the urgency head (triage.urgency.respect_mentions) -------------------------
from triage.urgency import UrgencyModel, discount_text, model_outranks_flags, respect_mentions  # noqa: E402

THRESHOLDS = {"emergency": 0.5, "urgent": 0.5, "self_care": 0.5}
ALARM = UrgencyModel({"emergency": 0.8, "urgent": 0.1, "routine": 0.05, "self_care": 0.05}, THRESHOLDS, "v")
CALM = UrgencyModel({"emergency": 0.02, "urgent": 0.08, "routine": 0.6, "self_care": 0.3}, THRESHOLDS, "v")


def test_blocked_mentions_are_the_rules_that_context_stopped(matcher):
    text = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    assert matcher.match(text) == []
    [mention] = matcher.blocked_mentions(text)
    assert mention.rule_id == "stroke_fast" and mention.urgency == "emergency"
    assert "stroke" in mention.matched[0].text
    # a mention that fired is a red flag, not a blocked mention
    live = "he is having a stroke right now, his face has dropped"
    assert matcher.match(live) and matcher.blocked_mentions(live) == []


def test_discount_text_removes_only_the_mentions(matcher):
    text = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    clean = discount_text(text, matcher.blocked_mentions(text))
    assert clean is not None and "stroke" not in clean and "dizzy" in clean and "my dad" in clean
    assert discount_text("I feel a bit dizzy", []) is None


def test_model_outranks_flags():
    assert model_outranks_flags(ALARM, [])
    assert not model_outranks_flags(ALARM, [_flag("emergency")])
    assert model_outranks_flags(ALARM, [_flag("urgent")])
    assert not model_outranks_flags(CALM, [])


def test_a_denied_presentation_cannot_raise_the_level_by_itself(matcher):
    text = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    seen = []

    def rescore(clean):
        seen.append(clean)
        return CALM

    out = respect_mentions(text, matcher.match(text), ALARM, matcher, rescore)
    assert len(seen) == 1 and "stroke" not in seen[0]
    assert out.probabilities == CALM.probabilities and "stroke_fast" in out.note and "0.80" in out.note
    decision = decide_urgency(text, [], [], model=out)
    assert decision.level == "routine" and "without the denied" in decision.reasons[0]


def test_respect_mentions_leaves_everything_else_alone(matcher):
    def never(_):
        raise AssertionError("must not re-score")

    live = "he is having a stroke right now, his face has dropped"
    assert respect_mentions(live, matcher.match(live), ALARM, matcher, never) is ALARM  # a red flag fired
    plain = "I feel really dizzy and sick today"
    assert respect_mentions(plain, matcher.match(plain), ALARM, matcher, never) is ALARM  # nothing denied
    denied = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    assert respect_mentions(denied, [], CALM, matcher, never) is CALM  # the head does not raise anything
    assert respect_mentions(denied, [], None, matcher, never) is None
    # the re-score failing keeps the full-text (more urgent) reading
    assert respect_mentions(denied, [], ALARM, matcher, lambda _: None) is ALARM


def test_the_reading_without_denied_mentions_never_raises_the_level(matcher):
    text = "my dad had a stroke 5 years ago, today I feel a bit dizzy"
    urgent = UrgencyModel({"emergency": 0.3, "urgent": 0.4, "routine": 0.2, "self_care": 0.1}, THRESHOLDS, "v")
    assert respect_mentions(text, [], urgent, matcher, lambda _: ALARM) is urgent
    lowered = respect_mentions(text, [], urgent, matcher, lambda _: CALM)
    assert lowered.probabilities == CALM.probabilities
