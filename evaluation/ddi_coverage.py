"""Interaction coverage on an outside set of documented interacting pairs, and predicted-finding rates.

    rows = load_pairs(Path("datasets/drugs/eval/label_ddi_pairs.csv"))
    report = evaluate_coverage(checker, rows)      # checker: prescription_check.Checker
    print(markdown(report))

Each pair is checked as a two-item prescription (both drugs new).  A pair counts as **flagged** when the
checker reports a *documented* interaction (category ``interaction``, not a model prediction) between the two
drugs' ingredients at moderate or above; pairs whose label says contraindicated / avoid (``expected_min_severity``
major) count as **major+** when that finding is major or contraindicated.  Pairs with an unrecognised drug are
reported apart (they are misses too: the checker cannot flag a drug it does not know).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from prescription_check.schemas import SEVERITY_RANK, Prescription

MODERATE = SEVERITY_RANK["moderate"]
MAJOR = SEVERITY_RANK["major"]


def load_pairs(path: Path) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def check_pair(checker, a: str, b: str, current: bool = False):
    """The checker's result for drugs ``a`` and ``b`` (``current``: ``b`` is a current medication)."""
    if current:
        rx = {"patient": {"current_medications": [b]}, "items": [{"drug": a}]}
    else:
        rx = {"items": [{"drug": a}, {"drug": b}]}
    return checker.check(Prescription.model_validate(rx))


def pair_findings(result) -> tuple[list, list]:
    """(documented interaction findings, predicted findings) between the two items' ingredients."""
    ings = [set(i.ingredients) for i in (*result.items, *result.current_medications)]
    if len(ings) < 2 or not ings[0] or not ings[1]:
        return [], []
    doc, pred = [], []
    for f in result.findings:
        if f.category not in {"interaction", "predicted_interaction"} or len(f.drugs) != 2:
            continue
        x, y = f.drugs
        if (x in ings[0] and y in ings[1]) or (y in ings[0] and x in ings[1]):
            (pred if f.predicted else doc).append(f)
    return doc, pred


def evaluate_coverage(checker, rows: list[dict], a_col: str = "label_drug", b_col: str = "other_drug") -> dict:
    """Counts over ``rows`` (see the module docstring); ``misses`` lists the pairs not flagged."""
    n = len(rows)
    flagged = major_ok = major_n = unrecognised = predicted_only = 0
    by_origin: Counter = Counter()
    by_says: dict[str, Counter] = {}
    misses: list[dict] = []
    for r in rows:
        res = check_pair(checker, r[a_col], r[b_col])
        if any(not i.ingredients for i in res.items):
            unrecognised += 1
        doc, pred = pair_findings(res)
        best = min(doc, key=lambda f: SEVERITY_RANK[f.severity]) if doc else None
        hit = best is not None and SEVERITY_RANK[best.severity] <= MODERATE
        says = r.get("label_says", "")
        c = by_says.setdefault(says, Counter())
        c["n"] += 1
        if hit:
            flagged += 1
            c["flagged"] += 1
            by_origin[(best.evidence or {}).get("origin") or best.rule_id] += 1
        elif pred:
            predicted_only += 1
        if r.get("expected_min_severity") == "major":
            major_n += 1
            if best is not None and SEVERITY_RANK[best.severity] <= MAJOR:
                major_ok += 1
                c["major+"] += 1
        if not hit:
            misses.append({"pair": f"{r[a_col]} + {r[b_col]}", "label_says": says,
                           "found": best.severity if best else None,
                           "predicted": [f"{f.severity} p={f.probability:.2f}" for f in pred]})
    return {"n": n, "flagged": flagged, "flagged_share": flagged / n if n else 0.0, "major_n": major_n,
            "major_plus": major_ok, "major_plus_share": major_ok / major_n if major_n else 0.0,
            "unrecognised": unrecognised, "predicted_only": predicted_only, "by_origin": dict(by_origin),
            "by_label_says": {k: dict(v) for k, v in by_says.items()}, "misses": misses}


def predicted_rate(checker, pairs: list[tuple[str, str]]) -> dict:
    """How often pairs (e.g. known non-interacting ones) get a predicted finding, and at which severity."""
    n = with_pred = moderate_plus = documented = 0
    for a, b in pairs:
        res = check_pair(checker, a, b)
        doc, pred = pair_findings(res)
        if not all(i.ingredients for i in res.items):
            continue
        n += 1
        documented += bool(doc)
        if pred:
            with_pred += 1
            moderate_plus += any(SEVERITY_RANK[f.severity] <= MODERATE for f in pred)
    return {"n": n, "predicted": with_pred, "predicted_share": with_pred / n if n else 0.0,
            "predicted_moderate_plus": moderate_plus, "documented": documented}


def markdown(report: dict, title: str = "outside documented pairs") -> str:
    r = report
    lines = [f"### Interaction coverage: {title}", "",
             f"- pairs: {r['n']} (a drug unrecognised in {r['unrecognised']})",
             f"- flagged as a documented interaction >= moderate: **{r['flagged']} / {r['n']} "
             f"({r['flagged_share']:.1%})**",
             f"- label says contraindicated/avoid -> flagged major+: **{r['major_plus']} / {r['major_n']} "
             f"({r['major_plus_share']:.1%})**",
             f"- not flagged but with a predicted finding: {r['predicted_only']}",
             "", "| label says | pairs | flagged >= moderate | flagged major+ |", "|---|---:|---:|---:|"]
    for says, c in sorted(r["by_label_says"].items()):
        lines.append(f"| {says} | {c.get('n', 0)} | {c.get('flagged', 0)} | {c.get('major+', 0)} |")
    lines += ["", "flagged by origin: " + ", ".join(f"{k} {v}" for k, v in sorted(r["by_origin"].items()))]
    return "\n".join(lines) + "\n"


def load_regimens(path: Path) -> list[dict]:
    rows = load_pairs(path)
    for r in rows:
        r["drug_list"] = [d.strip() for d in r["drugs"].split("|") if d.strip()]
    return rows


def regimen_report(checker, regimens: list[dict]) -> dict:
    """Per regimen (all drugs prescribed together): verdict, documented interaction findings >= moderate,
    predicted findings (and how many at >= moderate)."""
    rows = []
    for r in regimens:
        res = checker.check(Prescription.model_validate({"items": [{"drug": d} for d in r["drug_list"]]}))
        doc = [f for f in res.findings if f.category == "interaction" and SEVERITY_RANK[f.severity] <= MODERATE]
        pred = [f for f in res.findings if f.predicted]
        rows.append({"regimen_id": r["regimen_id"], "condition": r["condition"], "verdict": res.verdict,
                     "documented_moderate_plus": len(doc),
                     "documented": [f"{'+'.join(f.drugs)}: {f.severity} ({f.rule_id})" for f in doc],
                     "predicted": len(pred),
                     "predicted_list": [f"{'+'.join(f.drugs)}: {f.severity} p={f.probability:.2f}" for f in pred]})
    n = len(rows)
    return {"n": n, "review_or_block": sum(r["verdict"] != "pass" for r in rows),
            "predicted_total": sum(r["predicted"] for r in rows),
            "predicted_per_regimen": sum(r["predicted"] for r in rows) / n if n else 0.0,
            "regimens_with_predicted": sum(r["predicted"] > 0 for r in rows), "rows": rows}


def regimen_markdown(rep: dict) -> str:
    lines = [f"### Guideline regimens ({rep['n']})", "",
             f"- sent to review or blocked: **{rep['review_or_block']} / {rep['n']}**",
             f"- predicted findings: **{rep['predicted_total']}** in all ({rep['predicted_per_regimen']:.2f} per "
             f"regimen; {rep['regimens_with_predicted']} regimens with at least one)", "",
             "| regimen | condition | verdict | documented >= moderate | predicted |", "|---|---|---|---:|---:|"]
    for r in rep["rows"]:
        lines.append(f"| {r['regimen_id']} | {r['condition']} | {r['verdict']} | {r['documented_moderate_plus']} | "
                     f"{r['predicted']} |")
    return "\n".join(lines) + "\n"
