"""Red-flag rules: curated, cited emergency/urgent presentations that override the classifier.

The rule table is ``datasets/triage/red_flags.csv`` (one row per rule, each citing public triage
guidance).  :class:`RedFlagMatcher` compiles it once into a spaCy ``Matcher`` over a blank English
pipeline and then matches free text in well under a millisecond per short message.

Pattern language (column ``patterns``)
--------------------------------------
* ``A|B|C``      one *group*: any of the alternative *terms* A, B or C.
* ``G1 & G2``    every group must match somewhere in the text (not negated, not history).
* ``& !X|Y``     an *exclusion* group: the rule does not fire when X or Y occurs (not negated).
* the word ``manynum`` in a term stands for any whole number from 10 to 999 written in digits ("took 30
  paracetamol" matches ``take manynum paracetamol``); it is never a term's only word.
* a term is plain lay words, e.g. ``can not lift my arm``.  Both the term and the text are
  normalised the same way (lower case, contractions expanded by the spaCy tokenizer, a
  misspelling/variant list, irregular verb forms, light suffix stripping: "sweating", "sweaty",
  "sweats" all become ``sweat``) and matched on the token ``LEMMA`` attribute, which we fill with
  that normal form.  Consecutive words of a term may have up to ``MAX_GAP`` other tokens between
  them ("pain in my chest" matches ``pain in chest``; "arm is really weak" matches ``arm weak``),
  never across sentence punctuation or commas.

Conditions (column ``conditions``, ``;``-separated ``key=value``)
-----------------------------------------------------------------
``age_max_months`` / ``age_min_months`` (needs a known age: the ``age_years`` argument, else an age
stated in the text such as "my 6 week old"), ``pregnant=yes`` (the ``pregnant`` argument or a
non-negated mention of pregnancy in the text), ``sex=male`` (skipped when sex is known and
different), ``temp_min_c`` (when a temperature reading is in the text it must reach this value;
a fever word alone suffices otherwise), ``temp_required_c`` (a reading of at least this value must
be present), ``window`` (all groups within this many tokens instead of ``GROUP_WINDOW``),
``transient=yes`` (a finding followed by "went away", "resolved", "is fine" ... still counts: for
presentations that need care even when they have passed, e.g. a TIA; pre-negation, history,
someone else's past and hypotheticals still block).

Context (NegEx-style)
---------------------
A matched phrase does not count when it is
* negated: a pre-trigger ("no", "denies", "never", "without", "don't have", "not") within 6 tokens
  before it in the same clause, or a post-trigger ("ruled out", "went away") right after it.
  Scope ends at sentence punctuation, at "but/however/although/just/still/...", at "and" + a new
  subject ("and my ...", "and now ...") and at commas unless the comma continues a list
  ("no fever, cough or rash").  A bare "not" only negates when it governs the finding
  ("not feeling dizzy", "haven't got a fever"), so "I couldn't sleep, chest pain..." still fires;
  a "not" inside the gap of a gapped match negates it ("my poo isn't black") unless a term of that
  group itself contains "not"; a trigger that is part of another matched group of the same rule
  does not negate that rule's other groups ("no wet nappy for 12 hours": the duration counts);
* history: "last year", "years ago", "history of", "used to", "as a child", "when I was young"
  (or "... a child / little / pregnant / 25"; not any "when I was"), "in 2019" in the
  finding's comma-bounded phrase or fronted ("Last year, ..."), unless the sentence says it is
  happening again now;
* about someone else in the past: a family/other-person word together with a past marker
  ("my father had a stroke", "my mum died of a heart attack", "runs in the family"), unless a
  recency marker says it is happening now ("my baby had a fit 10 minutes ago" fires);
  someone else in the present ("my dad's face is drooping") fires: carers write for patients;
* hypothetical: "risk of", "signs of", "symptoms of", "worried about", "afraid of".
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import spacy
from spacy.matcher import Matcher

from triage.taxonomy import URGENCY_LEVELS, load_taxonomy

DEFAULT_TABLE_PATH = Path(__file__).resolve().parents[1] / "datasets" / "triage" / "red_flags.csv"

REQUIRED_COLUMNS = (
    "rule_id",
    "label",
    "urgency",
    "center",
    "patterns",
    "conditions",
    "source_title",
    "source_url",
    "source_section",
)
RULE_URGENCIES = URGENCY_LEVELS[:2]  # a red flag is an emergency or urgent; never routine
CENTER_IDS = frozenset(load_taxonomy().ids())  # a rule's center must be a center of the taxonomy
CONDITION_KEYS = {
    "age_max_months": float,
    "age_min_months": float,
    "temp_min_c": float,
    "temp_required_c": float,
    "pregnant": ("yes",),
    "sex": ("male", "female"),
    "window": float,  # max tokens spanned by all groups (default GROUP_WINDOW)
    "transient": ("yes",),  # post-negation ("went away", "resolved") does not block this rule
}
NUM_WORD = "manynum"  # a term word standing for any whole number 10-999 in digits
MANY_NUMBERS = [str(i) for i in range(10, 1000)]
REPEAT_LIMIT = 8  # a table word this often in one text switches to the strict patterns
WINDOW_CAP = 48  # tokens per Matcher call at most (bounds work on repetitive input)
GROUP_WINDOW = 40  # all groups of a combination rule must lie within this many tokens
MAX_GAP = 4  # other tokens allowed between two consecutive words of a term
BUCKET_SPLIT = 24  # a first word with more terms than this gets one Matcher per last word
NEG_WINDOW = 6  # tokens a pre-negation trigger reaches forward
POST_NEG_WINDOW = 3

# ---------------------------------------------------------------------------------------------
# word normalisation


# misspellings and lay variants -> the word the rule table uses (raw lower-case forms)
VARIANTS = {
    "breth": "breath", "brething": "breathing", "breathin": "breathing", "breatheing": "breathing",
    "brethe": "breathe", "breahte": "breathe", "breath": "breath", "pian": "pain", "pians": "pain",
    "paine": "pain", "chset": "chest", "cheast": "chest", "chesst": "chest", "stroak": "stroke",
    "stoke": "stroke", "wrost": "worst", "worste": "worst", "strok": "stroke", "seizer": "seizure", "siezure": "seizure", "sezure": "seizure",
    "seazure": "seizure", "seisure": "seizure", "siezures": "seizure", "unconcious": "unconscious",
    "unconsious": "unconscious", "unconcsious": "unconscious", "suicidle": "suicidal",
    "sucidal": "suicidal", "suicial": "suicidal", "sucide": "suicide", "suacide": "suicide",
    "anaphalaxis": "anaphylaxis", "anaphylaxsis": "anaphylaxis", "anafalaxis": "anaphylaxis",
    "anaphylaxic": "anaphylactic", "anaphalactic": "anaphylactic", "meningitus": "meningitis",
    "menengitis": "meningitis", "hart": "heart", "attak": "attack", "atack": "attack",
    "bleding": "bleeding", "bleeing": "bleeding", "bleedin": "bleeding", "sweting": "sweating",
    "swetting": "sweating", "sweatting": "sweating", "sweatin": "sweating", "dizzyness": "dizzy",
    "dizziness": "dizzy", "diziness": "dizzy", "dizy": "dizzy", "headach": "headache",
    "hedache": "headache", "headake": "headache", "tempreture": "temperature",
    "temprature": "temperature", "temperture": "temperature", "feaver": "fever", "fevre": "fever",
    "vomitting": "vomiting", "vommiting": "vomiting", "vomitted": "vomited", "tounge": "tongue",
    "swolen": "swollen", "swolled": "swollen", "sholder": "shoulder", "slured": "slurred",
    "slurrd": "slurred", "droping": "drooping", "droopin": "drooping", "wheezin": "wheezing",
    "chokin": "choking", "gaspin": "gasping", "colapsed": "collapsed", "collasped": "collapsed",
    "colapse": "collapse", "overdosed": "overdose", "overdosing": "overdose", "od'd": "overdose",
    "paracetemol": "paracetamol", "stiffneck": "stiff", "testical": "testicle", "testicals": "testicle",
    "preggers": "pregnant", "pregnent": "pregnant", "pragnant": "pregnant", "prgnant": "pregnant",
    "epi-pen": "epipen", "nauseus": "nauseous", "nautious": "nauseous", "tabs": "tablet",
    "meds": "medicine", "vision": "vision", "numbness": "numb", "weakness": "weak",
    "chocking": "choking", "choaking": "choking", "throught": "throat", "throte": "throat",
    "stomache": "stomach", "stomch": "stomach", "blak": "black", "diebetic": "diabetic",
    "diabetis": "diabetes", "diabeties": "diabetes", "jaundise": "jaundice", "jaundised": "jaundiced",
    "jaundace": "jaundice",
    "fontanel": "fontanelle", "fontanell": "fontanelle", "fontenelle": "fontanelle", "nappie": "nappy",
    "suicidial": "suicidal", "sucicidal": "suicidal", "tonite": "tonight", "2nite": "tonight",
    "testicel": "testicle", "pregnat": "pregnant", "pregant": "pregnant", "mins": "minutes",
    "min": "minute", "hrs": "hours", "hr": "hour",
}
# irregular forms -> base word
IRREGULAR = {
    "had": "have", "has": "have", "having": "have", "bled": "bleed", "swollen": "swell",
    "took": "take", "taken": "take", "ate": "eat", "eaten": "eat", "drank": "drink", "drunk": "drink",
    "fell": "fall", "fallen": "fall", "felt": "feel", "went": "go", "gone": "go", "goes": "go",
    "came": "come", "got": "get", "gotten": "get", "threw": "throw", "thrown": "throw", "woke": "wake",
    "woken": "wake", "spoke": "speak", "spoken": "speak", "lost": "lose", "dying": "die", "died": "die",
    "broke": "break", "broken": "break", "bitten": "bite", "stung": "sting", "stuck": "stick",
    "children": "child", "feet": "foot", "teeth": "tooth", "began": "begin", "begun": "begin",
    "said": "say", "made": "make", "saw": "see", "seen": "see", "ran": "run", "kept": "keep",
    "burnt": "burn", "burned": "burn", "burns": "burn", "hurts": "hurt", "hurting": "hurt",
    "peed": "pee", "weed": "wee", "wanna": "wanna", "puked": "puke", "puking": "puke",
    "is": "is", "was": "was", "does": "do", "did": "do", "done": "do", "doing": "do",
}
# never stem these (a stem would collide with another word)
PROTECT = frozenset(
    {
        "fitting", "fainted", "burning", "spotting", "breast", "breasts", "used", "this", "his", "was",
        "has", "its", "less", "glass", "chest", "stress", "always", "series", "bus", "abdominal",
        "unconscious", "conscious", "nervous", "numb", "thumb", "during", "sing", "thing", "nothing",
        "something", "anything", "everything", "morning", "evening", "ring", "spring", "bring", "wing",
        "ceiling", "string", "sting", "king", "red", "bed", "need", "feed", "seed", "bleed", "speed",
        "weed", "shed", "wed", "bred", "fed", "led", "shred", "sled", "gas", "yes", "sepsis", "septic",
        "testes", "hives", "diabetes", "herpes", "rabies", "lungs", "always", "always",
    }
)
UNDOUBLE = frozenset("bdgmnprt")


def _stem(word: str) -> str:
    """Light, deterministic suffix stripping applied identically to rule terms and text."""
    if len(word) <= 3 or word in PROTECT or not word.isalpha():
        return word
    w = word
    for suffix in ("ingly", "edly", "ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if len(w) >= 3 and w[-1] == w[-2] and w[-1] in UNDOUBLE:
                w = w[:-1]
            return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("es") and len(w) > 4 and (w[-3] in "sxz" or w[-4:-2] in ("ch", "sh")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "us", "is")) and len(w) > 3:
        w = w[:-1]
    for suffix in ("ness", "ful", "ly"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            break
    if w.endswith("y") and len(w) > 4:
        w = w[:-1]
    if w.endswith("e") and len(w) > 3 and not w.endswith("ee"):
        w = w[:-1]
    return w


def normalise_word(raw: str) -> str:
    """The matching form of one (already lower-cased, contraction-expanded) token."""
    w = raw.lower().strip("'’")
    if "-" in w and w.strip("-"):
        w = w.replace("-", "")  # "self-harm" == "selfharm", "light-headed" == "lightheaded"
    w = VARIANTS.get(w, w)
    w = IRREGULAR.get(w, w)
    return _stem(w)


# ---------------------------------------------------------------------------------------------
# context triggers, written as lower-case token sequences of the spaCy NORM attribute

STRONG_NEG = [
    "no", "never", "without", "denies", "denied", "deny", "denying", "nor", "neither", "none",
    "negative for", "free of", "absence of", "no longer", "no sign of", "no signs of",
    "no history of", "rule out", "ruled out",
]
# "not" only negates when followed (through these fillers) by the finding itself
NOT_FILLERS = frozenset(
    {
        "have", "has", "had", "got", "get", "getting", "feel", "feeling", "felt", "experience",
        "experiencing", "experienced", "notice", "noticed", "noticing", "any", "a", "an", "the", "really",
        "been", "having", "suffer", "suffering", "suffered", "from", "with", "much", "ever", "too",
        "of", "my", "see", "seen", "think", "believe", "it", "is", "a", "currently", "actually",
    }
)
PSEUDO_NEG = [
    "not sure", "not certain", "no idea", "not only", "no doubt", "not know", "no matter",
    "not just", "not that bad", "not even sure", "no clue", "not stop", "not go away",
    "not gone away", "not going away", "not get better", "not getting better", "not improve",
]
POST_NEG = ["ruled out", "went away", "gone away", "has gone", "have gone", "is gone", "resolved",
            "denied", "free", "normal", "negative", "is fine", "are fine", "is okay", "is ok", "seems fine",
            # a finding denied just after it is named, in text speak or clipped: "lips r fine", "tongue looks normal"
            "r fine", "r ok", "r okay", "are ok", "are okay", "all fine", "looks fine", "look fine", "looks normal",
            "look normal", "looks ok", "look ok", "nope", "not at all"]
HYPOTHETICAL = [
    "risk of", "risks of", "signs of", "sign of", "symptoms of", "symptom of", "chance of",
    "chances of", "prevent", "preventing", "worried about", "worry about", "afraid of", "scared of",
    "fear of", "how to tell", "how do i know", "what are the", "learn about", "reading about",
    "almost", "nearly", "possible", "possibly", "could it be", "could this be", "what if", "in case",
    "worried i might", "worried i may", "worried i could", "worried it might", "worried it may", "worried it could",
    "scared i might", "scared it might", "afraid i might", "afraid it might", "might be having", "could be having",
]
HISTORY = [
    "history of", "hx of", "hx", "h / o", "pmh", "pmhx", "phx", "fhx", "fh of", "past medical history", "last year", "years ago", "year ago", "months ago", "month ago",
    "weeks ago", "week ago", "last month", "in the past", "previously", "previous", "used to",
    "as a child", "as a kid", "when i was a child", "when i was a kid", "when i was a baby",
    "when i was a teenager", "when i was a teen", "when i was young", "when i was younger",
    "when i was little", "when i was small", "when i was at school", "when i was in school",
    "when i was pregnant", "when i was born", "childhood", "back in", "once had", "a while ago",
    "long time ago", "family history", "runs in", "run in", "genetic",
    # general time expressions (issue 11): "6 yrs ago", "two summers ago", "last winter", "in my twenties"
    "yrs ago", "yr ago", "ages ago", "decades ago", "decade ago", "summers ago", "winters ago", "christmases ago",
    "years back", "year back", "way back", "last week", "last winter", "last summer", "last spring",
    "last autumn", "last christmas", "last easter", "the year before", "in my teens", "in my twenties",
    "in my thirties", "in my forties", "in my fifties", "in my sixties", "in my 20s", "in my 30s", "in my 40s",
    "in his twenties", "in her twenties", "in his teens", "in her teens", "as a teenager", "as a baby",
    # a past hospital stay: "was taken into hospital with", "was admitted with", "blue-lighted in with"
    "admitted with", "admitted for", "taken into hospital with", "taken into hospital for", "taken in with",
    "taken in for", "rushed in with", "rushed into hospital with", "rushed to hospital with", "blue - lighted in",
    "blue lighted in", "blue lighted to", "blue - lighted to", "hospitalised with", "hospitalized with",
    "hospitalised for", "hospitalized for", "in hospital with", "recovered from", "survived",
]
# a time expression right after an onset word is when it started, not history: "chest pain since last week",
# "started 2 weeks ago" (ONSET_REACH tokens before the marker)
ONSET_WORDS = frozenset({"since", "started", "start", "starting", "began", "begun", "begin", "from", "for", "over"})
ONSET_REACH = 3
# a presentation placed "yesterday" / "last night" that the text says is over ("went down within the hour", "fine
# today") is history for the rules that need it now (not for ``transient=yes`` rules such as a TIA)
PAST_DAY = ["yesterday", "last night", "the other day", "the other night", "at the weekend", "over the weekend"]
RESOLVED_MARKERS = [
    "went away", "gone away", "went down", "gone down", "settled", "settled down", "back to normal", "all normal",
    "normal today", "normal now", "fine today", "fine now", "ok today", "ok now", "okay today", "okay now",
    "better today", "better now", "cleared up", "cleared", "resolved", "passed", "eased off", "wore off",
    "was gone", "had gone", "is gone", "has gone", "all good", "recovered",
]
# someone else's words reported, not a finding of the writer: "I read that ...", "I saw on TikTok that ..." (the
# scope runs to the end of the clause)
READ_ABOUT = [
    "i read that", "read that", "read online", "read somewhere", "i read", "saw online", "seen online",
    "saw on tiktok", "saw on facebook", "saw on instagram", "saw on youtube", "saw on the news", "saw on tv",
    "saw a video", "saw a post", "heard that", "googled", "google says", "says online", "an article",
]
# "again"/"another" only override a history marker when the sentence also says it is recent
HISTORY_OVERRIDE = ["again", "another", "once more", "is back", "'s back", "come back", "came back", "coming back",
                    "has returned", "returned"]
HISTORY_OVERRIDE_RECENT = ["today", "tonight", "now", "right now", "just", "this morning", "minutes ago", "hours ago"]
OTHER_PERSON = frozenset(
    {
        "father", "dad", "daddy", "mother", "mom", "mum", "mummy", "mommy", "brother", "sister",
        "grandmother", "grandfather", "grandma", "grandpa", "nan", "nana", "nanna", "granny", "grandad",
        "granddad", "uncle", "aunt", "auntie", "cousin", "wife", "husband", "friend", "neighbour",
        "neighbor", "colleague", "coworker", "boss", "parents", "parent", "family", "relative",
        "relatives", "boyfriend", "girlfriend", "partner", "son", "daughter", "child", "kid", "baby",
        "he", "she", "him", "her", "they", "someone", "somebody", "patient", "classmate", "roommate",
        "flatmate", "housemate",
    }
)
PAST_MARKERS = frozenset({"had", "died", "passed", "suffered", "survived"})
RECENCY = [
    "minutes ago", "minute ago", "hours ago", "hour ago", "just now", "right now", "today", "tonight",
    "this morning", "this afternoon", "this evening", "still", "now", "currently", "at the moment",
]
TERMINATORS = frozenset(
    {
        "but", "however", "although", "though", "except", "yet", "whereas", "just", "only", "still",
        "also", "instead", "apart", "besides", "otherwise", "now", "currently", "anyway", "except",
    }
)
AND_SUBJECTS = frozenset(
    {
        "i", "my", "me", "it", "he", "she", "they", "we", "his", "her", "their", "the", "there",
        "this", "that", "now", "today", "then", "suddenly", "again", "am", "i'm",
    }
)
INNER_NEG = frozenset({"no", "never", "without", "nor", "denies", "denied"})
SENTENCE_BREAKS = frozenset({".", "!", "?", ";", "...", "…"})
PHRASE_BREAKS = SENTENCE_BREAKS | {",", ":", "(", ")"}
# function words of the rule table's terms: they do not name a finding
FINDING_STOP = frozenset({
    "the", "and", "not", "can", "could", "have", "has", "had", "feel", "feels", "felt", "like", "get", "got", "going",
    "been", "being", "with", "for", "from", "into", "onto", "out", "off", "over", "under", "after", "before", "since",
    "when", "what", "how", "who", "that", "this", "there", "their", "they", "them", "she", "her", "his", "him", "you",
    "your", "our", "its", "are", "was", "were", "will", "would", "should", "just", "very", "really", "all", "any",
    "some", "more", "most", "much", "one", "two", "side", "sides", "time", "times", "hour", "hours", "minute",
    "minutes", "day", "days", "week", "weeks", "now", "today", "tonight", "again", "still", "also", "keep", "keeps",
    "kept", "come", "came", "comes", "go", "goes", "went", "make", "made", "take", "took", "taken", "say", "said",
    "properly", "normal", "normally", "anything", "something", "nothing", "everything", "thing", "things", "way",
    "lot", "lots", "bit", "little", "than", "then", "too", "does", "did", "doing", "done", "want", "wants", "need",
    "needs", "look", "looks", "looking", "seem", "seems", "think", "thought", "know", "right", "left", "first", "last",
})
# clinical abbreviations written in notes and by clinicians: they name a finding
CLINICAL_SHORTHAND = frozenset({
    "cp", "sob", "sobar", "doe", "mi", "stemi", "nstemi", "acs", "cva", "tia", "sah", "si", "sh", "dsh", "od",
    "dvt", "pe", "loc", "uti", "gi", "pr", "pv", "palps", "haemoptysis", "hemoptysis", "haematemesis", "melaena",
    "dib", "cough", "fever", "temp", "afebrile", "apyrexial", "headache", "rash", "covid", "flu", "strep",
})
PREGNANCY_WORDS = ("pregnant", "pregnancy", "trimester", "weeks along", "expecting a baby")
# pregnancy stated as a gestational age without the word "pregnant" ("I'm 30 weeks", "34 weeks. my bump ...",
# "34+2", "28 wks gone"): a number 4-42 of weeks (``_gestation_in_text``)
GESTATION_WEEKS = frozenset({"weeks", "week", "wks", "wk"})
GESTATION_MIN, GESTATION_MAX = 4, 42
# "I'm 30 weeks", "she's 34 weeks", "my wife is 36 weeks": a person said to *be* N weeks
GESTATION_BE = frozenset({"am", "m", "'m", "is", "'s", "are", "'re"})
GESTATION_BE_SUBJECTS = frozenset({"i", "wife", "partner", "girlfriend", "fiancee", "fiance"})
# "she's 34 weeks" counts only beside a pregnancy-only word: "she's 6 weeks" is as often a baby's age
GESTATION_BE_CONTEXT_SUBJECTS = frozenset({"she"})
GESTATION_HEDGES = frozenset({"nearly", "almost", "just", "about", "only", "now", "currently", "over", "exactly", "at"})
# what may follow "I'm N weeks" for it to be a gestational age: the end of the phrase, a conjunction, or a
# pregnancy word ("I'm 10 weeks sober", "6 weeks postpartum", "3 weeks into my course", "2 weeks post op" are not)
GESTATION_AFTER = frozenset({
    "and", "with", "now", "today", "tomorrow", "tonight", "pregnant", "gone", "along", "gestation", "plus", "+",
    "but", "so", "&", "n", "-", "i", "my", "pg", "preg", "pregnancy",
})
# context words that make a bare "34 weeks" at the start of a sentence a gestational age
GESTATION_CONTEXT = frozenset({
    "bump", "midwife", "midwives", "maternity", "antenatal", "placenta", "waters", "contractions", "contraction",
    "labour", "labor", "kicks", "kicking", "fetal", "foetal", "movements", "obstetrician", "gestation", "ctg",
})
# words just before the number that make it a duration or a past event, not a gestational age
GESTATION_NOT_BEFORE = frozenset({
    "for", "past", "last", "next", "in", "within", "after", "since", "every", "each", "than", "born", "delivered",
    "birth", "lost", "miscarried", "miscarriage", "until", "till", "ago", "was", "were",
})
# words just after "N weeks" that make it an age, a duration or past ("6 weeks old", "2 weeks ago", "6 weeks pp")
GESTATION_NOT_AFTER = frozenset({
    "old", "ago", "later", "postpartum", "pp", "post", "after", "since", "into", "out", "off", "sober", "clean",
    "late", "early", "of", "before", "overdue", "from", "back", "running", "straight", "on", "ill", "sick",
})


@lru_cache(maxsize=64)
def _phrase_index(phrases: tuple[str, ...]) -> dict[str, list[list[str]]]:
    index: dict[str, list[list[str]]] = {}
    for phrase in phrases:
        parts = phrase.split()
        index.setdefault(parts[0], []).append(parts)
    return index


def _seq_index(norms: list[str], phrases) -> list[tuple[int, int]]:
    """(start, end) token spans where any of the phrases occurs in the norm sequence."""
    index = _phrase_index(tuple(phrases))
    out: list[tuple[int, int]] = []
    for i, tok in enumerate(norms):
        for parts in index.get(tok, ()):
            if norms[i : i + len(parts)] == parts:
                out.append((i, i + len(parts)))
    return out


# ---------------------------------------------------------------------------------------------
# public data types


@dataclass(frozen=True)
class Span:
    text: str
    start: int  # character offsets into the ORIGINAL input text
    end: int


@dataclass(frozen=True)
class FlagHit:
    rule_id: str
    label: str
    urgency: str
    center: str
    matched: list[Span]
    source: str  # "title, section, url"


@dataclass
class _Rule:
    index: int
    rule_id: str
    label: str
    urgency: str
    center: str
    groups: list[list[list[str]]]  # positive groups -> terms -> normalised words
    excludes: list[list[list[str]]]
    conditions: dict
    source: str


@dataclass
class _Context:
    """Per-text token facts computed once per call."""

    norms: list[str]
    sentence: list[int]
    clause: list[int]
    negated: list[bool] = field(default_factory=list)
    neg_by: list[list[int]] = field(default_factory=list)  # trigger positions negating each token
    hypothetical: list[bool] = field(default_factory=list)
    post_neg_starts: list[int] = field(default_factory=list)
    clause_bounds: dict[int, list[int]] = field(default_factory=dict)
    sentence_bounds: dict[int, list[int]] = field(default_factory=dict)
    clause_facts: dict[int, tuple[bool, bool, bool]] = field(default_factory=dict)
    resolved_past: list[bool] = field(default_factory=list)  # in a "yesterday ... went away" sentence


# ---------------------------------------------------------------------------------------------


def _nlp():
    return _shared_nlp()


@lru_cache(maxsize=1)
def _shared_nlp():
    """Blank English pipeline; a hyphen may sit inside a gapped term ("self-harm", "chest-pain")."""
    nlp = spacy.blank("en")
    for dash in ("-", "--"):
        nlp.vocab[dash].is_punct = False
    return nlp


def _parse_conditions(raw: str) -> dict:
    conditions: dict = {}
    for part in (raw or "").split(";"):
        part = part.strip()
        if not part:
            continue
        if "=" not in part:
            raise ValueError(f"condition {part!r} is not key=value")
        key, value = (x.strip() for x in part.split("=", 1))
        if key not in CONDITION_KEYS:
            raise ValueError(f"unknown condition {key!r}; known: {sorted(CONDITION_KEYS)}")
        kind = CONDITION_KEYS[key]
        if kind is float:
            try:
                conditions[key] = float(value)
            except ValueError:
                raise ValueError(f"condition {key} needs a number, got {value!r}") from None
        else:
            if value not in kind:
                raise ValueError(f"condition {key} must be one of {kind}, got {value!r}")
            conditions[key] = value
    return conditions


class RedFlagMatcher:
    """Compiled red-flag rule table; build once, call :meth:`match` per message."""

    def __init__(self, table_path: str | Path | None = None):
        self.table_path = Path(table_path) if table_path is not None else DEFAULT_TABLE_PATH
        try:
            raw = self.table_path.read_bytes()
        except OSError as exc:
            raise ValueError(f"red-flag table {self.table_path}: cannot read ({exc})") from exc
        self.version = hashlib.sha256(raw).hexdigest()[:16]
        self.nlp = _nlp()
        self._vocab_words: set[str] = set()
        self.rules: list[_Rule] = self._load(raw.decode("utf-8-sig"))
        self._compile()
        self._order = {r.rule_id: r.index for r in self.rules}
        self._finding_words: frozenset[str] | None = None

    # -- loading ----------------------------------------------------------------------------
    def _term_words(self, term: str) -> list[str]:
        doc = self.nlp.make_doc(term)
        return [normalise_word(t.norm_) for t in doc if not (t.is_punct or t.is_space)]

    def _parse_patterns(self, raw: str) -> tuple[list, list]:
        groups, excludes = [], []
        if not raw or not raw.strip():
            raise ValueError("patterns is empty")
        for group_raw in raw.split("&"):
            group_raw = group_raw.strip()
            exclude = group_raw.startswith("!")
            if exclude:
                group_raw = group_raw[1:]
            terms = []
            for term in group_raw.split("|"):
                term = term.strip()
                if not term:
                    raise ValueError(f"empty term in group {group_raw!r}")
                words = self._term_words(term)
                if not words:
                    raise ValueError(f"term {term!r} has no words")
                if set(words) == {NUM_WORD}:
                    raise ValueError(f"term {term!r} is only a number placeholder")
                terms.append(words)
                self._vocab_words.update(t.lower() for t in term.split())
            (excludes if exclude else groups).append(terms)
        if not groups:
            raise ValueError("patterns has no positive group (only exclusions)")
        return groups, excludes

    def _load(self, text: str) -> list[_Rule]:
        reader = csv.DictReader(io.StringIO(text))
        missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise ValueError(f"red-flag table {self.table_path}: missing columns {missing}")
        rules: list[_Rule] = []
        seen: set[str] = set()
        for index, row in enumerate(reader):
            line = reader.line_num
            rule_id = (row.get("rule_id") or "").strip()
            where = f"red-flag table {self.table_path}: row {index + 1} (line {line}, rule_id {rule_id!r})"
            try:
                if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
                    raise ValueError("wrong number of fields")
                if not re.fullmatch(r"[a-z][a-z0-9_]*", rule_id):
                    raise ValueError("rule_id must be lower_snake_case")
                if rule_id in seen:
                    raise ValueError("duplicate rule_id")
                seen.add(rule_id)
                urgency = row["urgency"].strip()
                if urgency not in RULE_URGENCIES:
                    raise ValueError(f"urgency must be one of {RULE_URGENCIES}, got {urgency!r}")
                center = row["center"].strip()
                if center not in CENTER_IDS:
                    raise ValueError(f"unknown center {center!r}")
                for col in ("label", "source_title", "source_url", "source_section"):
                    if not row[col].strip():
                        raise ValueError(f"{col} is empty")
                if not row["source_url"].strip().startswith(("https://", "http://")):
                    raise ValueError("source_url must be an http(s) URL")
                groups, excludes = self._parse_patterns(row["patterns"])
                conditions = _parse_conditions(row["conditions"])
            except ValueError as exc:
                raise ValueError(f"{where}: {exc}") from None
            source = f"{row['source_title'].strip()}, {row['source_section'].strip()}, {row['source_url'].strip()}"
            rules.append(
                _Rule(index, rule_id, row["label"].strip(), urgency, center, groups, excludes, conditions, source)
            )
        if not rules:
            raise ValueError(f"red-flag table {self.table_path}: no rules")
        return rules

    def _compile(self) -> None:
        """One small spaCy Matcher per first word: a text only runs the matchers whose first word it
        contains (one big Matcher with ~600 gapped patterns measured ~1.5 ms per short text)."""
        # gaps may not hold punctuation (commas, full stops); newlines are caught by the clause check
        gap = {"IS_PUNCT": False, "OP": "{0,%d}" % MAX_GAP}
        by_first: dict[str, dict[str, list]] = {}
        self._pattern_words: set[str] = set()
        self._terms_with_not: set[str] = set()  # match keys of groups where a term itself says "not"
        self._not_terms: dict[str, list[list[str]]] = {}  # those terms, per match key
        for rule in self.rules:
            for kind, groups in (("g", rule.groups), ("x", rule.excludes)):
                for gi, terms in enumerate(groups):
                    key = f"{rule.index}|{kind}|{gi}"
                    if any("not" in words for words in terms):
                        self._terms_with_not.add(key)
                        self._not_terms.setdefault(key, []).extend(w for w in terms if "not" in w)
                    for words in terms:
                        fast: list[dict] = []
                        strict: list[dict] = []
                        for wi, word in enumerate(words):
                            if wi:
                                fast.append(dict(gap))
                                # strict: a gap token may not be the next word itself, so matching is
                                # leftmost and linear even on "can't can't can't ..." (slower per call)
                                strict.append(dict(gap, LEMMA={"NOT_IN": [word]}))
                            spec = {"LEMMA": {"IN": MANY_NUMBERS}} if word == NUM_WORD else {"LEMMA": word}
                            fast.append(spec)
                            strict.append(dict(spec))
                        self._pattern_words.update(words)
                        by_first.setdefault(words[0], {}).setdefault(key, []).append((fast, strict, words[-1]))
        self.matchers: dict[str, Matcher] = {}
        self.strict_matchers: dict[str, Matcher] = {}
        self._reach: dict[str, int] = {}  # longest possible match (tokens) per first word
        # a first word with many terms ("not", "can", "baby") is split by the terms' last word, and a
        # text runs only the parts whose last word it also contains ("not not not ..." stays cheap)
        # each bucket also keeps the word sets of its terms: every word of a term must be in the text for the term
        # to match (each pattern token is an exact LEMMA), so a bucket none of whose sets the text holds is skipped
        # without a Matcher call (most texts hold a term's first word, e.g. "pain", and not the rest)
        self._buckets: dict[str, list[tuple[str | None, Matcher, Matcher, int, tuple[frozenset, ...]]]] = {}
        for first, keyed in by_first.items():
            n_terms = sum(len(pairs) for pairs in keyed.values())
            parts: dict[str | None, dict[str, list]] = {}
            for key, pairs in keyed.items():
                for fast, strict, last in pairs:
                    part = last if n_terms > BUCKET_SPLIT else None
                    parts.setdefault(part, {}).setdefault(key, []).append((fast, strict))
            parts[""] = {key: [(f, st) for f, st, _ in pairs] for key, pairs in keyed.items()}
            for part, part_keyed in parts.items():
                matcher, strict_matcher = Matcher(self.nlp.vocab), Matcher(self.nlp.vocab)
                reach = 1
                needs: set[frozenset] = set()
                for key, pairs in part_keyed.items():
                    matcher.add(key, [f for f, _ in pairs])
                    strict_matcher.add(key, [st for _, st in pairs])
                    for pat, _ in pairs:
                        reach = max(reach, sum(MAX_GAP if "OP" in p else 1 for p in pat))
                        needs.add(frozenset(
                            NUM_WORD if isinstance(p["LEMMA"], dict) else p["LEMMA"]
                            for p in pat if "LEMMA" in p and not (isinstance(p["LEMMA"], dict) and "NOT_IN" in p["LEMMA"])
                        ))
                if part == "":  # every term of this first word (API, tests)
                    self.matchers[first] = matcher
                    self.strict_matchers[first] = strict_matcher
                    self._reach[first] = reach
                else:
                    # smallest sets first: the test stops at the first set the text holds
                    need = tuple(sorted(needs, key=len))
                    self._buckets.setdefault(first, []).append((part, matcher, strict_matcher, reach, need))
        # fuzzy map: raw words of length >= 6 used in the table, keyed by their one-deletions
        self._fuzzy_exact = {w for w in self._vocab_words if len(w) >= 6 and w.isalpha()}
        self._fuzzy_dels: dict[str, str] = {}
        for w in sorted(self._fuzzy_exact):
            for i in range(len(w)):
                self._fuzzy_dels.setdefault(w[:i] + w[i + 1 :], w)
        self._fix = lru_cache(maxsize=65536)(self._fix_uncached)

    # -- text processing --------------------------------------------------------------------
    def _fix_uncached(self, norm: str) -> str:
        """Normal form of one token, with a one-edit (insert/delete/transpose) spelling fix."""
        w = norm.lower()
        if w in VARIANTS or w in IRREGULAR or w in PROTECT or not 6 <= len(w) <= 24 or not w.isalpha():
            return normalise_word(w)
        if w not in self._fuzzy_exact:
            if w in self._fuzzy_dels:  # a letter was dropped
                return normalise_word(self._fuzzy_dels[w])
            for i in range(len(w)):  # a letter was added
                d = w[:i] + w[i + 1 :]
                if d in self._fuzzy_exact:
                    return normalise_word(d)
            for i in range(len(w) - 1):  # two letters swapped
                t = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
                if t in self._fuzzy_exact:
                    return normalise_word(t)
        return normalise_word(w)

    def _doc(self, text: str):
        """Tokenise once; set LEMMA to the matching form; return the doc and its norm list."""
        doc = self.nlp.make_doc(text)
        norms: list[str] = []
        positions: dict[str, list[int]] = {}
        for tok in doc:
            if tok.is_space:
                norm = "\n" if "\n" in tok.text else " "
                tok.lemma_ = norm
            elif tok.is_punct:
                norm = tok.text
                tok.lemma_ = norm
            else:
                norm = tok.norm_.lower()
                if norm in ("n't", "nt"):
                    norm = "not"
                lemma = self._fix(norm)
                tok.lemma_ = lemma
                positions.setdefault(lemma, []).append(tok.i)
                if norm.isdigit() and 10 <= int(norm) <= 999:
                    positions.setdefault(NUM_WORD, []).append(tok.i)
            norms.append(norm)
        return doc, norms, positions

    def _context(self, norms: list[str]) -> _Context:
        n = len(norms)
        sentence = [0] * n
        clause = [0] * n
        s = c = 0
        for i, tok in enumerate(norms):
            if tok in SENTENCE_BREAKS or tok == "\n":
                s += 1
                c += 1
            elif tok in TERMINATORS and not (tok == "still" and i and norms[i - 1] in ("not",)):
                c += 1
            elif tok in ("and", "so", "then") and i + 1 < n and norms[i + 1] in AND_SUBJECTS:
                c += 1
            sentence[i] = s
            clause[i] = c
        ctx = _Context(norms, sentence, clause)
        for i in range(n):
            b = ctx.clause_bounds.setdefault(clause[i], [i, i + 1])
            b[1] = i + 1
            b = ctx.sentence_bounds.setdefault(sentence[i], [i, i + 1])
            b[1] = i + 1
        ctx.negated, ctx.neg_by = self._negation_scope(norms, clause)
        ctx.hypothetical = [False] * n
        for start, end in _seq_index(norms, HYPOTHETICAL):
            for j in range(end, min(n, end + 8)):
                if clause[j] != clause[start]:
                    break
                ctx.hypothetical[j] = True
        for start, end in _seq_index(norms, READ_ABOUT):
            for j in range(end, n):
                if clause[j] != clause[start] or norms[j] in SENTENCE_BREAKS or norms[j] == "\n":
                    break
                ctx.hypothetical[j] = True
        # a day already over whose presentation the text says has passed: the tokens of that sentence are history
        # for rules that need the finding now (``_blocked`` with post_negation)
        ctx.resolved_past = [False] * n
        for start, end in _seq_index(norms, PAST_DAY):
            if {"since", "from"} & set(norms[max(0, start - 2) : start]):
                continue
            s_id = sentence[start]
            # the resolution must be said in this sentence or the next one
            span = [k for k in range(n) if sentence[k] in (s_id, s_id + 1)]
            words = [norms[k] for k in span]
            if any(not {"not", "never"} & set(words[max(0, a - 2) : a]) for a, _ in _seq_index(words, RESOLVED_MARKERS)):
                for k in span:
                    if sentence[k] == s_id:
                        ctx.resolved_past[k] = True
        ctx.post_neg_starts = [
            s for s, _ in _seq_index(norms, POST_NEG) if not {"not", "never"} & set(norms[max(0, s - 2) : s])
        ]
        return ctx

    def _negation_scope(self, norms: list[str], clause: list[int]) -> tuple[list[bool], list[list[int]]]:
        n = len(norms)
        negated = [False] * n
        neg_by: list[list[int]] = [[] for _ in range(n)]
        pseudo = set()
        for start, end in _seq_index(norms, PSEUDO_NEG):
            pseudo.update(range(start, end))
        triggers = [(s, e) for s, e in _seq_index(norms, STRONG_NEG) if s not in pseudo]
        for i, tok in enumerate(norms):
            if tok == "not" and i not in pseudo:
                j = i + 1
                while j < n and norms[j] in NOT_FILLERS:
                    j += 1
                # valid only when it governs what follows: fillers then a content word
                if j < n and (j > i + 1 or norms[j] not in PHRASE_BREAKS):
                    triggers.append((i, i + 1))
        for start, end in triggers:
            counted = 0
            j = end
            while j < n and counted < NEG_WINDOW:
                tok = norms[j]
                if clause[j] != clause[start] or tok in SENTENCE_BREAKS or tok == "\n":
                    break
                if tok == ",":
                    # a comma continues the negation only inside a list ("no fever, cough or rash")
                    k, listy = j + 1, False
                    while k < n and k < j + 8 and norms[k] not in PHRASE_BREAKS and clause[k] == clause[start]:
                        if norms[k] in ("or", "nor"):
                            listy = True
                            break
                        k += 1
                    if not listy:
                        break
                elif tok not in (" ",):
                    counted += 1
                negated[j] = True
                neg_by[j].append(start)
                j += 1
        return negated, neg_by

    def _blocked(
        self, ctx: _Context, start: int, end: int, post_negation: bool = True, pre_negation: bool = True
    ) -> bool:
        """True when the token span [start, end) is negated, hypothetical, history or someone else's past.

        ``post_negation=False`` (rules with ``transient=yes``) ignores post-triggers such as "went
        away" or "is fine" after the finding; ``pre_negation=False`` ignores a preceding trigger
        (used to test whether that trigger is the only reason); every other check still applies."""
        norms = ctx.norms
        if (pre_negation and ctx.negated[start]) or ctx.hypothetical[start]:
            return True
        if ctx.clause[start] != ctx.clause[end - 1]:
            return True  # a gapped match must not run across "but", "and my", ...
        if any(t in INNER_NEG for t in norms[start + 1 : end]):
            return True  # "sick twice today no blood"
        for p in ctx.post_neg_starts if post_negation else ():
            if (
                end <= p <= end + POST_NEG_WINDOW
                and ctx.clause[p] == ctx.clause[start]
                and not any(t in PHRASE_BREAKS for t in norms[end:p])
            ):
                return True
        # question-and-answer style: "Chest pain? No."
        k = end
        while k < len(norms) and norms[k] in (" ", "\n"):
            k += 1
        if k < len(norms) and norms[k] == "?":
            k += 1
            while k < len(norms) and norms[k] in (" ", "\n", "-", ":"):
                k += 1
            if k < len(norms) and norms[k] in ("no", "nope", "none", "never", "negative", "denies", "denied"):
                return True
        cl = ctx.clause[start]
        lo, hi = ctx.clause_bounds[cl]
        clause_norms = norms[lo:hi]
        facts = ctx.clause_facts.get(cl)
        if facts is None:
            slo, shi = ctx.sentence_bounds[ctx.sentence[start]]
            sentence_norms = norms[slo:shi]
            recent_again = bool(_seq_index(sentence_norms, HISTORY_OVERRIDE)) and bool(
                _seq_index(sentence_norms, HISTORY_OVERRIDE_RECENT)
            )
            recency = bool(_seq_index(clause_norms, RECENCY))
            # a fronted time phrase scopes over the whole clause: "Last year, I had a seizure"
            fronted = any(s == 0 and e < len(clause_norms) and clause_norms[e] in (",", ":") for s, e in _seq_index(clause_norms, HISTORY))
            facts = ctx.clause_facts[cl] = (recent_again, recency, fronted)
        recent_again, recency, fronted = facts
        # otherwise history markers count within the comma-bounded phrase of the finding, so
        # "crushing chest pain, ECG was normal last month" still fires
        plo = start
        while plo > lo and norms[plo - 1] not in PHRASE_BREAKS:
            plo -= 1
        phi = end
        while phi < hi and norms[phi] not in PHRASE_BREAKS:
            phi += 1
        phrase = norms[plo:phi]
        # "since last week", "started 2 weeks ago": an onset word just before the marker makes it current
        history_marks = [
            (a, b) for a, b in _seq_index(phrase, HISTORY) if not ONSET_WORDS & set(phrase[max(0, a - ONSET_REACH) : a])
        ]
        history = fronted or bool(history_marks) or any(
            s + 3 < len(phrase) and phrase[s + 3].isdigit() for s, _ in _seq_index(phrase, ["when i was"])
        ) or any(
            len(t) == 4 and t.isdigit() and t[:2] in ("19", "20") and {"in", "since"} & set(phrase[max(0, k - 3) : k])
            for k, t in enumerate(phrase)
        )
        if history and not recent_again:
            return True
        if post_negation and ctx.resolved_past[start] and not recent_again:
            return True  # "Yesterday my lips swelled ... it went down within the hour"
        # someone else's past: within the comma-bounded phrase, an other-person word and a past
        # marker before the finding ("my father had a stroke"); "has had" is ongoing, not past
        past_before = any(
            norms[k] in PAST_MARKERS and not (norms[k] == "had" and k and norms[k - 1] in ("has", "have", "'s", "'ve"))
            for k in range(plo, end)
        )
        if past_before and any(t in OTHER_PERSON for t in phrase):
            if not recency and not recent_again:
                return True
        return False

    # -- conditions -------------------------------------------------------------------------
    def text_pregnant(self, text: str) -> bool:
        """A current, non-negated pregnancy in the text: the word ("I'm 9 weeks pregnant") or a gestational age
        ("I'm 30 weeks", "34+2"); not "I'm not pregnant" or "when I was pregnant with my son"."""
        if not isinstance(text, str) or not text.strip():
            return False
        _, norms, _ = self._doc(text)
        return self._pregnant_in_text(self._context(norms))

    @staticmethod
    def text_age_months(text: str) -> float | None:
        """An age stated in the text ("6 week old", "3-month-old", "newborn", "aged 2"), in months."""
        low = text.lower()
        m = re.search(
            r"(\d+(?:\.\d+)?)\s*(?:-|\s)?\s*(day|week|wk|month|mo|year|yr)s?\s*(?:-|\s)?\s*old", low
        )
        if m:
            value = float(m.group(1))
            unit = m.group(2)
            factor = {"day": 1 / 30.4, "week": 7 / 30.4, "wk": 7 / 30.4, "month": 1.0, "mo": 1.0, "year": 12.0, "yr": 12.0}
            return value * factor[unit]
        if re.search(r"\bnew\s*-?\s*born\b|\bneonate\b", low):
            return 0.5
        m = re.search(r"\b(?:aged?|age of)\s+(\d{1,3})\b", low)
        if m:
            return float(m.group(1)) * 12
        m = re.search(r"\b(\d{1,3})\s*(?:y/?o|yrs?|years?)\b(?!\s*ago)", low)
        if m:
            return float(m.group(1)) * 12
        return None

    @staticmethod
    def text_temperatures_c(text: str) -> list[float]:
        """Body-temperature readings in the text, converted to Celsius."""
        out = []
        low = text.lower()
        for m in re.finditer(r"(\d{2,3}(?:[.,]\d{1,2})?)\s*(°|º|deg(?:rees?)?)?\s*(c|f|celsius|fahrenheit)?\b", low):
            value = float(m.group(1).replace(",", "."))
            unit = m.group(3)
            has_degree = bool(m.group(2))
            before = low[max(0, m.start() - 30) : m.start()]
            if not (unit or has_degree or re.search(r"temp|fever|thermometer|reading", before)):
                continue
            if unit and unit.startswith("f") or (not unit and value > 50):
                value = (value - 32) * 5 / 9
            if 34.0 <= value <= 44.0:
                out.append(round(value, 1))
        return out

    def _pregnant_in_text(self, ctx: _Context) -> bool:
        """A current, non-negated mention of pregnancy ("I'm 9 weeks pregnant"; not "I'm not
        pregnant", "pregnancy test negative", "when I was pregnant with my son")."""
        stems = [_stem(t) for t in ctx.norms]
        for start, end in _seq_index(stems, [" ".join(_stem(w) for w in p.split()) for p in PREGNANCY_WORDS]):
            if not self._blocked(ctx, start, end):
                return True
        return self._gestation_in_text(ctx)

    def _gestation_in_text(self, ctx: _Context) -> bool:
        """Pregnancy stated as a gestational age without the word "pregnant": "I'm 30 weeks", "my wife is 34 weeks
        and ...", "34+2", "28 wks gone", or a bare "34 weeks" opening a sentence of a text that also names a
        pregnancy-only word (bump, midwife, maternity, contractions, waters, kicks ...). Not a duration or an age
        ("for 6 weeks", "6 weeks old", "2 weeks ago", "10 weeks sober", "6 weeks postpartum", "born at 34 weeks"),
        and not negated, past or hypothetical ("when I was 34 weeks with my son")."""
        norms = ctx.norms
        words = [(i, t) for i, t in enumerate(norms) if t not in (" ", "\n")]
        context = any(t in GESTATION_CONTEXT for _, t in words)
        for k, (i, tok) in enumerate(words):
            if not tok.isdigit() or not GESTATION_MIN <= int(tok) <= GESTATION_MAX:
                continue
            prev = [t for _, t in words[max(0, k - 3) : k]]
            nxt = [t for _, t in words[k + 1 : k + 4]]
            if GESTATION_NOT_BEFORE & set(prev[-2:]):
                continue
            # "34+2" (weeks + days, the obstetric notation) stands for "34 weeks"
            if len(nxt) >= 2 and nxt[0] == "+" and nxt[1].isdigit() and int(nxt[1]) <= 6:
                nxt = nxt[2:]
                if nxt and nxt[0] in GESTATION_WEEKS:
                    nxt = nxt[1:]
            elif nxt and nxt[0] in GESTATION_WEEKS:
                nxt = nxt[1:]
            else:
                continue
            after = nxt[0] if nxt else None
            if after in GESTATION_NOT_AFTER:
                continue
            ends = after is None or after in PHRASE_BREAKS or after in GESTATION_AFTER
            prev_core = [t for t in prev if t not in GESTATION_HEDGES]
            # "I'm (nearly) 30 weeks", "my wife is 34 weeks", "she's 34 weeks" (beside a pregnancy-only word)
            framed = len(prev_core) >= 2 and prev_core[-1] in GESTATION_BE and (
                prev_core[-2] in GESTATION_BE_SUBJECTS or (prev_core[-2] in GESTATION_BE_CONTEXT_SUBJECTS and context)
            )
            # "28 wks gone", "34 weeks along / gestation"
            named = after in ("gone", "along", "gestation", "pg", "preg")
            # a bare "34 weeks" opening the text or a sentence, in a text with a pregnancy-only word
            opening = context and (not prev or prev[-1] in PHRASE_BREAKS)
            if not (named or ((framed or opening) and ends)):
                continue
            # "I'm nearly / almost 12 weeks": the hedge is a hypothetical marker elsewhere ("nearly fainted"), not here
            hedge_only = prev[-1:] in (["nearly"], ["almost"]) and ctx.hypothetical[i] and not any(
                e <= i < e + 8 and ctx.clause[s] == ctx.clause[i] and norms[s:e] not in (["nearly"], ["almost"])
                for s, e in _seq_index(norms, HYPOTHETICAL)
            )
            if hedge_only:
                ctx.hypothetical[i] = False
                try:
                    blocked = self._blocked(ctx, i, i + 1)
                finally:
                    ctx.hypothetical[i] = True
            else:
                blocked = self._blocked(ctx, i, i + 1)
            if not blocked:
                return True
        return False

    def _conditions_ok(self, rule: _Rule, text: str, ctx: _Context, age_years, sex, pregnant) -> bool:
        cond = rule.conditions
        if not cond:
            return True
        if "age_max_months" in cond or "age_min_months" in cond:
            age_months = age_years * 12 if age_years is not None else self.text_age_months(text)
            if age_months is None:
                return False
            if "age_max_months" in cond and not age_months < cond["age_max_months"]:
                return False
            if "age_min_months" in cond and not age_months >= cond["age_min_months"]:
                return False
        if "temp_min_c" in cond or "temp_required_c" in cond:
            temps = self.text_temperatures_c(text)
            if "temp_required_c" in cond and not (temps and max(temps) >= cond["temp_required_c"]):
                return False
            if "temp_min_c" in cond and temps and max(temps) < cond["temp_min_c"]:
                return False
        if cond.get("pregnant") == "yes":
            if sex is not None and str(sex).lower() in ("male", "m"):
                return False
            if not (pregnant is True or self._pregnant_in_text(ctx)):
                return False
        if "sex" in cond and sex is not None:
            s = str(sex).lower()
            s = {"m": "male", "f": "female"}.get(s, s)
            if s in ("male", "female") and s != cond["sex"]:
                return False
        return True

    def _raw_matches(self, doc, positions: dict[str, list[int]]) -> list[tuple[int, int, int]]:
        raw_matches: list[tuple[int, int, int]] = []
        n_tokens = len(doc)
        # repetitive text (a table word 8+ times) uses the strict, linear-time patterns
        repetitive = any(len(w) >= REPEAT_LIMIT for lem, w in positions.items() if lem in self._pattern_words)
        present = positions.keys()
        for lemma, where in positions.items():
            for last, fast_matcher, strict_matcher, reach, need in self._buckets.get(lemma, ()):
                if last is not None and last not in positions:
                    continue  # no term of this part can end in this text
                if not any(present >= words for words in need):
                    continue  # no term of this part has all its words in this text
                matcher = strict_matcher if repetitive else fast_matcher
                # a spaCy Matcher call costs O(len(doclike)); run it only on the windows where a
                # match can start (the first word's positions) and could still end
                lo = hi = -1
                for i in where + [None]:
                    if i is not None and lo >= 0 and i <= hi and hi - lo < WINDOW_CAP:
                        hi = min(n_tokens, i + reach)
                        continue
                    if lo >= 0:
                        raw_matches.extend((m, lo + a, lo + b) for m, a, b in matcher(doc[lo:hi]))
                    if i is not None:
                        lo, hi = i, min(n_tokens, i + reach)
        return raw_matches

    # -- matching ---------------------------------------------------------------------------
    def match(
        self,
        text: str,
        *,
        age_years: float | None = None,
        sex: str | None = None,
        pregnant: bool | None = None,
    ) -> list[FlagHit]:
        return self._match(text, age_years, sex, pregnant, respect_context=True)

    def blocked_mentions(
        self,
        text: str,
        *,
        age_years: float | None = None,
        sex: str | None = None,
        pregnant: bool | None = None,
        fired: list[FlagHit] | None = None,
    ) -> list[FlagHit]:
        """The rules a text *mentions* but that did not fire because every mention is negated, hypothetical,
        history or someone else's past ("no stiff neck", "my dad had a stroke"): what ``match`` would return if
        context were ignored, minus what it does return (``fired``, when the caller already has it)."""
        if fired is None:
            fired = self.match(text, age_years=age_years, sex=sex, pregnant=pregnant)
        done = {h.rule_id for h in fired}
        return [h for h in self._match(text, age_years, sex, pregnant, respect_context=False) if h.rule_id not in done]

    def _match(self, text, age_years, sex, pregnant, *, respect_context: bool) -> list[FlagHit]:
        if not isinstance(text, str):
            raise TypeError("text must be a string")
        if not text.strip():
            return []
        doc, norms, positions = self._doc(text)
        raw_matches = self._raw_matches(doc, positions)
        if not raw_matches:
            return []
        ctx = self._context(norms)
        strings = self.nlp.vocab.strings
        # per (rule, kind, group): every unblocked (start, end), in text order
        found: dict[tuple[int, str, int], list[tuple[int, int]]] = {}
        blocked: dict[tuple[int, int, bool], bool] = {}
        deferred: list[tuple[tuple[int, str, int], int, int]] = []
        for match_id, start, end in sorted(set(raw_matches), key=lambda m: (m[1], m[2])):
            key_str = strings[match_id]
            rule_index, kind, gi = key_str.split("|")
            key = (int(rule_index), kind, int(gi))
            # "poo is not black", "face isn't drooping": a "not" in the gap of a term negates it, unless the words
            # matched are those of a term that itself says "not" ("can not lift my arm" in the same group)
            if respect_context and "not" in norms[start + 1 : end - 1] and not self._not_term_matched(
                key_str, [doc[i].lemma_ for i in range(start, end)]
            ):
                continue
            post_negation = self.rules[key[0]].conditions.get("transient") != "yes"
            bkey = (start, end, post_negation)
            if bkey not in blocked:
                blocked[bkey] = respect_context and self._blocked(ctx, start, end, post_negation)
            if blocked[bkey]:
                if kind == "g" and ctx.negated[start] and not self._blocked(ctx, start, end, post_negation, False):
                    deferred.append((key, start, end))
                continue
            found.setdefault(key, []).append((start, end))
        # "no wet nappy for 12 hours", "hasn't pooed or farted for 2 days": a negation word that is part
        # of another finding of the same rule does not negate this rule's other findings
        for key, start, end in deferred:
            rule = self.rules[key[0]]
            others = [
                sp for g in range(len(rule.groups)) if g != key[2] for sp in found.get((key[0], "g", g), ())
            ]
            if others and all(any(a <= t < b for a, b in others) for t in ctx.neg_by[start]):
                found.setdefault(key, []).append((start, end))
                found[key].sort()
        hits: list[FlagHit] = []
        # only rules whose first group was found can fire (every group must be found)
        for rule in [self.rules[i] for i in sorted({k[0] for k in found if k[1] == "g" and k[2] == 0})]:
            options = [found.get((rule.index, "g", gi)) for gi in range(len(rule.groups))]
            if any(o is None for o in options):
                continue
            window = int(rule.conditions.get("window", GROUP_WINDOW))
            spans = self._closest(options, window) if len(options) > 1 else [options[0][0]]
            if spans is None:
                continue
            if any((rule.index, "x", gi) in found for gi in range(len(rule.excludes))):
                continue
            if not self._conditions_ok(rule, text, ctx, age_years, sex, pregnant):
                continue
            matched = []
            for start, end in sorted(set(spans)):
                char_start = doc[start].idx
                char_end = doc[end - 1].idx + len(doc[end - 1].text)
                matched.append(Span(text[char_start:char_end], char_start, char_end))
            hits.append(FlagHit(rule.rule_id, rule.label, rule.urgency, rule.center, matched, rule.source))
        hits.sort(key=lambda h: (RULE_URGENCIES.index(h.urgency), self._order[h.rule_id]))
        return hits

    @staticmethod
    def _closest(options: list[list[tuple[int, int]]], window: int = GROUP_WINDOW) -> list[tuple[int, int]] | None:
        """One span per group, all within `window` tokens of each other (earliest such set)."""
        for anchor in options[0]:
            chosen = [anchor]
            for group in options[1:]:
                best = min(group, key=lambda sp: abs(sp[0] - anchor[0]))
                chosen.append(best)
            lo = min(sp[0] for sp in chosen)
            hi = max(sp[1] for sp in chosen)
            if hi - lo <= window:
                return chosen
        return None

    @property
    def finding_words(self) -> frozenset[str]:
        """Normal forms of the content words of the rule table's terms ("chest", "pain", "droop", "seizure", ...):
        what counts as naming a finding when a denied / past scope is weighed (``triage.mentions``)."""
        if self._finding_words is None:
            self._finding_words = frozenset(
                normalise_word(w) for w in self._vocab_words if w.isalpha() and len(w) > 2 and w not in FINDING_STOP
            )
        return self._finding_words

    def is_finding_word(self, raw: str) -> bool:
        """True when ``raw`` (one word as written) names a finding: a content word of the rule table (after the same
        normalisation and one-edit spelling fix as matching) or a clinical abbreviation ("CP", "SOB", "CVA")."""
        w = raw.lower().strip("'")
        if w in CLINICAL_SHORTHAND:
            return True
        return w.isalpha() and len(w) > 2 and w not in FINDING_STOP and self._fix(w) in self.finding_words

    def _not_term_matched(self, key: str, lemmas: list[str]) -> bool:
        """True when a term of this group that itself says "not" has all its words, in order, in the matched span."""
        for words in self._not_terms.get(key, ()):
            k = 0
            for lemma in lemmas:
                if k < len(words) and lemma == words[k]:
                    k += 1
            if k == len(words):
                return True
        return False

    def rule_ids(self) -> list[str]:
        return [r.rule_id for r in self.rules]

    def rule(self, rule_id: str) -> _Rule:
        for r in self.rules:
            if r.rule_id == rule_id:
                return r
        raise KeyError(rule_id)


@lru_cache(maxsize=4)
def default_matcher(table_path: str | None = None) -> RedFlagMatcher:
    """A process-wide matcher for the default table (build once, reuse)."""
    return RedFlagMatcher(table_path)
