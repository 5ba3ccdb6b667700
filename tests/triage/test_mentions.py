"""Denied, past, someone else's and hypothetical mentions of any finding (triage.mentions), and what the urgency head
does with them (triage.urgency.respect_mentions): issue 11, negated / history mentions raised to emergency.

Every text here is written for these tests (none is a blind-set row)."""

from __future__ import annotations

import pytest

from triage.mentions import context_scopes, removable_spans
from triage.redflags import RedFlagMatcher
from triage.urgency import UrgencyModel, decide_urgency, respect_mentions

THRESHOLDS = {"emergency": 0.5, "urgent": 0.5, "self_care": 0.5}
ALARM = UrgencyModel({"emergency": 0.8, "urgent": 0.1, "routine": 0.05, "self_care": 0.05}, THRESHOLDS, "v")
CALM = UrgencyModel({"emergency": 0.02, "urgent": 0.08, "routine": 0.6, "self_care": 0.3}, THRESHOLDS, "v")


@pytest.fixture(scope="module")
def matcher() -> RedFlagMatcher:
    return RedFlagMatcher()


def _scoped(text: str) -> dict[str, str]:
    return {text[s.start : s.end]: s.kind for s in context_scopes(text)}


@pytest.mark.parametrize("text, span, kind", [
    ("no temperature but my chest feels tight", "no temperature", "negated"),
    ("Nil CP. Sore knee after football", "Nil CP", "negated"),
    ("denies SI/SH, low mood for weeks", "denies SI/SH", "negated"),
    ("I don't have a headache, just a sore ear", "don't have a headache", "negated"),
    ("im not suicidal, just exhausted", "im not suicidal", "negated"),
    ("FHx MI (dad). wants cholesterol check", "FHx MI", "family"),
    ("my grandad had a heart attack on friday and I'm upset", "my grandad had a heart attack on friday", "family"),
    ("heart trouble runs in my family, I'm 35 and well", "heart trouble runs in my family", "family"),
    ("my aunt is in hospital with pneumonia, can I visit with a cold", "my aunt is in hospital with pneumonia",
     "family"),
    ("Hx DVT 2017. Now coryzal", "Hx DVT 2017", "history"),
    ("I had a seizure when I was 12, need my repeat", "I had a seizure when I was 12", "history"),
    ("worried it might be a clot but it's just a bruise", "worried it might be a clot", "hypothetical"),
    ("what if it's meningitis? she's playing happily", "what if it's meningitis", "hypothetical"),
    ("had palpitations at the weekend but not anymore", "had palpitations at the weekend but not anymore", "resolved"),
    ("flu -ve, achy", "flu -ve", "resolved"),
])
def test_scopes_cover_the_denied_or_past_finding(text, span, kind):
    assert _scoped(text).get(span) == kind, _scoped(text)


@pytest.mark.parametrize("text, live", [
    ("he's not breathing properly", "breathing"),
    ("she isn't responding to me", "responding"),
    ("he's not making sense", "sense"),
    ("I can't breathe", "breathe"),
    ("no wet nappy since last night", "wet nappy"),
    ("hasn't had a wee all day", "wee"),
    ("no feeling in my legs", "feeling"),
    ("I can no longer feel my left arm", "feel my left arm"),
    ("it never stops bleeding", "bleeding"),
    ("she isn't getting enough air", "air"),
    ("wasn't really trying to die, took 30 tablets", "trying to die"),  # a hedge, not a denial
])
def test_findings_written_with_a_negation_word_are_not_scopes(text, live):
    for s in context_scopes(text):
        assert live not in text[s.start : s.end], (text, text[s.start : s.end])


@pytest.mark.parametrize("text, kept", [
    ("no fever but I can't breathe properly and my lips are blue", "my lips are blue"),
    ("my dad has never had a stroke, but right now his speech is slurred", "his speech is slurred"),
    ("I had a stroke in 2019 and now my face has dropped again", "my face has dropped again"),
    ("not dizzy, no headache, but suddenly I can't get my words out", "I can't get my words out"),
    ("nobody in my family has heart disease and I'm 38, but crushing chest pain for 30 minutes",
     "crushing chest pain for 30 minutes"),
    ("my dad had a stroke an hour ago, his face is drooping", "my dad had a stroke an hour ago"),
    ("my husband's had a chest infection and since this morning he's confused", "he's confused"),
])
def test_terminators_keep_the_live_emergency_out_of_the_scope(text, kept):
    for s in context_scopes(text):
        assert not (s.start < text.index(kept) + len(kept) and text.index(kept) < s.end), (text[s.start : s.end], kept)


def test_scopes_stay_near_their_trigger():
    text = "no cough " + "and then I walked a very long way to the shops in the rain with my dog " * 3
    [scope] = context_scopes(text)
    assert len(text[scope.start : scope.end].split()) <= 10


def test_removable_spans_never_cut_into_fired_words_and_need_a_named_finding(matcher):
    text = "no rash, but his face is drooping"
    assert [text[a:b] for a, b in removable_spans(text)] == ["no rash"]
    fired = [(sp.start, sp.end) for h in matcher.match(text) for sp in h.matched]
    assert fired and all(not (a < fb and fa < b) for a, b in removable_spans(text, fired) for fa, fb in fired)
    # a scope that names no finding only dilutes the text: it is not removed
    assert removable_spans("i dont know why im even typing this", (), matcher.is_finding_word) == []
    assert removable_spans("not sure why I'm writing", (), matcher.is_finding_word) == []
    assert [text[a:b] for a, b in removable_spans(text, (), matcher.is_finding_word)] == ["no rash"]


def test_finding_words_are_the_tables_content_words(matcher):
    assert matcher.is_finding_word("stroke") and matcher.is_finding_word("Seizures")
    assert matcher.is_finding_word("CP") and matcher.is_finding_word("SOB")  # clinician shorthand
    assert not matcher.is_finding_word("the") and not matcher.is_finding_word("because")


# --- the urgency head -------------------------------------------------------------------------------------------------
def _head(seen: list[str], alarming: tuple[str, ...]):
    """A stand-in for the urgency head's second pass: an emergency reading while an alarming phrase is left."""
    def rescore(clean: str) -> UrgencyModel:
        seen.append(clean)
        return ALARM if any(a in clean.lower() for a in alarming) else CALM
    return rescore


@pytest.mark.parametrize("text, gone", [
    ("nil CP, nil SOB. chesty cough for 5 days after a cold", "CP"),
    ("my nan had a stroke last week and now I'm getting tension headaches", "stroke"),
    ("worried I might have meningitis but it's just a cold", "meningitis"),
    ("covid -ve, just achy and bunged up", "covid"),
    ("had chest pain after the gym but not anymore, fine now", "chest pain"),
])
def test_a_trap_the_head_alone_raised_is_rescored_without_its_denied_words(matcher, text, gone):
    seen: list[str] = []
    out = respect_mentions(text, matcher.match(text), ALARM, matcher,
                           _head(seen, ("cp", "stroke", "meningitis", "covid", "chest pain")), scopes=True)
    assert len(seen) == 1 and gone.lower() not in seen[0].lower()
    assert decide_urgency(text, [], matcher.match(text), model=out).level != "emergency"


@pytest.mark.parametrize("text, live", [
    ("no fever but I can't breathe properly and my lips are blue", "lips are blue"),
    ("he doesn't have asthma, but after the wasp sting his tongue is swelling", "tongue is swelling"),
    ("my dad has never had a stroke, but right now his speech is slurred", "speech is slurred"),
    ("not pregnant as far as I know, sudden agony low on one side and I fainted", "sudden agony"),
    ("Denies CP. vomited blood twice tonight, dizzy on standing", "vomited blood"),
])
def test_a_real_emergency_beside_a_negation_stays_an_emergency(matcher, text, live):
    seen: list[str] = []
    out = respect_mentions(text, matcher.match(text), ALARM, matcher, _head(seen, (live,)), scopes=True)
    assert all(live in s for s in seen)  # the live finding is never removed
    assert decide_urgency(text, [], matcher.match(text), model=out).level == "emergency"


def test_scopes_are_opt_in_and_a_fired_flag_is_never_rescored(matcher):
    text = "nil CP, nil SOB. chesty cough for 5 days after a cold"

    def never(_):
        raise AssertionError("must not re-score")

    assert respect_mentions(text, matcher.match(text), ALARM, matcher, never, scopes=False) is ALARM
    assert respect_mentions(text, matcher.match(text), ALARM, matcher, never) is ALARM  # off by default
    live = "no fever, but his face has dropped and he can't lift his arm"
    assert matcher.match(live)
    assert respect_mentions(live, matcher.match(live), ALARM, matcher, never, scopes=True) is ALARM


def test_the_rescored_reading_names_the_scopes_it_removed(matcher):
    text = "FHx CVA. asymptomatic, wants a BP check"
    out = respect_mentions(text, matcher.match(text), ALARM, matcher, lambda _: CALM, scopes=True)
    assert "family scope" in out.note and "0.80" in out.note


# --- red-flag rules that fired on negated or past phrasing ------------------------------------------------------------
@pytest.mark.parametrize("text", [
    "my arm isn't weak and my face is not drooping",
    "PMH: anaphylaxis to nuts, needs repeat antihistamine",
    "h/o seizures, none for 5 years",
    "worried I might be having a stroke but my face and arms are fine",
])
def test_red_flags_do_not_fire_on_denied_or_past_phrasing(matcher, text):
    assert matcher.match(text) == []


@pytest.mark.parametrize("text, rule", [
    ("I can not lift my arm", "stroke_fast"),
    ("no headache but his face has dropped on one side", "stroke_fast"),
    ("PMH: stroke. Now face drooping since 10 minutes", "stroke_fast"),
    ("I think he might be having a stroke, his face has dropped", "stroke_fast"),
])
def test_red_flags_still_fire_beside_a_negation(matcher, text, rule):
    assert rule in [h.rule_id for h in matcher.match(text)]
