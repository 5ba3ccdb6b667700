"""Urgency of a triage message: red flags first, then a small documented rule set.

Levels, most to least urgent: ``emergency`` (999 / A&E now), ``urgent`` (same-day clinical
contact: NHS 111, urgent GP, maternity unit), ``routine`` (a GP appointment), ``self_care``
(self-care or a pharmacist).

Decision order (the first that applies wins; every step adds a human-readable reason):

1. any emergency red flag                                  -> ``emergency``
2. any urgent red flag                                     -> ``urgent``
3. fever or infection words in someone NICE lists as more vulnerable to sepsis (a baby under
   1 year, a person over 75, pregnancy) - NICE NG51, "Who is more at risk of sepsis?"; NG51 1.1.6
   asks remote assessors to weigh these factors when setting the urgency of a face-to-face
   assessment                                              -> ``urgent``
4. a temperature reading of 39.0C or more - heuristic, borrowed from the NICE NG143 amber
   threshold for infants (not an adult guideline)           -> ``urgent``
5. severe-pain or rapid-worsening words ("severe", "unbearable", "excruciating", "getting worse
   quickly") - heuristic                                   -> ``urgent``
6. long duration or recurrence ("for months", "for years", "keeps coming back") - SWASFT/NHS
   "which service": GP for symptoms that won't go away      -> ``routine``
7. minor-illness words with nothing above (cold, runny nose, mild, minor graze...) - SWASFT/NHS
   "which service": self-care for grazed knees, coughs and colds; pharmacy for headaches, upset
   stomachs, aches and pains                               -> ``self_care``
8. otherwise                                                -> ``routine``

Words count only when not negated ("no fever", "not severe").  The classifier's ``centers`` are
optional: the rules above do not depend on them (AcuityBench is measured with ``centers=[]``);
when given, the top center is recorded in the reasons for audit only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from triage.redflags import FlagHit, RedFlagMatcher
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


def decide_urgency(
    text: str,
    centers: list[tuple[str, float]],
    flags: list[FlagHit],
    *,
    age_years: float | None = None,
    pregnant: bool | None = None,
) -> UrgencyDecision:
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

    emergency = [f for f in flags if f.urgency == "emergency"]
    if emergency:
        return UrgencyDecision(
            "emergency", [f"red flag {f.rule_id}: {f.label} [{f.source}]" for f in emergency] + reasons
        )
    urgent = [f for f in flags if f.urgency == "urgent"]
    if urgent:
        return UrgencyDecision("urgent", [f"red flag {f.rule_id}: {f.label} [{f.source}]" for f in urgent] + reasons)

    age_months = age_years * 12 if age_years is not None else RedFlagMatcher.text_age_months(text)
    fever = _find(FEVER_WORDS, text)
    temps = RedFlagMatcher.text_temperatures_c(text)
    if fever or (temps and max(temps) >= 38.0):
        vulnerable = []
        if age_months is not None and age_months < 12:
            vulnerable.append("baby under 1 year")
        if age_months is not None and age_months > 75 * 12:
            vulnerable.append("over 75")
        if pregnant is True or re.search(r"\bpregnan", text, flags=re.IGNORECASE):
            vulnerable.append("pregnant")
        if vulnerable:
            return UrgencyDecision(
                "urgent",
                [f"fever/infection ({fever or max(temps)}) in a group at higher risk of sepsis: "
                 f"{', '.join(vulnerable)} [{SOURCE_NG51}]"] + reasons,
            )
    if temps and max(temps) >= 39.0:
        return UrgencyDecision(
            "urgent", [f"temperature reading {max(temps)}C >= 39.0C (heuristic, NICE NG143 amber threshold)"] + reasons
        )
    severe = _find(SEVERE_WORDS, text)
    if severe:
        return UrgencyDecision("urgent", [f"severity/worsening words: {severe!r} (heuristic)"] + reasons)
    duration = _find(DURATION_WORDS, text)
    if duration:
        return UrgencyDecision(
            "routine", [f"long-standing or recurring: {duration!r} -> GP for symptoms that won't go away [{SOURCE_SWAST}]"] + reasons
        )
    minor = _find(MINOR_WORDS, text)
    if minor:
        return UrgencyDecision(
            "self_care", [f"minor-illness words: {minor!r} -> self-care or pharmacy [{SOURCE_SWAST}]"] + reasons
        )
    return UrgencyDecision("routine", ["no red flag or urgency modifier: routine GP assessment (default)"] + reasons)
