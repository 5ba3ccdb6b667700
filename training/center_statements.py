"""Center training text from public patient-facing condition pages, with provenance (issue 12, first bullet).

Source: ``datasets/triage/guidance/center_statements.csv`` (README beside it).  Each row is one symptom or sign that
a public page (NHS and other health-service condition pages, patient leaflets) attaches to one named condition,
labelled with the taxonomy center that sees that condition, the condition's name, the population, the page URL and
section, and ``wording``: ``page`` (the page's words, ``...`` marking omitted words) or ``derived`` (the collector
joined context from the same page to the item, e.g. "... - jaw pain", or rephrased a page sentence into a symptom).

Unlike the urgency table (``guidance_statements.csv``, "call 999 if" lists whose center is the page's, not always
the complaint's), every row here names the condition the page is about, so the center is the condition's.

Each statement becomes first-person complaints with the urgency table's rewriting (``training.urgency_data``:
person, parent writing about a child, chat framing, lower case, text speak, a misspelt word), plus ``combo``
complaints that join two statements of the same condition from the same page family ("I have X and Y").  Every
generated row keeps its ``statement_id`` (and ``other_statement_id`` for combos), ``source_url``, ``wording``
and ``template``; the text is generated from the cited statements, never hand-written.  Rows go to the training
split only (``origin = "project"``: derived text, never validation or test), and any generated text equal to or a
near duplicate of a held-out (validation/test) text is dropped.  The blind routing sets and AcuityBench are never
read here.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd

from serving.settings import PROJECT_ROOT
from training import urgency_data
from training.triage_data import NEAR_DUP_THRESHOLD, near_duplicate_groups, normalise_text
from triage.taxonomy import EMERGENCY_CENTER, load_taxonomy

CENTER_STATEMENTS_PATH = PROJECT_ROOT / "datasets" / "triage" / "guidance" / "center_statements.csv"
SOURCE = "center_guidance"
AUTHOR = "derived from public condition pages (template)"
COLUMNS = ("statement_id", "statement", "center", "condition", "population", "wording", "source_title",
           "source_url", "source_section")
POPULATIONS = ("adult", "child", "infant", "pregnancy", "any")
WORDINGS = ("page", "derived")
CONNECTORS = [" and ", ", and ", ", also ", ". Also ", " plus ", " as well as ", ", and on top of that "]


class CenterStatementsError(ValueError):
    """The center statement table is missing or malformed (the message names the row and the problem)."""


def load_center_statements(path: Path = CENTER_STATEMENTS_PATH) -> pd.DataFrame:
    """The table, validated: every row has an http(s) URL, a routable taxonomy center, a known population and
    wording, a non-empty statement and condition, and a unique id."""
    path = Path(path)
    if not path.is_file():
        raise CenterStatementsError(f"center statement table {path} does not exist")
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = set(COLUMNS) - set(df.columns)
    if missing:
        raise CenterStatementsError(f"center statement table {path} lacks columns {sorted(missing)}")
    if df.empty:
        raise CenterStatementsError(f"center statement table {path} has no rows")
    routable = set(load_taxonomy().model_labels())
    for i, row in df.iterrows():
        where = f"center statement table {path} row {i + 2} ({row['statement_id'] or 'no id'})"
        url = urlparse(row["source_url"].strip())
        if url.scheme not in ("http", "https") or not url.netloc:
            raise CenterStatementsError(f"{where}: source_url {row['source_url']!r} is not an http(s) URL")
        if row["center"] not in routable or row["center"] == EMERGENCY_CENTER:
            raise CenterStatementsError(f"{where}: center {row['center']!r} is not a routable taxonomy center")
        if row["population"] not in POPULATIONS:
            raise CenterStatementsError(f"{where}: population {row['population']!r} not in {POPULATIONS}")
        if row["wording"] not in WORDINGS:
            raise CenterStatementsError(f"{where}: wording {row['wording']!r} not in {WORDINGS}")
        for col in ("statement_id", "statement", "condition", "source_title"):
            if not row[col].strip():
                raise CenterStatementsError(f"{where}: empty {col}")
    dup = df["statement_id"][df["statement_id"].duplicated()]
    if len(dup):
        raise CenterStatementsError(f"center statement table {path}: duplicate statement_id {dup.iloc[0]!r}")
    df["statement"] = df["statement"].str.strip()
    df["group"] = df["statement"].map(lambda s: "cs" + hashlib.sha1(_norm(s).encode()).hexdigest()[:12])
    return df.reset_index(drop=True)


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9 ]", "", text.lower()).strip()


def _variant(statement: str, rng: random.Random) -> str:
    """The statement as a patient might put it: omitted-word marks become commas, and a page's parenthetical
    gloss ("(jaundice)", "(tinnitus)") is kept or dropped at random."""
    s = re.sub(r"\s*\.\.\.\s*", ", ", statement).strip(" ,")
    if rng.random() < 0.5:
        s = re.sub(r"\s*\([^)]*\)", "", s)
    else:
        s = s.replace("(", "").replace(")", "")
    s = re.sub(r"\s+-\s+", rng.choice([" - ", ", ", " with "]), s)
    return re.sub(r"\s+", " ", s).strip(" ,")


# first words the urgency table's rewriting does not turn into a first-person sentence on its own
GERUNDS = {"feeling", "needing", "avoiding", "making", "finding", "struggling", "spending", "losing", "asking",
           "passing", "peeing", "seeing", "talking", "turning", "drooling", "twitching", "mishearing", "saying",
           "tugging", "waking", "lying", "getting", "crying", "eating", "putting", "taking", "reliving",
           "withdrawing", "listening", "bruising", "jumping", "wetting", "missing", "worrying"}
BARE_VERBS = {"wake", "need", "fear", "eat", "lie", "walk", "hear", "see", "lose", "regularly", "easily", "appear",
              "clench", "tune", "get", "find", "feel", "have", "struggle", "notice", "leak", "pass"}
LEADING_ADVERB = re.compile(r"^(typically|usually|often|sometimes|generally)\s+", re.I)
CLAUSE = re.compile(r"^(?!i\b|my\b|you\b|your\b|it\b|they\b)([\w'/,-]+\s+){1,4}?(may|might|can|is|are|was|were|has|"
                    r"appear|appears|looks?|feels?|becomes?|tends|begins|often|usually)\b", re.I)
OBJECT_I = re.compile(r"\b(annoyed|around|cause|causes|made|make|makes|tell|told|ask|asked|let|lets|wake|wakes|"
                      r"woke|keep|keeps|affect|affects|bother|bothers|help|helps|give|gives|stop|stops|for|to|with|"
                      r"at|than|about|from|behind) I\b")
CHILD_WHO = urgency_data.CHILD_WHO
INFANT_WHO = urgency_data.INFANT_WHO


def _shape(statement: str, population: str, rng: random.Random) -> tuple[str, str]:
    """(statement, population) made ready for the urgency table's rewriting: a leading gerund, bare verb or
    clause gets a first-person (or parent's) opener that the rewriting leaves alone; the population becomes
    ``any`` when the opener already names the child."""
    s = LEADING_ADVERB.sub("", statement).strip()
    first = s.split(" ", 1)[0].lower().strip(",")
    child = population in ("child", "infant")
    who = rng.choice(CHILD_WHO if population == "child" else INFANT_WHO) if child else ""
    if first == "not":
        return ("I do " + s if not child else f"{who} does {s}"), ("any" if child else population)
    if first in GERUNDS:
        lead = f"{who} {rng.choice(['has been', 'keeps'])} " if child else rng.choice(["I've been ", "I keep ", "I am "])
        return lead + urgency_data._lower_first(s), ("any" if child else population)
    if first in BARE_VERBS:
        lead = f"{who} {rng.choice(['tends to', 'seems to'])} " if child else "I "
        return lead + urgency_data._lower_first(s), ("any" if child else population)
    if CLAUSE.match(s):
        lead = f"{who} - " if child else rng.choice(["I've noticed that ", "I find that ", "it seems "])
        return lead + urgency_data._lower_first(s), ("any" if child else population)
    return s, population


def _row(r: dict, statement: str, rng: random.Random) -> dict:
    statement, population = _shape(statement, r["population"], rng)
    return {"statement_id": r["statement_id"], "statement": statement, "population": population,
            "urgency": "", "center": r["center"], "group": r["group"], "source_url": r["source_url"]}


def _tidy(text: str) -> str:
    """Object-position pronoun the rewriting leaves as "I" ("annoyed I by" -> "annoyed me by")."""
    return OBJECT_I.sub(lambda m: f"{m.group(1)} me", text)


def statement_rows(r: dict, n: int, rng: random.Random) -> list[dict]:
    """``n`` first-person complaints from one statement (the urgency table's rewriting)."""
    out, seen = [], set()
    for _ in range(n * 3):
        if len(out) >= n:
            break
        made = urgency_data.statement_complaints(_row(r, _variant(r["statement"], rng), rng), 1, rng)
        if made and _norm(made[0]["text"]) not in seen:
            seen.add(_norm(made[0]["text"]))
            out.append({**made[0], "text": _tidy(made[0]["text"]), "kind": "statement", "other_statement_id": "",
                        "wording": r["wording"], "condition": r["condition"]})
    return out


def combo_rows(group: pd.DataFrame, n: int, rng: random.Random) -> list[dict]:
    """``n`` complaints joining two statements of one condition (population of the first)."""
    recs = group.to_dict("records")
    if len(recs) < 2:
        return []
    out = []
    for _ in range(n):
        a, b = rng.sample(recs, 2)
        second, _ = _shape(_variant(b["statement"], rng), "adult", rng)
        if a["population"] in ("child", "infant"):
            second = _variant(b["statement"], rng)
        second = urgency_data._first_person(urgency_data._lower_first(second))
        joined = _variant(a["statement"], rng).rstrip(".") + rng.choice(CONNECTORS) + second
        made = urgency_data.statement_complaints(_row(a, joined, rng), 1, rng)
        if made:
            wording = "derived" if "derived" in (a["wording"], b["wording"]) else "page"
            out.append({**made[0], "text": _tidy(made[0]["text"]), "kind": "combo",
                        "other_statement_id": b["statement_id"],
                        "template": "combo/" + made[0]["template"], "wording": wording,
                        "condition": a["condition"]})
    return out


def make_examples(statements: pd.DataFrame, per_statement: int = 3, combos_per_condition: int = 4,
                  seed: int = 13) -> pd.DataFrame:
    """First-person complaints (``statement`` and ``combo`` kinds) with their provenance columns."""
    rng = random.Random(seed)
    rows: list[dict] = []
    for r in statements.to_dict("records"):
        rows += statement_rows(r, per_statement, rng)
    for (_, _), group in statements.groupby(["center", "condition"], sort=True):
        for population, part in group.groupby("population", sort=True):
            rows += combo_rows(part, min(combos_per_condition, len(part) * (len(part) - 1) // 2), rng)
    df = pd.DataFrame(rows)
    df["author"] = AUTHOR
    return df.drop_duplicates(subset="text").reset_index(drop=True)


def drop_near(candidates: pd.DataFrame, heldout_texts: list[str]) -> pd.DataFrame:
    """Candidates minus any text equal to, or a near duplicate (the data's own TF-IDF rule) of, a held-out one."""
    if candidates.empty or not heldout_texts:
        return candidates
    texts = list(candidates["text"]) + list(heldout_texts)
    groups = near_duplicate_groups(texts, [normalise_text(t).lower() for t in texts], NEAR_DUP_THRESHOLD)
    held = set(groups[len(candidates):])
    return candidates[[g not in held for g in groups[: len(candidates)]]]


def center_rows(heldout_texts: list[str] | None = None, seed: int = 13, per_statement: int = 3,
                path: Path = CENTER_STATEMENTS_PATH) -> pd.DataFrame:
    """The generated complaints as triage examples, all in ``train`` (``origin = "project"``), with provenance
    (``source_label`` = statement id, ``source_url``, ``wording``, ``template``); none equal to or near a held-out
    text."""
    ex = make_examples(load_center_statements(path), per_statement=per_statement, seed=seed)
    ex["text"] = ex["text"].map(normalise_text)
    ex = drop_near(ex, list(heldout_texts or []))
    return pd.DataFrame({"text": ex["text"], "center": ex["center"], "source": SOURCE,
                         "group": "center-" + ex["group"], "origin": "project", "source_label": ex["statement_id"],
                         "split": "train", "source_url": ex["source_url"], "wording": ex["wording"],
                         "template": ex["template"]}).reset_index(drop=True)


def data_hash(path: Path = CENTER_STATEMENTS_PATH) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()
