"""Denied, past, someone else's and hypothetical mentions of *any* finding (NegEx-style scopes over the sentence).

The red-flag matcher knows negation and history only around the presentations of its 65 rules
(``RedFlagMatcher.blocked_mentions``).  The urgency head reads every word, so "nil CP", "my nan had a stroke last week",
"worried I might have meningitis" or "covid -ve" raise it as much as the live findings do, and a rule-bound list of
spans to remove misses most of them (issue 11: 28-33% of the blind traps went to emergency with every head).

:func:`context_scopes` finds, for any finding, the character spans a reader would not count as present now:

* ``negated`` - a trigger ("no", "nil", "never", "without", "denies", "don't have", "not having", "free of",
  "-ve for", "NAD", ...) and the words after it up to a terminator;
* ``resolved`` - a post-trigger ("... but not anymore", "... ruled out", "covid -ve", "tested negative") and the words
  before it back to a terminator;
* ``history`` - a clause with a past marker ("years ago", "last year", "in 2016", "as a kid", "when I was 17",
  "history of", "PMH", "used to") and no recency marker ("now", "today", "again", "minutes ago");
* ``family`` - a clause with a family-history marker ("FHx", "family history", "runs in the family") or about
  someone else in the past or already in hospital ("my dad had a stroke", "my flatmate was taken in with sepsis",
  "my sister's baby is in hospital"), with no recency marker;
* ``hypothetical`` - "worried I might have", "what if", "in case", "signs of", "what are the symptoms of",
  "could it be", "I read that" and the words after it up to a terminator.

Terminators end a scope: sentence punctuation, ``;``, ``:``, a comma, a dash between spaces, brackets, a new line, and
the words "but", "however", "although", "though", "except", "yet", "whereas", "instead", "apart", "just", "only",
"still", "now", "since", "then", "so", "because", "cos", "while", "whilst", and "and" followed by a new subject
("and my", "and now", "and I'm").

Findings that are written *with* a negation word are never triggers: "can't breathe", "won't wake", "not breathing",
"not making sense", "no wet nappy", "no feeling in my legs", "can no longer walk".  Callers remove these scopes only
to *re-score* a text whose level the urgency head alone raised, keep the full-text reading when the re-scored one is
more urgent, and never remove words a red flag fired on (``triage.urgency.respect_mentions``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

KINDS = ("negated", "resolved", "history", "family", "hypothetical")
SCOPE_WINDOW = 8  # words a trigger reaches (NegEx uses 5-6; lists such as "no fever, cough or rash" end at the comma)


@dataclass(frozen=True)
class Scope:
    start: int  # character offsets into the original text
    end: int
    kind: str
    trigger: str


_WORD = re.compile(r"[a-z0-9]+(?:['\u2019/][a-z0-9]+)*|-ve\b|[.!?;:,()\n]|\s[-\u2013\u2014]+\s|\.{2,}|\u2026", re.I)

TERMINATOR_WORDS = frozenset({
    "but", "however", "although", "though", "except", "yet", "whereas", "instead", "apart", "just", "only", "still",
    "now", "since", "then", "so", "because", "cos", "coz", "while", "whilst", "today", "tonight", "suddenly",
    "currently", "anyway", "besides", "otherwise", "unfortunately", "what", "which", "who",
})
AND_SUBJECTS = frozenset({
    "i", "i'm", "im", "i've", "ive", "my", "me", "he", "he's", "hes", "she", "she's", "shes", "it", "it's", "its",
    "they", "we", "his", "her", "their", "the", "there", "this", "that", "now", "today", "then", "suddenly", "again",
    "since", "am", "our", "your", "you", "tonight",
})
PUNCT_BREAKS = frozenset({".", "!", "?", ";", ":", ",", "(", ")", "\n", "...", "\u2026"})

# prefix negation: the words after the trigger, up to a terminator, are not present
NEG_TRIGGERS = [
    "no", "nil", "never", "without", "denies", "denied", "deny", "denying", "neither", "nor", "none",
    "free of", "negative for", "-ve for", "neg for", "no sign of", "no signs of", "no history of", "no hx of",
    "not had", "not having", "not got", "not get", "not getting", "not feeling", "not experiencing", "not noticed",
    "haven't had", "haven't got", "haven't noticed", "haven't felt", "haven't been", "have not had", "have not got",
    "hasn't had", "hasn't got", "hasn't been", "has not had", "has not been", "hadn't had",
    "don't have", "do not have", "doesn't have", "does not have", "didn't have", "did not have",
    "don't get", "doesn't get", "don't feel", "didn't feel", "don't think i have", "don't think it's",
    "don't think its", "isn't", "is not", "wasn't", "was not", "aren't", "weren't", "i'm not", "im not",
    "i am not", "he's not", "hes not", "she's not", "shes not", "it's not", "its not", "not", "nobody in",
    "no one in",
]
# a negation word followed by these is a finding or an idiom, not a denial
NEG_EXCEPTIONS = (
    # "no ..." findings and idioms
    r"no (?:other|further|longer|response|responding|reaction to|pulse|urine|wee|wees|weeing|pee|peeing|wet|movements?|feeling|"
    r"sensation|control|strength|energy|air|breath|colour|color|better|improvement|change|idea|doubt|matter|way|"
    r"one (?:can|could|is)|end)\b",
    # hedges, not denials: "wasn't really trying to die", "not exactly painful"
    r"(?:not|isn'?t|wasn'?t|aren'?t|weren'?t|don'?t|doesn'?t|didn'?t|i'?m not|he'?s not|she'?s not|it'?s not) "
    r"(?:really|exactly|entirely|totally|completely|necessarily|quite|fully|always)\b",
    # "not ..." findings: the state itself is the emergency
    r"not (?:getting (?:enough|any)|react\w*|breath\w*|respond\w*|wak\w*|mov\w*|mak\w* sense|stop\w*|able|conscious|alert|right|normal|himself|"
    r"herself|themselves|myself|improv\w*|getting better|get better|going away|go away|settl\w*|keep\w*|feed\w*|"
    r"eat\w*|drink\w*|pass\w*|pee\w*|wee\w*|sure|certain|only|just|know|even sure|that bad|the same|well)\b",
    r"(?:isn'?t|is not|wasn'?t|was not|aren'?t|weren'?t|i'?m not|i am not|he'?s not|she'?s not|"
    r"it'?s not) (?:breath\w*|respond\w*|wak\w*|mov\w*|mak\w* sense|stop\w*|able|conscious|alert|right|"
    r"normal|himself|herself|improv\w*|getting better|going away|settl\w*|keep\w*|feed\w*|eat\w*|drink\w*|"
    r"pass\w*|pee\w*|wee\w*|sure|certain|well|good|ok|okay|the same|going|working|helping|easing|"
    r"getting (?:enough|any)|react\w*|focus\w*)\b",
    r"(?:not|hasn'?t|haven'?t|has not|have not|hadn'?t|didn'?t|did not|don'?t|doesn'?t) (?:had|have|done|passed|"
    r"made) (?:a |any |much )?(?:wee|pee|poo|wet|urine|nappy|nappies|drink|feed|anything to drink)\w*\b",
    r"(?:never|without) (?:stop\w*|end\w*|ease\w*|warning|any reason|reason|help)\b",
    r"(?:haven'?t|hasn'?t|have not|has not) been (?:able|awake|conscious|responsive|peeing|weeing|eating|drinking|"
    r"feeding|well|right)\b",
)
# post-negation: the words before the trigger, back to a terminator, are not present (any more)
POST_TRIGGERS = [
    "not anymore", "not any more", "no more", "no longer", "ruled out", "-ve", "neg", "negative",
    "was negative", "were negative", "came back negative", "came back clear", "was clear", "were clear",
    "all clear", "nad", "turned out to be", "turned out", "was nothing", "was fine", "were fine",
]
HISTORY_MARKERS = [
    "years ago", "year ago", "yrs ago", "yr ago", "last year", "last winter", "last summer", "decade ago",
    "as a kid", "as a child", "as a baby", "as a teenager", "as a teen", "when i was young", "when i was little",
    "when i was a kid", "when i was a child", "when i was a baby", "when i was a teenager", "when i was younger",
    "when i was pregnant", "in the past", "history of", "hx of", "hx", "h/o", "pmh", "phx", "pmhx", "used to",
    "once had", "childhood",
]
# a past time of its own makes someone else's illness past even when the sentence goes on about now
PAST_TIME = [
    "years ago", "year ago", "yrs ago", "months ago", "month ago", "weeks ago", "week ago", "days ago",
    "last year", "last month", "last week", "last winter", "last summer", "yesterday", "on monday", "on tuesday",
    "on wednesday", "on thursday", "on friday", "on saturday", "on sunday",
]
# the event is happening now: someone else's illness is not history
STRONG_RECENCY = [
    "minutes ago", "minute ago", "mins ago", "min ago", "hours ago", "hour ago", "hrs ago", "just now", "right now",
    "this morning", "this afternoon", "this evening", "tonight", "at the moment",
]
FAMILY_MARKERS = [
    "fhx", "fh of", "family history", "runs in the family", "runs in my family", "runs in our family",
    "run in the family", "run in my family", "in my family", "in the family",
]
# relatives and others whose past illness is history for the writer; the people a carer usually writes *for*
# (husband, wife, partner, son, daughter, baby, he, she) are left out on purpose: "my baby had a fit" is often now
_PEOPLE = ("father", "dad", "daddy", "mother", "mum", "mom", "mummy", "brother", "sister", "grandmother",
           "grandfather", "grandma", "grandpa", "nan", "nana", "nanna", "granny", "grandad", "granddad", "uncle",
           "aunt", "auntie", "cousin", "twin", "friend", "neighbour", "neighbor", "colleague", "flatmate", "housemate",
           "roommate", "classmate", "boss", "relative")
OTHER_PEOPLE = frozenset([*_PEOPLE, *(p + "s" for p in _PEOPLE), "parents", "family"])
PAST_WORDS = frozenset({"had", "died", "passed", "suffered", "survived", "diagnosed", "was", "were", "collapsed",
                        "taken", "rushed", "admitted"})
IN_HOSPITAL = ["in hospital", "in the hospital", "in a&e", "in intensive care", "in icu", "into hospital",
               "to hospital", "to a&e"]
RECENCY = [
    "now", "right now", "just now", "today", "tonight", "this morning", "this afternoon", "this evening",
    "minutes ago", "minute ago", "mins ago", "min ago", "hours ago", "hour ago", "hrs ago", "again", "currently",
    "at the moment", "still", "suddenly", "started", "since",
]
HYPOTHETICAL_TRIGGERS = [
    "worried i might have", "worried i may have", "worried i could have", "worried i might be",
    "worried it might be", "worried it may be", "worried it could be", "worried it's", "worried its",
    "worried that it's", "worried that it might be", "worried i've got", "worried ive got", "worried he might have",
    "worried she might have", "worried he's got", "worried she's got", "scared i might have", "scared it might be",
    "scared of having", "afraid of having", "afraid it might be", "scared of getting", "afraid of getting",
    "what if", "in case", "just in case", "what are the signs", "what are the symptoms", "know the signs",
    "look out for", "watch out for", "risk of", "risks of", "chance of", "could it be", "could this be", "might it be", "i read that",
    "i read", "i've read", "asking for", "how do i know if", "how can i tell if", "how would i know",
]


def _lower_same_length(text: str) -> str:
    return "".join(c.lower() if len(c.lower()) == 1 else c for c in text)


def _tokens(text: str) -> list[tuple[str, int, int]]:
    low = _lower_same_length(text).replace("\u2019", "'")
    out = []
    for m in _WORD.finditer(low):
        tok = m.group(0)
        if tok.strip() and tok.strip(" \u2013\u2014-") == "" and len(tok.strip()) >= 1 and tok != "-ve":
            tok = "-"  # a dash between spaces
        out.append(((tok.strip() or tok).replace("\u2019", "").replace("'", ""), m.start(), m.end()))
    return out


def _is_break(toks: list[tuple[str, int, int]], i: int) -> bool:
    """Token i ends a scope (it is itself excluded from the scope)."""
    tok = toks[i][0]
    if tok in PUNCT_BREAKS or tok == "-":
        return True
    if tok in TERMINATOR_WORDS:
        return True
    if tok in ("and", "&", "plus") and i + 1 < len(toks) and toks[i + 1][0] in AND_SUBJECTS:
        return True
    return False


def _match_at(words: list[str], i: int, phrase: list[str]) -> bool:
    return words[i : i + len(phrase)] == phrase


def _phrases(phrases: list[str]) -> list[list[str]]:
    out = []
    for p in phrases:
        out.append([t[0] for t in _tokens(p)])
    return sorted(out, key=len, reverse=True)


_NEG = _phrases(NEG_TRIGGERS)
_POST = _phrases(POST_TRIGGERS)
_HIST = _phrases(HISTORY_MARKERS)
_FAM = _phrases(FAMILY_MARKERS)
_HOSP = _phrases(IN_HOSPITAL)
_RECENT = _phrases(RECENCY)
_PAST_TIME = _phrases(PAST_TIME)
_STRONG = _phrases(STRONG_RECENCY)
_HYPO = _phrases(HYPOTHETICAL_TRIGGERS)
_NEG_EXCEPTIONS = [re.compile(p) for p in NEG_EXCEPTIONS]
_YEAR = re.compile(r"^(?:19|20)\d\d$")
_AGE_WHEN = re.compile(r"^\d{1,2}$")


def _marker_at(words: list[str], k: int, kind: str) -> bool:
    """Token k starts a history marker (kind history) or is a family marker / other person / past word (family)."""
    if kind == "history":
        return (any(_match_at(words, k, p) for p in _HIST if p != ["in", "the", "past"]) or bool(_YEAR.match(words[k]))
                or words[k : k + 3] == ["when", "i", "was"])
    return (any(_match_at(words, k, p) for p in _FAM) or words[k] in OTHER_PEOPLE or words[k] in PAST_WORDS
            or any(_match_at(words, k, p) for p in _HOSP))


def _clauses(toks) -> list[tuple[int, int]]:
    """Token ranges between breaks (the break tokens themselves belong to no clause)."""
    out, lo = [], 0
    for i in range(len(toks)):
        if _is_break(toks, i):
            if i > lo:
                out.append((lo, i))
            lo = i + 1
    if lo < len(toks):
        out.append((lo, len(toks)))
    return out


def _has(words: list[str], lo: int, hi: int, phrases: list[list[str]]) -> bool:
    return any(_match_at(words, i, p) and i + len(p) <= hi for i in range(lo, hi) for p in phrases)


def _span(toks, lo: int, hi: int, kind: str, trigger: str) -> Scope | None:
    if hi <= lo:
        return None
    return Scope(toks[lo][1], toks[hi - 1][2], kind, trigger)


def context_scopes(text: str) -> list[Scope]:
    """Spans of ``text`` that mention a finding as denied, resolved, past, someone else's or hypothetical."""
    if not isinstance(text, str):
        raise TypeError("text must be a string")
    toks = _tokens(text)
    if not toks:
        return []
    words = [t[0] for t in toks]
    low = _lower_same_length(text)
    n = len(toks)
    scopes: list[Scope] = []
    breaks = [_is_break(toks, i) for i in range(n)]

    def forward(i: int, length: int, kind: str, trigger: str) -> None:
        j = i + length
        while j < n and not breaks[j] and j < i + length + SCOPE_WINDOW:
            j += 1
        s = _span(toks, i, j, kind, trigger)
        if s:
            scopes.append(s)

    # prefix negation and hypotheticals
    i = 0
    while i < n:
        hit = None
        for kind, table in (("hypothetical", _HYPO), ("negated", _NEG)):
            for p in table:
                if _match_at(words, i, p):
                    hit = (kind, p)
                    break
            if hit:
                break
        if hit and hit[0] == "negated":
            rest = low[toks[i][1] :]
            if any(rx.match(rest) for rx in _NEG_EXCEPTIONS):
                hit = None
            elif hit[1] == ["no"] and i > 0 and words[i - 1] in ("can", "could") and i + 1 < n and words[i + 1] == "longer":
                hit = None
            elif hit[1] == ["no"] and i > 0 and words[i - 1] in ("dont", "didnt", "doesnt", "not", "i", "who"):
                hit = None  # "i dont no why": a misspelt "know"
        if hit:
            forward(i, len(hit[1]), hit[0], " ".join(hit[1]))
            i += len(hit[1])
            continue
        i += 1

    clauses = _clauses(toks)
    # post-negation: back to the previous break; "X but not anymore" reaches back over the "but"
    for i in range(n):
        for p in _POST:
            if not _match_at(words, i, p):
                continue
            if p == ["no", "longer"] and i + 2 < n and not breaks[i + 2]:
                continue  # "no longer has pain" is a prefix negation (handled above), not a post one
            if p in (["neg"], ["negative"], ["-ve"]) and i + 1 < n and words[i + 1] == "for":
                continue  # prefix form, handled above
            j = i
            while j > 0 and not breaks[j - 1] and j > i - SCOPE_WINDOW:
                j -= 1
            if j == i and j > 0:  # nothing before it in its clause: "..., but not anymore"
                k = j - 1
                while k > 0 and not breaks[k - 1] and k > j - 1 - SCOPE_WINDOW:
                    k -= 1
                j = k
            s = _span(toks, j, i + len(p), "resolved", " ".join(p))
            if s:
                scopes.append(s)
            break

    # clause-level history, family history, someone else in the past or in hospital
    raw = [low_tok for low_tok in (_lower_same_length(text[a:b]).replace("\u2019", "'") for _, a, b in toks)]
    sentence_of, sid = [], 0
    for i in range(n):
        sentence_of.append(sid)
        if words[i] in (".", "!", "?", "\n", "...", "\u2026"):
            sid += 1
    for lo, hi in clauses:
        clause = words[lo:hi]
        slo = min(k for k in range(n) if sentence_of[k] == sentence_of[lo])
        shi = max(k for k in range(n) if sentence_of[k] == sentence_of[lo]) + 1
        history = any(
            _match_at(words, k, p) and not (p == ["in", "the", "past"] and k + 3 < hi and (words[k + 3].isdigit() or words[k + 3] in (
                "few", "couple", "day", "days", "week", "weeks", "month", "hour", "hours", "two", "three", "24", "48")))
            for k in range(lo, hi) for p in _HIST if k + len(p) <= hi
        ) or any(
            _YEAR.match(w) and not (k and clause[k - 1] == "since") for k, w in enumerate(clause)
        ) or any(
            clause[k : k + 3] == ["when", "i", "was"] and k + 3 < len(clause) and _AGE_WHEN.match(clause[k + 3])
            for k in range(len(clause))
        )
        family = _has(words, lo, hi, _FAM)
        others = any(w in OTHER_PEOPLE for w in clause)
        past = any(
            w in PAST_WORDS
            and not (w == "had" and lo + k > 0 and (raw[lo + k - 1].endswith(("'s", "'ve")) or words[lo + k - 1] in ("has", "have")))
            and not (w in ("was", "were") and k + 1 < len(clause) and clause[k + 1] not in ("taken", "rushed", "admitted", "diagnosed"))
            for k, w in enumerate(clause)
        )
        hospital = _has(words, lo, hi, _HOSP)
        kind = None
        if history and not _has(words, lo, hi, _RECENT):
            kind = "history"
        elif family and not _has(words, lo, hi, _RECENT):
            kind = "family"
        elif others and (past or hospital) and not _has(words, lo, hi, _RECENT):
            if _has(words, lo, hi, _PAST_TIME) or not _has(words, slo, shi, _STRONG):
                kind = "family"
        if kind:
            # long clauses: only the words near the marker ("... 74 miles PLEASE HELP 20F with history of X")
            anchor = [k for k in range(lo, hi) if _marker_at(words, k, kind)] or [lo]
            a = max(lo, min(anchor) - SCOPE_WINDOW)
            b = min(hi, max(anchor) + SCOPE_WINDOW + 1)
            s = _span(toks, a, b, kind, " ".join(words[a : a + 4]))
            if s:
                scopes.append(s)
    return sorted(set(scopes), key=lambda s: (s.start, s.end))


def names_a_finding(text: str, scope: Scope, is_finding) -> bool:
    """True when some word of the scope names a finding (``is_finding(word)``; "CP/SOB" is two words)."""
    return any(is_finding(w) for w in re.findall(r"[A-Za-z]+", text[scope.start : scope.end]))


def removable_spans(text: str, protect: list[tuple[int, int]] = (), is_finding=None,
                    scopes: list[Scope] | None = None) -> list[tuple[int, int]]:
    """Character spans of the context scopes, cut so that none overlaps a protected span (words a red flag fired on).
    With ``is_finding`` (a word -> bool test, e.g. ``RedFlagMatcher.is_finding_word``) a scope counts only when it
    names a finding: "I don't know why I'm typing this" denies nothing, and removing it would only dilute the text."""
    spans = []
    for s in context_scopes(text) if scopes is None else scopes:
        if is_finding is not None and not names_a_finding(text, s, is_finding):
            continue
        pieces = [(s.start, s.end)]
        for a, b in protect:
            nxt = []
            for x, y in pieces:
                if b <= x or a >= y:
                    nxt.append((x, y))
                    continue
                if x < a:
                    nxt.append((x, a))
                if b < y:
                    nxt.append((b, y))
            pieces = nxt
        spans.extend(p for p in pieces if p[1] > p[0])
    return spans
