"""Drug-name normalisation, unit conversion and frequency parsing.

``clean``/``strip_salts``/``split_combination`` are pure string helpers used both by the KB build
(to build the name index) and at check time.  ``Normalizer`` resolves a name as written (brand, generic,
salt form, abbreviation, combination, plain misspelling) to canonical ingredient(s) using the name
index stored in the KB artefact.  Fuzzy matching is a bounded edit distance over a deletion index
(SymSpell-style), built lazily on the first miss and cached per query.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from functools import lru_cache

SALT_WORDS = frozenset(
    """hydrochloride hcl dihydrochloride hydrobromide sodium disodium monosodium potassium dipotassium monopotassium
    calcium magnesium sulfate sulphate bisulfate maleate mesylate dimesylate besylate besilate tartrate bitartrate
    succinate fumarate hemifumarate citrate acetate phosphate bromide chloride hyclate monohydrate dihydrate trihydrate
    sesquihydrate hemihydrate pentahydrate anhydrous dipropionate propionate furoate valerate nitrate lactate
    gluconate tromethamine xinafoate pamoate embonate decanoate enanthate cypionate camsylate napsylate oxalate
    medoxomil axetil pivoxil hexetil mofetil ethylsuccinate estolate stearate lysine arginine""".split()
)

FORM_WORDS = frozenset(
    """tab tabs tablet tablets cap caps capsule capsules oral po solution susp suspension syrup elixir inj injection
    injectable vial amp ampoule cream ointment gel patch inhaler neb nebulizer drops drop er xr sr cr la xl dr ec ds
    es od odt chewable chew film coated mr modified release extended delayed immediate ir pfs pen solostar flexpen
    kwikpen generic brand strength extra regular usp bp ph eur po iv im sc sq subq prn daily qd od bid tid qid qhs
    hs weekly once twice""".split()
)

_SPACE = re.compile(r"\s+")
_STRIP = re.compile(r"[^\w\s\-/+,.'()%]")


def clean(text: str) -> str:
    """Lower-case, strip accents and odd punctuation, collapse spaces."""
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.lower().replace("®", "").replace("™", "")
    text = _STRIP.sub(" ", text)
    return _SPACE.sub(" ", text).strip(" .,-")


# when only one of these would remain, the salt IS the drug ("potassium chloride", "ferrous sulfate")
_CATIONS = frozenset("potassium sodium calcium magnesium ferrous ferric iron zinc lithium aluminum aluminium silver "
                     "copper ammonium barium".split())


def strip_salts(name: str) -> str:
    """'metformin hydrochloride' -> 'metformin'; keeps the name if nothing (or only a cation) would remain."""
    words = name.split()
    while len(words) > 1 and words[-1] in SALT_WORDS:
        words.pop()
    if len(words) == 1 and words[0] in _CATIONS and words[0] != name:
        return name
    return " ".join(words)


_COMBO_SPLIT = re.compile(r"\s*(?:/|\+|;|\band\b|\bwith\b|&)\s*")


def split_combination(name: str) -> list[str]:
    """'amoxicillin and clavulanic acid' -> [amoxicillin, clavulanic acid]; 'a, b, and c' -> [a, b, c]."""
    if not _COMBO_SPLIT.search(name):
        return [name]
    parts = _COMBO_SPLIT.split(name)
    out: list[str] = []
    for part in parts:
        if "," in part and len(parts) > 1:
            out.extend(p.strip() for p in part.split(","))
        else:
            out.append(part.strip())
    return [p for p in out if p]


# --------------------------------------------------------------------------------------------- units
MASS_UNITS_MG: dict[str, float] = {
    "mg": 1.0, "milligram": 1.0, "milligrams": 1.0, "mgs": 1.0,
    "g": 1000.0, "gm": 1000.0, "gms": 1000.0, "gram": 1000.0, "grams": 1000.0, "gr": 1000.0,
    "mcg": 0.001, "µg": 0.001, "μg": 0.001, "ug": 0.001, "microgram": 0.001, "micrograms": 0.001,
    "ng": 1e-6, "kg": 1e6,
}
VOLUME_UNITS_ML: dict[str, float] = {"ml": 1.0, "cc": 1.0, "millilitre": 1.0, "milliliter": 1.0, "l": 1000.0,
                                     "tsp": 5.0, "teaspoon": 5.0, "teaspoons": 5.0, "tbsp": 15.0,
                                     "tablespoon": 15.0}
COUNT_UNITS = {"tab": "tab", "tabs": "tab", "tablet": "tab", "tablets": "tab", "cap": "cap", "caps": "cap",
               "capsule": "cap", "capsules": "cap", "pill": "tab", "pills": "tab", "puff": "puff", "puffs": "puff",
               "drop": "drop", "drops": "drop", "gtt": "drop", "gtts": "drop", "patch": "patch",
               "supp": "supp", "suppository": "supp", "sachet": "sachet", "spray": "spray", "sprays": "spray",
               "unit": "units", "units": "units", "u": "units", "iu": "units", "application": "application",
               "meq": "mEq", "mmol": "mmol"}


def canonical_unit(unit: str | None) -> str | None:
    if not unit:
        return None
    u = unit.strip().lower().rstrip(".")
    if u in MASS_UNITS_MG:
        return {1.0: "mg", 1000.0: "g", 0.001: "mcg", 1e-6: "ng", 1e6: "kg"}[MASS_UNITS_MG[u]]
    if u in VOLUME_UNITS_ML:
        return "mL" if u in {"ml", "cc", "millilitre", "milliliter"} else u
    if u in COUNT_UNITS:
        return COUNT_UNITS[u]
    return u


def dose_to_mg(dose: float | None, unit: str | None, strength_mg_per_ml: float | None = None,
               strength_mg_per_unit: float | None = None) -> float | None:
    """Convert a dose to mg; None when the unit cannot be converted (units, puffs without strength...)."""
    if dose is None:
        return None
    u = (unit or "mg").strip().lower().rstrip(".")
    if u in MASS_UNITS_MG:
        return dose * MASS_UNITS_MG[u]
    if u in VOLUME_UNITS_ML:
        if strength_mg_per_ml is None:
            return None
        return dose * VOLUME_UNITS_ML[u] * strength_mg_per_ml
    if u in COUNT_UNITS and COUNT_UNITS[u] in {"tab", "cap", "supp", "sachet", "patch"}:
        return dose * strength_mg_per_unit if strength_mg_per_unit else None
    return None


# ----------------------------------------------------------------------------------------- frequency
_FREQ_EXACT: dict[str, float] = {}
for _names, _per_day in (
    ("qd od daily once-daily q24h q24 qday qam qpm qhs hs qn nightly mane nocte om on", 1.0),
    ("bid bd q12h q12 b.i.d. b.d.", 2.0),
    ("tid tds q8h q8 t.i.d. t.d.s.", 3.0),
    ("qid qds q6h q6 q.i.d. q.d.s.", 4.0),
    ("q4h q4", 6.0), ("q3h q3", 8.0), ("q2h q2", 12.0), ("q1h qh hourly", 24.0), ("q5h", 24 / 5),
    ("q48h qod eod", 0.5), ("q72h", 1 / 3), ("weekly qw qwk q7d", 1 / 7), ("biw", 2 / 7), ("tiw", 3 / 7),
    ("monthly", 1 / 30), ("stat once", 1.0), ("ac pc", 3.0),
):
    for _n in _names.split():
        _FREQ_EXACT[_n] = _per_day

_WORD_NUM = {"once": 1, "one": 1, "twice": 2, "two": 2, "three": 3, "thrice": 3, "four": 4, "five": 5, "six": 6,
             "1": 1, "2": 2, "3": 3, "4": 4, "5": 5, "6": 6, "1x": 1, "2x": 2, "3x": 3, "4x": 4}
_N = r"(once|twice|thrice|one|two|three|four|five|six|[1-6]x?)"
_RE_TIMES = re.compile(_N + r"\s*(?:times?|x)?\s*(?:a|per|/|each|every)?\s*(day|daily|d|week|weekly|wk|month)\b")
_RE_EVERY_H = re.compile(r"(?:q|every)\s*(\d+(?:\.\d+)?)\s*(?:-|to)?\s*(\d+(?:\.\d+)?)?\s*(?:h|hr|hrs|hours?)\b")
_RE_EVERY_D = re.compile(r"(?:q|every)\s*(\d+|other|2nd|third|3rd)\s*(?:d|days?)\b")
_RE_EVERY_WORD = re.compile(r"every\s+(day|morning|night|evening|week|month|bedtime)")


@lru_cache(maxsize=4096)
def frequency_per_day(freq: str | None) -> float | None:
    """'bid' -> 2, 'q6h' -> 4, 'q4-6h' -> 6 (the most frequent), 'once weekly' -> 1/7, 'every other day' -> 0.5."""
    if not freq:
        return None
    f = clean(freq).replace(".", "").replace("prn", "").strip()
    if not f:
        return None
    key = f.replace(" ", "")
    if key in _FREQ_EXACT:
        return _FREQ_EXACT[key]
    if f in _FREQ_EXACT:
        return _FREQ_EXACT[f]
    m = _RE_EVERY_H.search(f)
    if m:
        hours = float(m.group(1))  # q4-6h: most frequent = smallest interval
        return 24.0 / hours if hours > 0 else None
    m = _RE_EVERY_D.search(f)
    if m:
        n = {"other": 2, "2nd": 2, "third": 3, "3rd": 3}.get(m.group(1)) or int(m.group(1))
        return 1.0 / n
    if "every other day" in f or "alternate day" in f:
        return 0.5
    m = _RE_TIMES.search(f)
    if m:
        n = _WORD_NUM[m.group(1)]
        period = m.group(2)
        if period in {"week", "weekly", "wk"}:
            return n / 7.0
        if period == "month":
            return n / 30.0
        return float(n)
    if re.search(r"\b(once|one time)\s*(a|per|every)?\s*week|\bweekly\b|\bevery week\b|\bq\s*week", f):
        return 1 / 7
    m = _RE_EVERY_WORD.search(f)
    if m:
        return {"week": 1 / 7, "month": 1 / 30}.get(m.group(1), 1.0)
    if re.search(r"\b(daily|once a day|once daily|a day|per day|at bedtime|at night|in the morning|nightly)\b", f):
        return 1.0
    for token in f.split():
        if token in _FREQ_EXACT:
            return _FREQ_EXACT[token]
    return None


# ------------------------------------------------------------------------------------------- fuzzy
def levenshtein(a: str, b: str, bound: int) -> int:
    """Edit distance with early exit once it exceeds ``bound`` (returns bound + 1)."""
    if abs(len(a) - len(b)) > bound:
        return bound + 1
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i] + [0] * len(b)
        best = i
        for j, cb in enumerate(b, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb))
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:  # transposition
                cur[j] = min(cur[j], prev2[j - 2] + 1)
            best = min(best, cur[j])
        if best > bound:
            return bound + 1
        prev2, prev = prev, cur
    return prev[-1]


def _deletes(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


class FuzzyIndex:
    """Bounded-edit-distance lookup: deletion neighbourhood of distance 1 on both sides (covers 1 edit
    everywhere and most 2-edit typos), verified with a real edit distance."""

    def __init__(self, vocabulary: list[str]):
        self.index: dict[str, list[str]] = {}
        for word in vocabulary:
            for key in _deletes(word) | {word}:
                self.index.setdefault(key, []).append(word)

    @staticmethod
    def bound_for(word: str) -> int:
        return 0 if len(word) < 5 else 1 if len(word) <= 7 else 2

    def lookup(self, word: str) -> str | None:
        bound = self.bound_for(word)
        if bound == 0:
            return None
        candidates: set[str] = set()
        for key in _deletes(word) | {word}:
            candidates.update(self.index.get(key, ()))
        best: tuple[int, int, str] | None = None
        for cand in candidates:
            d = levenshtein(word, cand, bound)
            if d <= bound:
                score = (d, abs(len(cand) - len(word)), cand)
                if best is None or score < best:
                    best = score
        return best[2] if best else None


# --------------------------------------------------------------------------------------- normaliser
@dataclass
class Resolution:
    written: str
    ingredients: list[str] = field(default_factory=list)
    match: str | None = None  # exact | salt | form | combination | partial | fuzzy
    strengths_mg: dict[str, float] = field(default_factory=dict)
    strength_mg_per_ml: float | None = None
    note: str | None = None

    @property
    def recognised(self) -> bool:
        return bool(self.ingredients)


_STRENGTH_TOKEN = re.compile(r"\b\d+(?:\.\d+)?\s*(?:mg|mcg|g|gm|ml|%|iu|units?)?(?:/\d+(?:\.\d+)?\s*(?:mg|mcg|g|ml)?)*\b")


class Normalizer:
    """Resolve names to canonical ingredients using the KB's name index."""

    def __init__(self, names: dict[str, list[str]], strengths: dict[str, dict] | None = None,
                 fuzzy_vocabulary: list[str] | None = None):
        self.names = names
        self.strengths = strengths or {}
        self._fuzzy_vocab = fuzzy_vocabulary
        self._fuzzy: FuzzyIndex | None = None
        self._cache: dict[str, Resolution] = {}

    @property
    def fuzzy(self) -> FuzzyIndex:
        if self._fuzzy is None:
            vocab = self._fuzzy_vocab if self._fuzzy_vocab is not None else [
                n for n in self.names if 5 <= len(n) <= 30 and not any(c.isdigit() for c in n)]
            self._fuzzy = FuzzyIndex(vocab)
        return self._fuzzy

    def _exact(self, key: str) -> list[str] | None:
        hit = self.names.get(key)
        if hit:
            return hit
        stripped = strip_salts(key)
        if stripped != key:
            return self.names.get(stripped)
        return None

    def resolve(self, written: str) -> Resolution:
        cached = self._cache.get(written)
        if cached is not None:
            return cached
        res = self._resolve(written)
        if len(self._cache) < 50_000:
            self._cache[written] = res
        return res

    def _with_strengths(self, res: Resolution, key: str) -> Resolution:
        info = self.strengths.get(key)
        if info:
            res.strengths_mg = dict(info.get("mg", {}))
            res.strength_mg_per_ml = info.get("mg_per_ml")
        return res

    def _resolve(self, written: str) -> Resolution:
        key = clean(written)
        res = Resolution(written)
        if not key:
            return res
        hit = self.names.get(key)
        if hit:
            res.ingredients, res.match = list(hit), "exact"
            return self._with_strengths(res, key)
        stripped = strip_salts(key)
        if stripped != key and stripped in self.names:
            res.ingredients, res.match = list(self.names[stripped]), "salt"
            return self._with_strengths(res, stripped)
        # drop strength tokens and dosage-form words: "augmentin 875 tab", "tylenol es"
        words = [w for w in _STRENGTH_TOKEN.sub(" ", key).split() if w not in FORM_WORDS]
        short = " ".join(words)
        if short and short != key:
            hit = self._exact(short)
            if hit:
                res.ingredients, res.match = list(hit), "form"
                return self._with_strengths(res, short)
        # combinations: "amoxicillin/clavulanate", "sulfamethoxazole + trimethoprim"
        parts = split_combination(short or key)
        if len(parts) > 1:
            ingredients: list[str] = []
            for part in parts:
                sub = self._resolve(part)
                if not sub.recognised:
                    ingredients = []
                    break
                ingredients.extend(i for i in sub.ingredients if i not in ingredients)
            if ingredients:
                res.ingredients, res.match = ingredients, "combination"
                return res
        # first word(s) only: "metformin er", "lisinopril tablets usp"
        if len(words) > 1:
            for n in range(len(words) - 1, 0, -1):
                hit = self._exact(" ".join(words[:n]))
                if hit:
                    # "tylenol pm": the dropped words may name more ingredients; the engine reports it
                    res.ingredients, res.match = list(hit), "partial"
                    res.note = f"read as {' '.join(words[:n])!r}, ignoring {' '.join(words[n:])!r}"
                    return res
        # plain misspelling
        target = strip_salts(short or key)
        if target and len(target) >= 5 and " " not in target:
            cand = self.fuzzy.lookup(target)
            if cand:
                res.ingredients, res.match = list(self.names[cand]), "fuzzy"
                res.note = f"read as {cand!r}"
                return self._with_strengths(res, cand)
        elif target and len(target) >= 5:
            fixed: list[str] = []
            for w in target.split():
                if w in self.names or len(w) < 5:
                    fixed.append(w)
                else:
                    cand = self.fuzzy.lookup(w)
                    fixed.append(cand or w)
            joined = " ".join(fixed)
            if joined != target and joined in self.names:
                res.ingredients, res.match = list(self.names[joined]), "fuzzy"
                res.note = f"read as {joined!r}"
                return self._with_strengths(res, joined)
        return res
