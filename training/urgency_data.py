"""Training text for the urgency head, derived from public patient-facing guidance with provenance.

Source: ``datasets/triage/guidance/guidance_statements.csv`` (data card beside it): one symptom presentation per
row, in the guidance's own words, with the care level the page attaches to it (``emergency`` = call 999 / A&E,
``urgent`` = urgent GP / NHS 111 / same day, ``routine`` = see a GP, ``self_care`` = self-care or a pharmacist),
the page URL and section.

Each statement becomes several first-person complaints (``statement_complaints``): the person is changed ("you
have" -> "I have"; a child's or baby's presentation is written by a parent; pregnancy is stated), framed as a chat
message (greeting, question, duration, worry) and put in other registers (lower case, text speak, a misspelt
word).  Two derived kinds teach what a mention is *not*:

- ``negated``: a non-emergency presentation plus an explicit denial of an emergency one ("... I do not have a
  stiff neck"), labelled with the non-emergency presentation's level;
- ``history``: the same with the emergency presentation in the past or in a relative ("my dad had ... years
  ago"), labelled likewise.

Every example keeps ``statement_id`` (and ``other_statement_id`` for the derived kinds), ``source_url`` and the
``template`` that produced it; the text is generated, never hand-written.  Splits are by statement group, so no
statement's variants sit on both sides.  The blind set (``datasets/triage/blind``) and AcuityBench are
evaluation-only and are never read here.

By default only pages of public bodies (NHS organisations, UK and other governments' health services) are used;
``include_other_sources=True`` adds the statements read on third-party pages (pharmacies, GP-practice copies of NHS
text, charities, commercial health sites), whose terms were not checked.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from serving.settings import PROJECT_ROOT
from triage.taxonomy import URGENCY_LEVELS

GUIDANCE_PATH = PROJECT_ROOT / "datasets" / "triage" / "guidance" / "guidance_statements.csv"
AUTHOR = "derived from public guidance (template)"

# hosts of public bodies: NHS organisations, UK and other governments' health services
_PUBLIC_SUFFIXES = (
    "nhs.uk", "nhs.wales", "nhs.scot", "nhsggc.scot", "gov.uk", "gov.au", "gov.im", "gov.sg", "govt.nz",
    "hse.ie", "hscni.net", "nidirect.gov.uk", "healthdirect.gov.au", "healthinfo.org.nz", "nhsinform.scot",
    "nhsinform.azurewebsites.net", "developer.api.nhs.uk", "nice.org.uk", "cdc.gov", "nih.gov",
)


def source_kind(url: str) -> str:
    host = urlparse(str(url)).netloc.lower().split("@")[-1]
    host = host[4:] if host.startswith("www.") else host
    if any(host == s or host.endswith("." + s) for s in _PUBLIC_SUFFIXES) or ".nhs." in f".{host}.":
        return "public_body"
    return "other"


class UrgencyDataError(ValueError):
    """The guidance table is missing or malformed (the message names the row)."""


def load_statements(path: Path = GUIDANCE_PATH, include_other_sources: bool = False) -> pd.DataFrame:
    if not Path(path).is_file():
        raise UrgencyDataError(f"guidance table {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    need = {"statement_id", "statement", "urgency", "center", "population", "source_url"}
    missing = need - set(df.columns)
    if missing:
        raise UrgencyDataError(f"guidance table {path} lacks columns {sorted(missing)}")
    bad = df[~df["urgency"].isin(URGENCY_LEVELS)]
    if len(bad):
        raise UrgencyDataError(f"guidance table {path} row {bad.index[0] + 2}: urgency {bad.iloc[0]['urgency']!r} "
                               f"not in {URGENCY_LEVELS}")
    df["statement"] = df["statement"].str.strip()
    df = df[df["statement"].str.len() > 0].copy()
    df["source_kind"] = df["source_url"].map(source_kind)
    if not include_other_sources:
        df = df[df["source_kind"] == "public_body"]
    # the same wording read on several pages is one statement group (never on both sides of a split)
    df["group"] = df["statement"].map(lambda s: "g" + hashlib.sha1(_norm(s).encode()).hexdigest()[:12])
    return df.reset_index(drop=True)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


# ------------------------------------------------------------------------------------------------ rewriting
_VERB_3RD = {"is": "is", "are": "is", "has": "has", "have": "has", "was": "was", "were": "was"}
_VERB_1ST = {"is": "am", "are": "am", "has": "have", "have": "have", "was": "was", "were": "was"}
_LEADING_VERB = re.compile(
    r"^(is|are|has|have|had|was|were|looks?|feels?|seems?|gets?|got|keeps?|cannot|can't|can not|does not|doesn't|"
    r"do not|don't|will not|won't|lose|loses|develops?|starts?|becomes?|vomits?|cries|cry|refuses?|stops?|"
    r"coughs?|breathes?|brings?|passes?|notices?|suddenly|finds?|struggles?|shows?|wets?|grunts?|been|being|"
    r"having|unable|not)\b", re.I)
_CLAUSE = re.compile(r"^(you|your|they|their|he|she|his|her|it|a child|a baby|the|this|there|someone|"
                     r"my|i|i'm|i've|if|when|after|during)\b", re.I)
_FINITE = re.compile(r"\b(is|are|was|were|has|have|does|do|did|can|will|been|lasts|gets|feels|looks)\b", re.I)


def _first_person(s: str) -> str:
    s = re.sub(r"\byou're\b", "I'm", s, flags=re.I)
    s = re.sub(r"\byou are\b", "I am", s, flags=re.I)
    s = re.sub(r"\byou've\b", "I've", s, flags=re.I)
    s = re.sub(r"\byou were\b", "I was", s, flags=re.I)
    s = re.sub(r"\byourself\b", "myself", s, flags=re.I)
    s = re.sub(r"\byour\b", "my", s, flags=re.I)
    s = re.sub(r"\b(to|for|with|at|tell|tells|help|helps|make|makes|give|gives|let|lets|stop|stops) you\b",
               r"\1 me", s, flags=re.I)  # object position
    s = re.sub(r"\byou\b", "I", s, flags=re.I)
    return s


def _about(s: str, who: str) -> str:
    """A parent writing about ``who`` ("my son"): 'your child'/'your baby'/'they' -> who."""
    s = re.sub(r"\byour (?:child|baby|toddler|son|daughter|little one|newborn)(?:'s)?\b", who, s, flags=re.I)
    s = re.sub(r"\b(?:the|a) (?:child|baby)\b", who, s, flags=re.I)
    s = re.sub(r"\bthey are\b", "they're", s, flags=re.I)
    return _first_person(s)


def _lower_first(s: str) -> str:
    """Lower-case the first letter unless the first word is an acronym (DVT, HIV)."""
    first = s.split(" ", 1)[0]
    if len(first) > 1 and first.isupper():
        return s
    return s[:1].lower() + s[1:]


def _body(statement: str, population: str, rng: random.Random) -> tuple[str, str]:
    """(complaint body, person) for a statement."""
    s = statement.strip().rstrip(".;:,").strip()
    s = _lower_first(s)
    if population in {"child", "infant"}:
        who = rng.choice(CHILD_WHO if population == "child" else INFANT_WHO)
        m = _LEADING_VERB.match(s)
        if m:
            verb = m.group(1).lower()
            rest = s[m.end():]
            verb = f"is {verb}" if verb in {"unable", "not"} else _VERB_3RD.get(verb, verb)
            return f"{who} {verb}{_about(rest, who)}", "parent"
        if _CLAUSE.match(s):
            return _about(s, who), "parent"
        return f"{who} has {_about(s, who)}", "parent"
    m = _LEADING_VERB.match(s)
    if m:
        verb = m.group(1).lower()
        rest = s[m.end():]
        if verb in {"unable", "not"}:
            return f"I am {verb}{_first_person(rest)}", "self"
        if verb.endswith("s") and verb not in _VERB_1ST and verb not in {"does not"}:
            verb = verb[:-2] if verb.endswith(("ches", "shes", "sses", "xes")) or verb == "cries" else verb[:-1]
            verb = "cry" if verb == "cri" else verb
        return f"I {_VERB_1ST.get(verb, verb)}{_first_person(rest)}", "self"
    if _CLAUSE.match(s):
        return _first_person(s), "self"
    return f"{rng.choice(HAVE)} {_first_person(s)}", "self"


# ------------------------------------------------------------------------------------------------ page context
# A list item is often an emergency only in the context its page gives it ("problems with memory" under "Go to A&E
# after a head injury if you have"). The context is read from the row's own section heading (the page's words, or
# the collector's ``[context: ...]`` note) or, for a few pages whose heading names no condition, from its title, and
# carried into every complaint derived from the statement as a short clause. Each rule: (regex on the section,
# regex on the title or None, clauses, regex that means the statement already says it). Nothing here adds a
# symptom the page does not state; the clauses only restate the page's condition in lay words.
CONTEXT_RULES: tuple[tuple[str, str | None, tuple[str, ...], str], ...] = (
    (r"hit (?:their|your) head|\bhit head\b|after a head injury", None,
     ("after a head injury", "after a bang on the head", "since the head injury"), r"head|concuss"),
    (r"extremely painful headache", None, ("with an extremely painful headache", "and a really bad headache"),
     r"headache"),
    (r"severe headache and", None, ("with a severe headache",), r"headache"),
    (r"have a hernia and", None, ("with my hernia", "- I have a hernia"), r"hernia"),
    (r"chickenpox and", None, ("with chickenpox", "and has chickenpox"), r"chickenpox"),
    (r"symptoms of DVT|DVT symptoms", None, ("with symptoms of DVT",), r"DVT|clot"),
    (r"seizure \(or fit\) and|\[context: after a seizure\]", None, ("after a seizure", "after a fit"),
     r"seizure|fit\b"),
    (r"have gum disease", None, ("with gum disease",), r"gum"),
    (r"recently had, a fever|fever also includes|\[context: child with a fever\]", None,
     ("with a fever", "and a high temperature"), r"fever|temperature"),
    (r"(?:might|could) be pregnant", None, ("and I might be pregnant",), r"pregnan"),
    (r"^Come back to the emergency department", r"Kidney stone", ("with kidney stone pain",), r"kidney"),
    (r"kidney infection", None, ("with UTI symptoms",), r"urin|pee|UTI"),
    (r"^See a GP if$", r"Hives", ("with hives",), r"hives|rash"),
    (r"^You should call your GP if$", r"Earache", ("with earache",), r"ear"),
    (r"other symptoms such as$", r"Mouth ulcers", ("with mouth ulcers",), r"ulcer"),
    (r"Call 999 immediately and ask for an ambulance", r"Transient ischaemic attack",
     ("after stroke symptoms (TIA)",), r"stroke|TIA"),
    (r"^Ask for an urgent GP appointment or go to A&E if$", r"Cellulitis", ("with cellulitis",), r"cellulitis"),
)
_CONTEXT_NOTE = re.compile(r"\[context: ([^\]]+)\]")
CARRY_CONTEXT = True  # False reproduces the complaints as written before the page context was carried


def statement_context(row: dict) -> tuple[str, ...]:
    """Lay clauses that carry the page's context into complaints derived from ``row`` (``()`` when none)."""
    if not CARRY_CONTEXT:
        return ()
    section, title, text = str(row.get("source_section", "")), str(row.get("source_title", "")), row["statement"]
    for sec, tit, clauses, said in CONTEXT_RULES:
        if re.search(sec, section, re.I) and (tit is None or re.search(tit, title, re.I)):
            if row.get("population") == "pregnancy":  # the complaint states the pregnancy already
                clauses = tuple(c for c in clauses if "pregnan" not in c)
            return () if re.search(said, text, re.I) else clauses
    note = _CONTEXT_NOTE.search(section)
    if note:
        clause = note.group(1).strip()
        if re.match(r"(?:with|after|during|while|in|on|when|since)\b", clause, re.I):
            return (_first_person(clause),)
        return (f"with {_first_person(clause)}",)
    return ()


CHILD_WHO = ["my son", "my daughter", "my 4 year old", "my little boy", "my little girl", "my 7yo", "our son",
             "my 10 year old daughter", "my child", "my toddler"]
INFANT_WHO = ["my baby", "my 6 week old", "our newborn", "my 3 month old", "my baby girl", "my baby boy",
              "my 9 month old", "the baby"]
HAVE = ["I have", "I've got", "I have got", "I think I have", "got", "I seem to have"]
DURATIONS = ["since this morning", "since last night", "for 2 days", "for about an hour", "since yesterday",
             "for a few days now", "for a week", "today", "on and off since the weekend"]
OPENERS = ["", "", "", "Hi, ", "Hello doctor, ", "Please help, ", "Quick question - ", "Not sure if this is "
           "serious but ", "Sorry to bother you, ", "Hi there. "]
CLOSERS = ["", "", "", ". What should I do?", ". Is this serious?", ". Should I be worried?", ". Do I need to see "
           "someone?", ", what do you advise", ". Can you help?", "."]
PREGNANT = ["I'm {w} weeks pregnant and ", "I am pregnant ({w} weeks) and ", "{w} weeks pregnant here, "]
TEXT_SPEAK = [(r"\byou\b", "u"), (r"\bare\b", "r"), (r"\bplease\b", "pls"), (r"\bbecause\b", "cos"),
              (r"\bcan't\b", "cant"), (r"\bI'm\b", "im"), (r"\bdon't\b", "dont"), (r"\bwhat\b", "wat"),
              (r"\btonight\b", "2nite"), (r"\bto\b", "2")]
RELATIVES = ["my dad", "my father", "my mum", "my mother", "my grandad", "my nan", "my brother", "my aunt"]


def _misspell(text: str, rng: random.Random) -> str:
    words = text.split(" ")
    long = [i for i, w in enumerate(words) if len(w) > 5 and w.isalpha()]
    if not long:
        return text
    i = rng.choice(long)
    w = words[i]
    j = rng.randrange(1, len(w) - 2)
    op = rng.random()
    if op < 0.4:
        w = w[:j] + w[j + 1] + w[j] + w[j + 2:]  # swap
    elif op < 0.7:
        w = w[:j] + w[j + 1:]  # drop
    else:
        w = w[:j] + w[j] + w[j:]  # double
    words[i] = w
    return " ".join(words)


def _register(text: str, rng: random.Random) -> tuple[str, str]:
    r = rng.random()
    if r < 0.2:
        return text.lower().rstrip(".?!"), "lower"
    if r < 0.32:
        out = text.lower()
        for pat, rep in TEXT_SPEAK:
            out = re.sub(pat, rep, out, flags=re.I)
        return out.rstrip(".?!"), "text_speak"
    if r < 0.47:
        return _misspell(text, rng), "misspelt"
    return text, "plain"


def _frame(body: str, population: str, rng: random.Random) -> tuple[str, str]:
    parts = []
    t = rng.random()
    if population == "pregnancy":
        parts.append(rng.choice(PREGNANT).format(w=rng.randint(6, 39)))
    text = body
    if t < 0.35:
        text = f"{body} {rng.choice(DURATIONS)}"
    opener = rng.choice(OPENERS)
    closer = rng.choice(CLOSERS)
    full = "".join(parts) + text
    if opener:
        full = opener + full
    full = full[0].upper() + full[1:]
    return full.rstrip(".") + closer, f"o{int(bool(opener))}d{int(t < 0.35)}c{int(bool(closer))}"


def statement_complaints(row: dict, n: int, rng: random.Random) -> list[dict]:
    out, seen = [], set()
    for k in range(n * 3):
        if len(out) >= n:
            break
        body, person = _body(row["statement"], row["population"], rng)
        context = statement_context(row)
        if context:
            body = f"{body} {rng.choice(context)}"
        text, frame = _frame(body, row["population"], rng)
        text, register = _register(text, rng)
        if _norm(text) in seen:
            continue
        seen.add(_norm(text))
        out.append({"text": text, "urgency": row["urgency"], "center": row["center"], "kind": "statement",
                    "statement_id": row["statement_id"], "other_statement_id": "", "group": row["group"],
                    "source_url": row["source_url"],
                    "template": f"{person}/{frame}/{register}" + ("/context" if context else ""),
                    "author": AUTHOR})
    return out


def _noun_phrase(statement: str) -> str | None:
    """The statement as something one can 'have' ("a stiff neck"), or None when it is a clause."""
    s = statement.strip().rstrip(".;:,").strip()
    s = _lower_first(s)
    if (_LEADING_VERB.match(s) or _CLAUSE.match(s) or len(s.split()) > 9 or _FINITE.search(s)
            or re.search(r"\b(you|your|they)\b", s)):
        return None
    return s


def contrast_examples(df: pd.DataFrame, n: int, rng: random.Random) -> list[dict]:
    """Non-emergency presentations with an emergency one denied or in the past/in a relative: labelled with the
    non-emergency presentation's level (what the guidance says about the complaint actually present)."""
    emerg = [(r, np) for r in df[df["urgency"] == "emergency"].to_dict("records")
             if (np := _noun_phrase(r["statement"])) and r["population"] in {"adult", "any"}]
    calm = [r for r in df[df["urgency"].isin(["routine", "self_care"])].to_dict("records")
            if r["population"] in {"adult", "any"}]
    out: list[dict] = []
    if not emerg or not calm:
        return out
    for k in range(n):
        base = rng.choice(calm)
        e, np = rng.choice(emerg)
        body, _ = _body(base["statement"], base["population"], rng)
        kind = "negated" if k % 2 == 0 else "history"
        if kind == "negated":
            tail = rng.choice([f"I do not have {np}", f"no {np} though", f"definitely not {np}",
                               f"I don't have {np} or anything like that"])
            text = f"{body[0].upper() + body[1:]}, {tail}."
        else:
            tail = rng.choice([f"My {rng.choice(['dad', 'mum', 'grandad', 'nan', 'brother'])} had {np} years ago so "
                               f"I worry.", f"I had {np} back in {rng.randint(1995, 2020)} but that's long gone.",
                               f"{rng.choice(RELATIVES).capitalize()} had {np} last year."])
            text = f"{body[0].upper() + body[1:]}. {tail}"
        text, register = _register(text, rng)
        out.append({"text": text, "urgency": base["urgency"], "center": base["center"], "kind": kind,
                    "statement_id": base["statement_id"], "other_statement_id": e["statement_id"],
                    "group": base["group"], "source_url": base["source_url"], "template": f"{kind}/{register}",
                    "author": AUTHOR})
    return out


def make_examples(statements: pd.DataFrame, per_statement: int = 6, contrast: int = 600,
                  seed: int = 11) -> pd.DataFrame:
    rng = random.Random(seed)
    rows: list[dict] = []
    for row in statements.to_dict("records"):
        rows += statement_complaints(row, per_statement, rng)
    rows += contrast_examples(statements, contrast, rng)
    return pd.DataFrame(rows)


def split_groups(df: pd.DataFrame, val_fraction: float = 0.2, seed: int = 7) -> pd.Series:
    """'train' / 'val' per row, by statement group. A group's side depends only on its own text (a seeded hash), so
    statements appended to the guidance table never move an existing statement across the split: two versions of
    the table are compared on the same held-out statements (docs/urgency.md, sixth run). A level whose groups all
    hash to 'train' (small tables) gives its lowest-hash group to 'val'."""
    def score(group: str) -> float:
        return int(hashlib.sha1(f"{seed}:{group}".encode()).hexdigest()[:12], 16) / float(16 ** 12)

    split = {}
    for level in URGENCY_LEVELS:
        groups = sorted(set(df.loc[df["urgency"] == level, "group"]) - set(split))
        for g in groups:
            split[g] = "val" if score(g) < val_fraction else "train"
        if len(groups) > 1 and not any(split[g] == "val" for g in groups):
            split[min(groups, key=score)] = "val"
    return df["group"].map(split)


def data_hash(path: Path = GUIDANCE_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
