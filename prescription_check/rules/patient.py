"""Patient-specific rules: pregnancy, breastfeeding, age, renal and hepatic function, condition contraindications."""

from __future__ import annotations

import re

from prescription_check.normalize import clean
from prescription_check.rules.context import DEFAULT_ACTIONS, Ctx
from prescription_check.schemas import SEVERITY_RANK, Finding, looks_like_icd10


_NEGATED = re.compile(r"^(no|not|non|denies|denied|without|negative for|never|ruled out|r/o|free of)\b|"
                      r"\b(ruled out|negative|none|resolved)$")


def _ings(ctx: Ctx):
    for it in ctx.items:
        for ing in it.ingredients:
            yield it, ing


def _one_per(out: list[Finding]) -> list[Finding]:
    seen, uniq = set(), []
    for f in out:
        k = (f.rule_id, tuple(f.drugs), f.message)
        if k not in seen:
            seen.add(k)
            uniq.append(f)
    return uniq


def _pregnancy(ctx: Ctx, out: list[Finding]) -> None:
    p = ctx.patient
    contexts = []
    if p.pregnant:
        contexts.append("pregnancy")
    if p.breastfeeding:
        contexts.append("breastfeeding")
    for it, ing in _ings(ctx):
        # most severe first, so that with an unknown trimester the worst trimester's row is the one reported
        for r in sorted(ctx.kb.rows_for("pregnancy_lactation", ing), key=lambda r: SEVERITY_RANK[r["severity"]]):
            if r["context"] not in contexts:
                continue
            tri = r["trimester"] or "any"
            if r["context"] == "pregnancy" and tri != "any" and p.trimester is not None \
                    and str(p.trimester) not in tri.split("|"):
                continue
            cat = "pregnancy" if r["context"] == "pregnancy" else "breastfeeding"
            out.append(Finding(
                rule_id=f"{cat.upper()}-{(r['ingredient'] or r['atc_prefix']).upper().replace(' ', '_')}",
                category=cat, severity=r["severity"], drugs=[ing], message=f"{ing}: {r['message']}",
                evidence={"context": r["context"], "trimester_rule": tri, "patient_trimester": p.trimester,
                          "row": r["_row"]},
                source=r["source"], action=DEFAULT_ACTIONS[r["severity"]]))


def _age(ctx: Ctx, out: list[Finding]) -> None:
    age = ctx.patient.age_in_years()  # age_years, else from age_months / age_days
    if age is None:
        return
    for it, ing in _ings(ctx):
        for r in ctx.kb.rows_for("age_rules", ing):
            lo, hi = r["age_min_years"], r["age_max_years"]
            if (lo is None or age >= lo) and (hi is None or age < hi):
                out.append(Finding(
                    rule_id=f"AGE-{(r['ingredient'] or r['atc_prefix']).upper().replace(' ', '_')}",
                    category="age", severity=r["severity"], drugs=[ing], message=f"{ing}: {r['message']}",
                    evidence={"age_years": age, "age_min_years": lo, "age_max_years": hi, "row": r["_row"]},
                    source=r["source"], action=DEFAULT_ACTIONS[r["severity"]]))


def _renal(ctx: Ctx, out: list[Finding]) -> None:
    p = ctx.patient
    if p.egfr is None and p.crcl is None:
        return
    for it, ing in _ings(ctx):
        for r in ctx.kb.rows_for("renal_dosing", ing):
            measure = r["measure"]
            value = p.egfr if measure == "egfr" else p.crcl
            used = measure
            if value is None:  # only the other measure is known: use it as an approximation
                value = p.crcl if measure == "egfr" else p.egfr
                used = "crcl" if measure == "egfr" else "egfr"
            lo, hi = r["egfr_min"], r["egfr_max"]
            if not ((lo is None or value >= lo) and (hi is None or value < hi)):
                continue
            daily = it.ingredient_daily_mg.get(ing)
            if r["action"] == "max_daily":
                if r["max_daily_mg"] is None or daily is None or daily <= r["max_daily_mg"] * 1.0001:
                    continue
            ev = {"measure": measure, "value_used": value, "measure_used": used, "band": [lo, hi],
                  "action": r["action"], "daily_mg": daily, "max_daily_mg": r["max_daily_mg"], "row": r["_row"]}
            msg = f"{ing} with {used} {value:g}: {r['message']}"
            if r["action"] == "max_daily":
                msg += f" (prescribed {daily:g} mg/day > {r['max_daily_mg']:g} mg/day)"
            out.append(Finding(rule_id=f"RENAL-{ing.upper().replace(' ', '_')}-{r['action'].upper()}",
                               category="renal", severity=r["severity"], drugs=[ing], message=msg, evidence=ev,
                               source=r["source"], action=DEFAULT_ACTIONS[r["severity"]]))


# patient.hepatic_impairment -> rank; mild/moderate/severe = Child-Pugh A/B/C
HEPATIC_RANK = {"none": 0, "mild": 1, "moderate": 2, "severe": 3}
_CHILD_PUGH = {"mild": "A", "moderate": "B", "severe": "C"}


def _hepatic(ctx: Ctx, out: list[Finding]) -> None:
    grade = ctx.patient.hepatic_impairment
    rank = HEPATIC_RANK.get(grade or "none", 0)
    if rank == 0:
        return
    for it, ing in _ings(ctx):
        rows = [r for r in ctx.kb.rows_for("hepatic_dosing", ing) if HEPATIC_RANK[r["min_grade"]] <= rank]
        if not rows:
            continue
        # a row applies to its grade and worse; where a drug has rows for several grades (celecoxib: moderate
        # -> reduce dose, severe -> avoid), the one written for the grade closest to the patient's supersedes
        top = max(HEPATIC_RANK[r["min_grade"]] for r in rows)
        for r in rows:
            if HEPATIC_RANK[r["min_grade"]] != top:
                continue
            daily, limit = it.ingredient_daily_mg.get(ing), r["max_daily_mg"]
            if limit is not None and daily is not None and daily <= limit * 1.0001:
                continue  # within the hepatic daily maximum
            msg = f"{ing} with {grade} hepatic impairment (Child-Pugh {_CHILD_PUGH[grade]}): {r['message']}"
            if limit is not None:
                msg += (f" (prescribed {daily:g} mg/day > {limit:g} mg/day)" if daily is not None else
                        f" (daily dose could not be computed: check it is <= {limit:g} mg/day)")
            out.append(Finding(
                rule_id=f"HEPATIC-{ing.upper().replace(' ', '_')}-{r['action'].upper()}",
                category="hepatic", severity=r["severity"], drugs=[ing], message=msg,
                evidence={"hepatic_impairment": grade, "child_pugh": _CHILD_PUGH[grade], "min_grade": r["min_grade"],
                          "action": r["action"], "daily_mg": daily, "max_daily_mg": limit, "row": r["_row"]},
                source=r["source"], action=DEFAULT_ACTIONS[r["severity"]]))


def _conditions(ctx: Ctx, out: list[Finding]) -> None:
    conds = ctx.patient.conditions
    if not conds:
        return
    # "no history of asthma", "denies peptic ulcer", "asthma: negative" are not conditions
    texts = [f" {clean(c)} " for c in conds if not _NEGATED.search(clean(c))]
    codes = [c.strip().upper().replace(".", "") for c in conds if looks_like_icd10(c)]
    for it, ing in _ings(ctx):
        for r in ctx.kb.rows_for("condition_contraindications", ing):
            hit = next((c for c in codes for pre in r["icd10_prefixes"] if c.startswith(pre)), None)
            if hit is None:
                hit = next((t.strip() for t in texts for term in r["condition_terms"] if f" {term} " in t), None)
            if hit is None:
                continue
            out.append(Finding(
                rule_id=f"COND-{(r['ingredient'] or r['atc_prefix']).upper().replace(' ', '_')}",
                category="contraindication", severity=r["severity"], drugs=[ing],
                message=f"{ing} with {hit!r}: {r['message']}",
                evidence={"condition": hit, "terms": r["condition_terms"][:5], "icd10": r["icd10_prefixes"],
                          "row": r["_row"]},
                source=r["source"], action=DEFAULT_ACTIONS[r["severity"]]))


def run(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    _pregnancy(ctx, out)
    _age(ctx, out)
    _renal(ctx, out)
    _hepatic(ctx, out)
    _conditions(ctx, out)
    return _one_per(out)
