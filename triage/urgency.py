"""Urgency of a triage message: cited red flags, the learned urgency head, and a few documented rules.

Levels, most to least urgent: ``emergency`` (999 / A&E now), ``urgent`` (same-day clinical
contact: NHS 111, urgent GP, maternity unit), ``routine`` (a GP appointment), ``self_care``
(self-care or a pharmacist).

One decision policy: every source proposes a level and **the more urgent wins**; the answer's first reason names
what set it (``UrgencyDecision.source``: ``red_flag:<rule_id>``, ``model``, ``rule:<name>`` or ``default``).

Sources:

- red flags (cited table, negation/history aware): ``emergency`` or ``urgent``;
- the urgency head of the triage model (``model`` argument: probabilities per level from the same encoder pass as
  the centers, and the thresholds chosen on validation): ``model_level`` below - emergency when
  p(emergency) >= t_emergency, urgent when p(emergency) + p(urgent) >= t_urgent, else the likelier of routine and
  self-care (self-care only when p(self_care) >= t_self_care);
- safety-net rules that only raise (each says why):
  1. fever or infection words in someone NICE lists as more vulnerable to sepsis (a baby under 1 year, a person
     over 75, pregnancy) - NICE NG51, "Who is more at risk of sepsis?"; NG51 1.1.6 asks remote assessors to
     weigh these factors when setting the urgency of a face-to-face assessment      -> ``urgent``
  2. a temperature reading of 39.0C or more - heuristic, borrowed from the NICE NG143 amber threshold for
     infants (not an adult guideline)                                                   -> ``urgent``
  3. severe-pain or rapid-worsening words ("severe", "unbearable", "excruciating", "getting worse quickly")
     - heuristic                                                                        -> ``urgent``
- without an urgency head (an older artifact, or ``centers=[]`` evaluations) the lower levels come from rules:
  4. long duration or recurrence ("for months", "keeps coming back") - SWASFT/NHS "which service": GP for
     symptoms that won't go away                                                        -> ``routine``
  5. minor-illness words with nothing above (cold, runny nose, mild, minor graze...) - SWASFT/NHS "which
     service": self-care for grazed knees, coughs and colds; pharmacy for headaches, upset stomachs, aches
     and pains                                                                          -> ``self_care``
  6. otherwise                                                                          -> ``routine``

Words count only when not negated ("no fever", "not severe").  The classifier's ``centers`` are
optional: the rules above do not depend on them; when given, the top center is recorded in the reasons for
audit only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Callable

from triage.mentions import context_scopes, removable_spans
from triage.redflags import FlagHit, RedFlagMatcher, default_matcher
from triage.taxonomy import URGENCY_LEVELS, Urgency  # noqa: F401 - re-exported

SOURCE_NG51 = "NICE NG51 Sepsis, 'Who is more at risk of sepsis?' (https://www.nice.org.uk/guidance/ng51/ifp/chapter/Who-is-more-at-risk-of-sepsis)"
SOURCE_SWAST = "SWASFT NHS 'When to call 999 - which service should I access?' (https://www.swast.nhs.uk/when-to-call-999)"

_NEG = r"(?:\bno\b|\bnot\b|n't\b|\bnever\b|\bwithout\b|\bdenies\b|\bnor\b)"

FEVER_WORDS = r"\b(?:fever|feverish|high temperature|temperature of|temp of|infection|infected|pyrexia|burning up)\b"
SEVERE_WORDS = (
    r"\b(?:severe|severely|unbearable|excruciating|agoni[sz]ing|agony|worst pain|intense pain|"
    r"(?:really|very|extremely) (?:bad|painful|severe)|can'?t (?:walk|move|stand) (?:because of|from|with) (?:the )?pain|"
    r"getting worse (?:fast|quickly|rapidly|by the hour)|rapidly (?:getting )?worse|worse and worse)\b"
)
DURATION_WORDS = (
    r"\b(?:for (?:several |many |a few |the (?:past|last) )?(?:\d+ |two |three |four |five |six |several |many )?"
    r"(?:months|years)|for (?:over |more than )?a (?:year|month)|since (?:last )?(?:year|january|february|march|april|"
    r"may|june|july|august|september|october|november|december|childhood)|"
    r"keeps? coming back|comes and goes|on and off|recurring|recurrent|chronic|long[- ]term|for ages|for a long time)\b"
)
MINOR_WORDS = (
    r"\b(?:mild|mildly|slight|slightly|minor|a (?:little|bit)|common cold|a cold|runny nose|blocked nose|stuffy nose|"
    r"sniffles?|sneez\w*|sore throat|tickly cough|graze[ds]?|small cut|paper cut|insect bite|bite|sunburn|dandruff|"
    r"chapped|dry skin|hay ?fever|hangover|athlete'?s foot|verruca|wart|cold sore|mouth ulcer|indigestion|heartburn)\b"
)


def _find(pattern: str, text: str) -> str | None:
    """First occurrence of pattern in text that is not negated within the preceding four words."""
    for m in re.finditer(pattern, text, flags=re.IGNORECASE):
        before = text[max(0, m.start() - 40) : m.start()]
        window = " ".join(re.split(r"[.!?;,]| but ", before)[-1].split()[-4:])
        if re.search(_NEG, window, flags=re.IGNORECASE):
            continue
        return m.group(0)
    return None


@dataclass(frozen=True)
class UrgencyDecision:
    level: str
    reasons: list[str]
    source: str = "default"  # what set the level: red_flag:<rule_id>, model, rule:<name> or default
    probabilities: dict[str, float] | None = None  # the urgency head's, when one ran


@dataclass(frozen=True)
class UrgencyModel:
    """The urgency head's output for one text: probability per level and the thresholds it was tuned with."""

    probabilities: dict[str, float]
    thresholds: dict[str, float]
    version: str | None = None
    evidence: dict[str, dict] | None = None  # level -> closest cited presentation {text, source, similarity}
    note: str | None = None  # set when the probabilities were taken on the text without denied/past mentions


def model_level(model: UrgencyModel) -> tuple[str, str]:
    """(level, reason) from the urgency head: under-triage costs more than over-triage, so the thresholds for the
    two urgent levels are chosen on validation for recall (emergency recall >= 99% there)."""
    p = model.probabilities
    t = model.thresholds
    pe, pu = p.get("emergency", 0.0), p.get("urgent", 0.0)
    te, tu, ts = t.get("emergency", 0.5), t.get("urgent", 0.5), t.get("self_care", 0.5)
    tag = f"urgency model{' ' + model.version if model.version else ''}"

    def cite(level: str) -> str:
        e = (model.evidence or {}).get(level)
        return (f"; closest cited presentation: {e['text']!r} [{e['source']}] (similarity {e['similarity']:.2f})"
                if e else "")

    note = f" ({model.note})" if model.note else ""
    if pe >= te:
        return "emergency", f"{tag}: p(emergency)={pe:.2f} >= threshold {te:.2f}{cite('emergency')}{note}"
    if pe + pu >= tu:
        return "urgent", f"{tag}: p(emergency)+p(urgent)={pe + pu:.2f} >= threshold {tu:.2f}{cite('urgent')}{note}"
    ps = p.get("self_care", 0.0)
    if ps >= ts and ps >= p.get("routine", 0.0):
        return "self_care", f"{tag}: p(self_care)={ps:.2f} >= threshold {ts:.2f}{note}"
    return "routine", f"{tag}: p(routine)={p.get('routine', 0.0):.2f}, p(self_care)={ps:.2f}{note}"


# ---------------------------------------------------------------------------------------------
# negation and history for the model, too

_RANK = {level: i for i, level in enumerate(reversed(URGENCY_LEVELS))}  # self_care 0 ... emergency 3
DISCOUNTED_LEVELS = ("emergency", "urgent")


def discount_text(text: str, mentions: list[FlagHit], extra: list[tuple[int, int]] = ()) -> str | None:
    """``text`` without the words of the given mentions of urgent or emergency presentations (the spans the red-flag
    matcher found negated, hypothetical, in the past or in someone else) and without the ``extra`` character spans
    (``triage.mentions`` scopes), or None when there is nothing to remove."""
    spans = sorted({(s.start, s.end) for h in mentions if h.urgency in DISCOUNTED_LEVELS for s in h.matched}
                   | {(a, b) for a, b in extra if b > a})
    if not spans:
        return None
    out, pos = [], 0
    for start, end in spans:
        if start > pos:
            out.append(text[pos:start])
        pos = max(pos, end)
    out.append(text[pos:])
    clean = re.sub(r"\s+", " ", " ".join(out)).strip()
    clean = re.sub(r"(?:\s*[,;:\-\u2013\u2014]\s*){2,}", ", ", clean)  # "no rash, no fever - headache" -> ", headache"
    clean = re.sub(r"^[\s,;:.\-\u2013\u2014]+", "", clean).strip()
    if not clean:
        return None
    return clean if clean != text.strip() else None


def model_outranks_flags(model: UrgencyModel, flags: list[FlagHit]) -> bool:
    """True when the urgency head alone would set the level at urgent or above, higher than every red flag."""
    level, _ = model_level(model)
    top = max((_RANK[str(f.urgency)] for f in flags if str(f.urgency) in _RANK), default=-1)
    return _RANK[level] >= _RANK["urgent"] and _RANK[level] > top


def respect_mentions(
    text: str,
    flags: list[FlagHit],
    model: UrgencyModel | None,
    matcher: RedFlagMatcher,
    rescore: Callable[[str], UrgencyModel | None],
    *,
    age_years: float | None = None,
    sex: str | None = None,
    pregnant: bool | None = None,
    scopes: bool = False,
) -> UrgencyModel | None:
    """The red flags' negation / history rules, and the same idea for any finding, applied to the urgency head.

    When the head alone would raise the level (no red flag at that level fired) and the text mentions something
    only as denied, resolved, hypothetical, past or someone else's - a cited presentation the red-flag matcher
    stopped ("no stiff neck") or, with ``scopes`` (opt-in, the service's RXT_NEGATION_SCOPES), any finding in a NegEx-style scope of
    ``triage.mentions`` ("nil CP", "my nan had a stroke last week", "worried I might have meningitis", "covid -ve") -
    the head is asked again (``rescore``, one more encoder pass, for these texts only) on the text without those
    words. Its answer there stands unless it is more urgent than the full-text one (removing words removes evidence,
    so that reading is kept): a denied presentation cannot raise the level by itself. Words a red flag fired on are
    never removed, and a red flag that fired is never touched (it is a proposal of its own)."""
    if model is None or not model_outranks_flags(model, flags):
        return model
    mentions = matcher.blocked_mentions(text, age_years=age_years, sex=sex, pregnant=pregnant, fired=flags)
    protect = [(sp.start, sp.end) for h in flags for sp in h.matched]
    found = context_scopes(text) if scopes else []
    extra = removable_spans(text, protect, matcher.is_finding_word, found) if found else []
    clean = discount_text(text, mentions, extra)
    if clean is None:
        return model
    again = rescore(clean)
    if again is None or _RANK[model_level(again)[0]] > _RANK[model_level(model)[0]]:
        return model  # removing a denied mention removes evidence: it never raises the level
    ids = sorted({h.rule_id for h in mentions if h.urgency in DISCOUNTED_LEVELS})
    kinds = sorted({sc.kind for sc in found}) if extra else []
    what = ", ".join(ids + [f"{k} scope" for k in kinds])
    note = (f"scored without the denied / past mention(s) of {what}; on the full text p(emergency) was "
            f"{model.probabilities.get('emergency', 0.0):.2f}")
    return replace(again, note=note)



def decide_urgency(
    text: str,
    centers: list[tuple[str, float]],
    flags: list[FlagHit],
    *,
    age_years: float | None = None,
    pregnant: bool | None = None,
    model: UrgencyModel | None = None,
    matcher: RedFlagMatcher | None = None,
) -> UrgencyDecision:
    """``matcher``: the caller's red-flag matcher, whose reading of pregnancy in the text the sepsis risk group uses
    (default: the process-wide default matcher, built on first use)."""
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    pairs: list[tuple[str, float]] = []
    for pair in centers or []:
        try:
            center, prob = pair
            pairs.append((str(center), float(prob)))  # numpy floats welcome
        except (TypeError, ValueError):
            raise ValueError(f"centers must be (center_id, probability) pairs, got {pair!r}") from None
    reasons: list[str] = []
    if pairs:
        top = max(pairs, key=lambda cp: cp[1])
        reasons.append(f"model top center {top[0]} ({top[1]:.2f}) recorded; urgency rules do not use it")

    proposals: list[tuple[str, str, list[str]]] = []  # (level, source, reasons), in order of precedence
    emergency = [f for f in flags if f.urgency == "emergency"]
    if emergency:
        proposals.append(("emergency", f"red_flag:{emergency[0].rule_id}",
                          [f"red flag {f.rule_id}: {f.label} [{f.source}]" for f in emergency]))
    urgent = [f for f in flags if f.urgency == "urgent"]
    if urgent:
        proposals.append(("urgent", f"red_flag:{urgent[0].rule_id}",
                          [f"red flag {f.rule_id}: {f.label} [{f.source}]" for f in urgent]))
    if model is not None:
        level, why = model_level(model)
        proposals.append((level, "model", [why]))

    age_months = age_years * 12 if age_years is not None else RedFlagMatcher.text_age_months(text)
    fever = _find(FEVER_WORDS, text)
    temps = RedFlagMatcher.text_temperatures_c(text)
    if fever or (temps and max(temps) >= 38.0):
        vulnerable = []
        if age_months is not None and age_months < 12:
            vulnerable.append("baby under 1 year")
        if age_months is not None and age_months > 75 * 12:
            vulnerable.append("over 75")
        # the matcher's reading: "I'm 30 weeks" and "34+2" count, "not pregnant" and "when I was pregnant" do not
        if pregnant is True or (matcher or default_matcher()).text_pregnant(text):
            vulnerable.append("pregnant")
        if vulnerable:
            proposals.append(("urgent", "rule:sepsis_risk_group",
                              [f"fever/infection ({fever or max(temps)}) in a group at higher risk of sepsis: "
                               f"{', '.join(vulnerable)} [{SOURCE_NG51}]"]))
    if temps and max(temps) >= 39.0:
        proposals.append(("urgent", "rule:temperature",
                          [f"temperature reading {max(temps)}C >= 39.0C (heuristic, NICE NG143 amber threshold)"]))
    severe = _find(SEVERE_WORDS, text)
    if severe:
        proposals.append(("urgent", "rule:severity_words", [f"severity/worsening words: {severe!r} (heuristic)"]))
    if model is None:
        duration = _find(DURATION_WORDS, text)
        minor = _find(MINOR_WORDS, text)
        if duration:
            proposals.append(("routine", "rule:long_standing",
                              [f"long-standing or recurring: {duration!r} -> GP for symptoms that won't go away "
                               f"[{SOURCE_SWAST}]"]))
        elif minor:
            proposals.append(("self_care", "rule:minor_illness",
                              [f"minor-illness words: {minor!r} -> self-care or pharmacy [{SOURCE_SWAST}]"]))
        else:
            proposals.append(("routine", "default",
                              ["no red flag or urgency modifier: routine GP assessment (default)"]))
    probabilities = None if model is None else dict(model.probabilities)
    # the more urgent wins; among equals the first proposal (red flags, then the model, then rules)
    best = max(range(len(proposals)), key=lambda i: (_RANK[proposals[i][0]], -i))
    level, source, why = proposals[best]
    if model is not None and source != "model":  # say what the model thought when it did not decide
        why = why + [r for lvl, src, rs in proposals if src == "model" for r in rs]
    return UrgencyDecision(level, why + reasons, source, probabilities)
