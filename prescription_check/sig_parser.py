"""Free-text sig line -> PrescriptionItem, with spaCy (``spacy.blank("en")`` tokenizer + ``Matcher``; no model).

    >>> parse_sig("Amoxicillin 500 mg PO TID x 7 days").item
    PrescriptionItem(drug='amoxicillin', dose=500.0, unit='mg', route='oral', frequency='tid', duration_days=7.0, ...)

A light text pre-normalisation (``b.i.d.`` -> ``bid``, ``500mg`` -> ``500 mg``, ``x7days`` -> ``x 7 days``,
``q4-6h`` kept whole) precedes tokenisation; the Matcher finds STRENGTH, DOSE, ROUTE, FREQ, DURATION and PRN
spans; the drug is the text before the first of them (minus verbs such as "take").  A line with no drug text,
or with neither a dose nor a frequency, is ``ok=False`` and becomes an ``unparsed_sig`` finding in the engine.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache

from pydantic import ValidationError

from prescription_check.normalize import COUNT_UNITS, MASS_UNITS_MG, VOLUME_UNITS_ML, canonical_unit
from prescription_check.schemas import PrescriptionItem

ROUTES = {
    "po": "oral", "oral": "oral", "orally": "oral", "by mouth": "oral", "per os": "oral", "os": "oral",
    "iv": "iv", "intravenous": "iv", "intravenously": "iv", "ivpb": "iv",
    "im": "im", "intramuscular": "im", "intramuscularly": "im",
    "sc": "sc", "sq": "sc", "subq": "sc", "subcut": "sc", "subcutaneous": "sc", "subcutaneously": "sc", "sub-q": "sc",
    "pr": "rectal", "rectal": "rectal", "rectally": "rectal", "per rectum": "rectal",
    "sl": "sublingual", "sublingual": "sublingual", "sublingually": "sublingual",
    "inh": "inhaled", "inhaled": "inhaled", "inhale": "inhaled", "inhalation": "inhaled", "neb": "inhaled",
    "top": "topical", "topical": "topical", "topically": "topical", "td": "transdermal", "transdermal": "transdermal",
    "ou": "ophthalmic", "od": None, "os_eye": "ophthalmic", "ophth": "ophthalmic", "ophthalmic": "ophthalmic",
    "pv": "vaginal", "vaginal": "vaginal", "vaginally": "vaginal", "nasal": "nasal", "intranasal": "nasal",
    "in": None,
}
_SINGLE_ROUTES = [k for k, v in ROUTES.items() if v and " " not in k and k != "os"]

FREQ_TOKENS = {
    "qd": "qd", "od": "daily", "daily": "daily", "qday": "daily", "qam": "qam", "qpm": "qpm", "qhs": "qhs", "hs": "qhs",
    "nightly": "qhs", "mane": "qam", "nocte": "qhs", "bid": "bid", "bd": "bid", "tid": "tid", "tds": "tid",
    "qid": "qid", "qds": "qid", "qod": "every other day", "eod": "every other day", "weekly": "weekly",
    "qw": "weekly", "qwk": "weekly", "biw": "twice weekly", "tiw": "three times weekly", "monthly": "monthly",
    "stat": "stat", "once": "once", "hourly": "q1h", "ac": "ac", "pc": "pc", "qweek": "weekly", "qwk.": "weekly",
    "with meals": "tid", "before meals": "tid", "after meals": "tid", "at night": "qhs", "at bedtime": "qhs",
    "at nighttime": "qhs",
}
_MEAL_ONCE = {"breakfast", "dinner", "supper", "lunch"}
_WORDNUM = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "ten": 10, "fourteen": 14,
            "half": 0.5}
DURATION_UNITS = {"d": 1, "day": 1, "days": 1, "dys": 1, "wk": 7, "wks": 7, "week": 7, "weeks": 7, "w": 7,
                  "mo": 30, "month": 30, "months": 30, "mos": 30}
PRN_WORDS = {"prn", "p.r.n", "p.r.n."}
LEAD_WORDS = {"take", "takes", "give", "apply", "inject", "use", "inhale", "instill", "insert", "sig", "rx", "tab",
              "tabs", "cap", "caps", "of", "-", ":", "dispense"}
_UNIT_WORDS = sorted({*MASS_UNITS_MG, *VOLUME_UNITS_ML, *COUNT_UNITS} - {"l", "u", "gr", "kg", "ng"},
                     key=len, reverse=True)


@dataclass
class ParsedSig:
    text: str
    item: PrescriptionItem | None
    ok: bool
    problems: list[str] = field(default_factory=list)
    spans: list[tuple[str, str]] = field(default_factory=list)


_MAX_PER_DAY = re.compile(r"\bmax(?:imum)?\.?\s*(?:of\s*)?(\d+)\s*(doses?|tabs?|tablets?|caps?|capsules?|pills?|"
                          r"times)?\s*(?:per|/|a|in|each)?\s*(?:day|daily|24\s*h(?:ours?|rs?)?|d)\b")
_DOTTED = re.compile(r"\b((?:[a-z]\.){2,}[a-z]?\.?)")
_NUM_UNIT = re.compile(r"(?<![a-z\d.])(\d+(?:\.\d+)?(?:/\d+)?)(?=(" + "|".join(map(re.escape, _UNIT_WORDS)) +
                       r"|d|days?|wks?|weeks?|mos?|months?|x)\b)")
_X_NUM = re.compile(r"(?<![a-z])(x|×)(?=\d)")
_QRANGE = re.compile(r"\bq\s*(\d+)\s*(?:-|to)\s*(\d+)\s*(h|hr|hrs|hours?)\b")
_QH = re.compile(r"\bq\s*(\d+)\s*(h|hr|hrs|hours?)\b")
_STRENGTH_RE = re.compile(r"(\d+(?:\.\d+)?)\s*(mg|mcg|g)\s*/\s*(\d+(?:\.\d+)?)?\s*(ml|mls)\b")


def _prenormalise(text: str) -> str:
    t = text.lower().replace("µ", "mc").replace("μ", "mc").replace(",", " ").replace(";", " ")
    t = _DOTTED.sub(lambda m: m.group(1).replace(".", ""), t)
    t = re.sub(r"\bim\b", "intramuscular", t)  # spaCy splits "im" like "I'm"
    t = re.sub(r"#\s*(\d)\b", r"no\1", t)  # "Tylenol #3" -> "tylenol no3"
    t = re.sub(r"\b(po|iv|im|sc|prn|qhs|bid|tid|qid|qd|hs)\.(?=\s|$)", r"\1", t)
    t = _QRANGE.sub(lambda m: f"q{m.group(1)}-{m.group(2)}h", t)
    t = _QH.sub(lambda m: f"q{m.group(1)}h", t)
    t = re.sub(r"\b([1-4])\s*x\s*/\s*(day|d|week|wk)\b",
               lambda m: f"{m.group(1)} times a {'week' if m.group(2) in ('week', 'wk') else 'day'}", t)
    t = _X_NUM.sub("x ", t)
    t = _NUM_UNIT.sub(r"\1 ", t)
    t = _STRENGTH_RE.sub(lambda m: f" {m.group(1)}{m.group(2)}/{m.group(3) or '1'}ml ", t)
    # "Augmentin 875/125 mg one tab": a ratio with a mass unit is the product's strengths, not a dose
    t = re.sub(r"(?<![\d.])(\d+(?:\.\d+)?/\d+(?:\.\d+)?)\s+(mg|mcg|g)\b(?!\s*/)", r"\1-\2", t)
    t = re.sub(r"(\d)\s*-\s*(\d)(?=\s*(tab|cap|pill|puff|drop|ml|mg)s?\b)", r"\1-\2", t)
    return re.sub(r"\s+", " ", t).strip()


class _Parser:
    def __init__(self):
        import spacy
        from spacy.matcher import Matcher

        self.nlp = spacy.blank("en")
        # keep "250mg/5ml", "1-2", "q4-6h", "1/2" whole
        infixes = [p for p in self.nlp.Defaults.infixes if "-" not in p and "/" not in p]
        self.nlp.tokenizer.infix_finditer = spacy.util.compile_infix_regex(infixes).finditer
        m = Matcher(self.nlp.vocab)
        num = {"TEXT": {"REGEX": r"^(\d+(\.\d+)?|\d+/\d+|\.\d+|\d+-\d+(\.\d+)?)$"}}
        wordnum = {"LOWER": {"IN": list(_WORDNUM)}}
        units = {"LOWER": {"IN": [*_UNIT_WORDS, "mls", "units", "tablet(s)", "cap(s)"]}}
        m.add("STRENGTH", [[{"TEXT": {"REGEX": r"^\d+(\.\d+)?(mg|mcg|g)/\d+(\.\d+)?ml$"}}]])
        m.add("DOSE", [[num, units], [wordnum, units], [num, {"LOWER": "to"}, num, units]])
        m.add("ROUTE", [[{"LOWER": {"IN": _SINGLE_ROUTES}}], [{"LOWER": "by"}, {"LOWER": "mouth"}],
                        [{"LOWER": "per"}, {"LOWER": {"IN": ["os", "rectum", "mouth"]}}],
                        [{"LOWER": {"IN": ["via", "by"]}}, {"LOWER": {"IN": ["inhaler", "nebulizer", "injection"]}}]])
        m.add("FREQ", [
            [{"LOWER": {"IN": list(FREQ_TOKENS)}}],
            [{"LOWER": {"REGEX": r"^q\d+(-\d+)?h$"}}],
            [{"LOWER": {"REGEX": r"^q\d+d$"}}],
            [{"LOWER": {"IN": ["every", "q"]}}, {"TEXT": {"REGEX": r"^\d+(-\d+)?$"}},
             {"LOWER": {"IN": ["h", "hr", "hrs", "hour", "hours", "d", "day", "days"]}}],
            [{"LOWER": "every"}, {"LOWER": {"IN": ["other", "second", "2nd"]}}, {"LOWER": "day"}],
            [{"LOWER": "every"}, {"LOWER": {"IN": ["day", "morning", "night", "evening", "week", "month"]}}],
            [{"LOWER": {"IN": ["once", "twice", "thrice", "one", "two", "three", "four", "1", "2", "3", "4", "1x",
                               "2x", "3x", "4x"]}},
             {"LOWER": {"IN": ["times", "time", "x"]}, "OP": "?"},
             {"LOWER": {"IN": ["a", "per", "each", "every", "/"]}, "OP": "?"},
             {"LOWER": {"IN": ["day", "daily", "week", "weekly", "wk", "month", "d"]}}],
            [{"LOWER": "at"}, {"LOWER": {"IN": ["bedtime", "night", "nighttime"]}}],
            [{"LOWER": "in"}, {"LOWER": "the"}, {"LOWER": {"IN": ["morning", "evening"]}}],
            [{"LOWER": {"IN": ["alternate", "alternating"]}}, {"LOWER": {"IN": ["day", "days"]}}],
            [{"LOWER": {"IN": ["before", "after", "with"]}}, {"LOWER": "meals"}],
            [{"LOWER": {"IN": ["before", "after", "with"]}}, {"LOWER": {"IN": ["evening", "morning", "the"]}, "OP": "?"},
             {"LOWER": {"IN": ["meal", "breakfast", "dinner", "supper", "lunch"]}}],
            [{"LOWER": {"IN": ["q", "every", "per", "a", "once"]}}, {"LOWER": {"IN": ["week", "wk"]}}],
        ])
        m.add("DURATION", [
            [{"LOWER": {"IN": ["x", "for", "×", "times"]}}, num, {"LOWER": {"IN": list(DURATION_UNITS)}}],
            [{"LOWER": {"IN": ["x", "for", "×"]}}, wordnum, {"LOWER": {"IN": list(DURATION_UNITS)}}],
            [{"LOWER": "for"}, {"LOWER": {"IN": ["a", "one"]}}, {"LOWER": {"IN": ["week", "month", "day"]}}],
            [num, {"LOWER": {"IN": ["d", "days", "day", "wk", "wks", "weeks", "week"]}}],
        ])
        m.add("PRN", [[{"LOWER": {"IN": ["prn", "p.r.n", "p.r.n."]}}],
                      [{"LOWER": "as"}, {"LOWER": {"IN": ["needed", "required"]}}],
                      [{"LOWER": "when"}, {"LOWER": {"IN": ["needed", "required"]}}],
                      [{"LOWER": "if"}, {"LOWER": "needed"}]])
        self.matcher = m
        self.lock = threading.Lock()

    def parse(self, text: str) -> ParsedSig:
        from spacy.util import filter_spans

        norm = _prenormalise(text)
        with self.lock:  # the route handlers run in a thread pool; keep spaCy calls serial
            doc = self.nlp(norm)
            matches = self.matcher(doc)
        spans = filter_spans([doc[s:e] for _, s, e in matches])
        labelled = []
        by_span = {(s, e): self.nlp.vocab.strings[mid] for mid, s, e in matches}
        for sp in spans:
            labelled.append((by_span[(sp.start, sp.end)], sp))
        # a DURATION "7 days" can be swallowed by nothing else; a DOSE "1 d"? no (d is not a unit)
        first = min((sp.start for _, sp in labelled), default=len(doc))
        drug_tokens = [t.text for t in doc[:first]]
        while drug_tokens and drug_tokens[0] in LEAD_WORDS:
            drug_tokens.pop(0)
        bare_strength: float | None = None
        bare_unit: str | None = None
        # "augmentin 875 ..." / "tylenol 500" : a trailing bare number is the strength in mg
        if not drug_tokens:
            # "take 1-2 tablets of hydrocodone every 4-6 hours": the drug follows "of" after the dose
            for k, (label, sp) in enumerate(labelled):
                if label == "DOSE" and sp.end < len(doc) and doc[sp.end].lower_ == "of":
                    stop = labelled[k + 1][1].start if k + 1 < len(labelled) else len(doc)
                    drug_tokens = [t.text for t in doc[sp.end + 1:stop]]
                    break
        while drug_tokens and re.fullmatch(r"\d+(\.\d+)?", drug_tokens[-1]):
            bare_strength = float(drug_tokens.pop())
            bare_unit = "mg"
        # "lisinopril 10mg" where drug text ends with a glued strength token
        drug = re.sub(r"(\d)-(mg|mcg|g)\b", r"\1 \2", " ".join(drug_tokens)).strip(" -:") or None
        problems: list[str] = []
        dose = unit = route = frequency = None
        duration = None
        prn = False
        strength_per_ml = None
        masses: list[tuple[float, str]] = []
        counts: list[tuple[float, str]] = []
        volumes: list[tuple[float, str]] = []
        found: list[tuple[str, str]] = []
        for label, sp in labelled:
            found.append((label, sp.text))
            toks = [t.text for t in sp]
            if label == "STRENGTH":
                mm = re.match(r"(\d+(?:\.\d+)?)(mg|mcg|g)/(\d+(?:\.\d+)?)ml", toks[0])
                mg = float(mm.group(1)) * MASS_UNITS_MG[mm.group(2)]
                strength_per_ml = mg / float(mm.group(3))
            elif label == "DOSE":
                value = _num(toks[0]) if toks[1] != "to" else _num(toks[2])
                u = canonical_unit(toks[-1].replace("(s)", ""))
                if value is None:
                    continue
                if toks[-1] in MASS_UNITS_MG:
                    masses.append((value, u))
                elif toks[-1] in VOLUME_UNITS_ML or toks[-1] == "mls":
                    volumes.append((value, u if u != "mls" else "mL"))
                else:
                    counts.append((value, u))
            elif label == "ROUTE" and route is None:
                key = " ".join(toks)
                route = ROUTES.get(key) or ("oral" if "mouth" in key else "inhaled" if any(
                    w in key for w in ("inhaler", "nebulizer")) else None)
            elif label == "FREQ" and frequency is None:
                key = " ".join(toks)
                if key in FREQ_TOKENS:
                    frequency = FREQ_TOKENS[key]
                elif toks[-1] in _MEAL_ONCE or toks[-1] == "meal":  # "with evening meal", "before breakfast"
                    frequency = "daily"
                elif toks[-1] in {"week", "wk"}:
                    frequency = "weekly"
                else:
                    frequency = key
            elif label == "DURATION" and duration is None:
                nums = [t for t in toks if _num(t) is not None]
                per = DURATION_UNITS.get(toks[-1], 1)
                if nums:
                    duration = _num(nums[0]) * per
                elif toks[-2] in {"a", "one"}:
                    duration = float(per)
            elif label == "PRN":
                prn = True
        if masses:
            dose, unit = masses[0]
            if counts and counts[0][1] in {"tab", "cap"} and masses[0] and len(masses) == 1:
                # "lisinopril 10 mg 2 tabs": strength x count
                dose = masses[0][0] * counts[0][0]
        elif volumes:
            dose, unit = volumes[0]
        elif counts:
            dose, unit = counts[0]
            if bare_strength is not None and unit in {"tab", "cap"}:
                dose, unit = bare_strength * counts[0][0], bare_unit
        elif bare_strength is not None:
            dose, unit = bare_strength, bare_unit
        # "q4h prn, max 3 doses/day" / "max 6 tabs in 24 h": the stated maximum bounds the daily dose
        mx = _MAX_PER_DAY.search(norm)
        if mx:
            n = float(mx.group(1))
            what = mx.group(2) or "doses"
            per_dose = counts[0][0] if counts and what.startswith(("tab", "cap", "pill")) else 1.0
            times = n / per_dose if per_dose else n
            if times > 0:
                frequency = f"{times:g} times a day"
        if not drug:
            problems.append("no drug name found")
        if dose is None and frequency is None:
            problems.append("neither a dose nor a frequency found")
        item = None
        if drug:
            fields = dict(drug=drug, dose=dose, unit=unit, strength_mg_per_ml=strength_per_ml, route=route,
                          frequency=frequency, duration_days=duration, prn=prn)
            item = _item_within_limits(fields, problems)
        return ParsedSig(text, item, not problems, problems, found)


def _item_within_limits(fields: dict, problems: list[str]) -> PrescriptionItem | None:
    """The parsed item, with every value the schema refuses (a dose of 0, a duration of 99999 days, a number too
    long for any limit) left out and named in ``problems``: the sig is then not ok (an ``unparsed_sig`` finding),
    never an exception and never an item outside the schema's limits."""
    for _ in range(len(fields)):
        try:
            return PrescriptionItem(**fields)
        except ValidationError as exc:
            bad = {str(e["loc"][0]) for e in exc.errors() if e.get("loc") and str(e["loc"][0]) in fields}
            if not bad or "drug" in bad:
                problems.append("the sig line does not give a usable item")
                return None
            for name in sorted(bad):
                problems.append(f"{name.replace('_', ' ')} {fields[name]:g} is out of range" if isinstance(
                    fields[name], float) else f"{name.replace('_', ' ')} is out of range")
                fields[name] = None
    return None


def _num(tok: str) -> float | None:
    tok = tok.lower()
    if tok in _WORDNUM:
        return float(_WORDNUM[tok])
    try:
        if "/" in tok:
            a, b = tok.split("/", 1)
            return float(a) / float(b)
        if "-" in tok:  # "1-2 tabs": take the upper bound (the worst case for dose limits)
            return float(tok.split("-")[-1])
        return float(tok)
    except (ValueError, ZeroDivisionError):
        return None


_parser: _Parser | None = None
_parser_lock = threading.Lock()


def get_parser() -> _Parser:
    global _parser
    if _parser is None:
        with _parser_lock:
            if _parser is None:
                _parser = _Parser()
    return _parser


@lru_cache(maxsize=20_000)
def parse_sig(text: str) -> ParsedSig:
    """Parse one sig line (cached; the parser is created on first use)."""
    if not text or not text.strip():
        return ParsedSig(text, None, False, ["empty sig line"])
    return get_parser().parse(text)
