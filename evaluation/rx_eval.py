"""Evaluate the prescription checker on the gold set and the sig parser on the sig-line set.

    python -m training eval-rx [--kb PATH] [--gold FILE] [--sigs FILE]   (the command line: training.offline_eval)

Prints markdown: recall/precision per category, case-level recall on unsafe prescriptions and false-alarm
rate on safe ones (overall and per provenance), and sig-parser accuracy per field.

Matching: an expected finding (category, ingredients, min_severity) is found when the checker reports a
finding of that category whose drugs include all expected ingredients, at least as severe.  Precision per
category counts the checker's actionable findings (severity >= moderate, not model predictions) in the
categories a case is about (every category for a safe case): a finding is a true positive when it matches an
expected finding of its case, a false positive otherwise.  Actionable findings in other categories of an
unsafe case (e.g. DDInter also listing two duplicated NSAIDs as interacting) are counted as "unscored".
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

from prescription_check.normalize import frequency_per_day
from prescription_check.schemas import SEVERITY_RANK, Prescription
from prescription_check.sig_parser import parse_sig

DATA_DIR = Path(__file__).resolve().parent.parent / "datasets" / "drugs"
GOLD = DATA_DIR / "gold_prescriptions.jsonl"
SIGS = DATA_DIR / "sig_lines.csv"
SIG_FIELDS = ("drug", "dose", "unit", "route", "frequency", "duration_days", "prn")
ACTIONABLE = SEVERITY_RANK["moderate"]


def _matches(f, exp) -> bool:
    return (f.category == exp["category"] and all(i in f.drugs for i in exp["ingredients"])
            and SEVERITY_RANK[f.severity] <= SEVERITY_RANK[exp["min_severity"]])


def evaluate_gold(checker, cases: list[dict]) -> dict:
    per_cat = defaultdict(lambda: {"expected": 0, "found": 0, "tp": 0, "fp": 0})
    per_prov = defaultdict(lambda: {"unsafe": 0, "detected": 0, "safe": 0, "false_alarm": 0, "expected": 0,
                                    "found": 0})
    misses, false_pos = [], []
    for case in cases:
        rx = Prescription.model_validate(case["prescription"])
        res = checker.check(rx)
        prov = case["provenance"].split(":")[0]
        exp = case["expected"]
        for e in exp:
            per_cat[e["category"]]["expected"] += 1
            per_prov[prov]["expected"] += 1
            if any(_matches(f, e) for f in res.findings):
                per_cat[e["category"]]["found"] += 1
                per_prov[prov]["found"] += 1
            else:
                misses.append((case["id"], e, [(f.category, f.severity, f.drugs) for f in res.findings][:4]))
        scope = {e["category"] for e in exp} if exp else None  # a safe case: every category is scored
        for f in res.findings:
            if f.predicted or SEVERITY_RANK[f.severity] > ACTIONABLE:
                continue
            if scope is not None and f.category not in scope:
                per_cat[f.category]["unscored"] = per_cat[f.category].get("unscored", 0) + 1
                continue
            if any(_matches(f, e) or (f.category == e["category"] and all(i in f.drugs for i in e["ingredients"]))
                   for e in exp):
                per_cat[f.category]["tp"] += 1
            else:
                per_cat[f.category]["fp"] += 1
                false_pos.append((case["id"], f.category, f.severity, f.drugs, f.message[:100]))
        if case["unsafe"]:
            per_prov[prov]["unsafe"] += 1
            per_prov[prov]["detected"] += res.verdict != "pass"
        else:
            per_prov[prov]["safe"] += 1
            per_prov[prov]["false_alarm"] += res.verdict != "pass"
    return {"per_category": dict(per_cat), "per_provenance": dict(per_prov), "misses": misses,
            "false_positives": false_pos}


def _eq(field: str, got, want: str) -> bool:
    if want == "" or want is None:
        return got in (None, "", False)
    if field == "prn":
        return bool(got) == (want.lower() in {"1", "true", "yes"})
    if field in {"dose", "duration_days"}:
        try:
            return got is not None and abs(float(got) - float(want)) < 1e-6
        except ValueError:
            return False
    if field == "frequency":
        a, b = frequency_per_day(got), frequency_per_day(want)
        return a is not None and b is not None and abs(a - b) < 1e-6
    return str(got or "").strip().lower() == want.strip().lower()


def evaluate_sigs(rows: list[dict]) -> dict:
    correct = dict.fromkeys(SIG_FIELDS, 0)
    errors = []
    exact = 0
    for r in rows:
        parsed = parse_sig(r["sig"])
        item = parsed.item.model_dump() if parsed.item else {}
        allok = True
        for fld in SIG_FIELDS:
            ok = _eq(fld, item.get(fld), r[fld])
            correct[fld] += ok
            if not ok:
                allok = False
                errors.append((r["sig"], fld, item.get(fld), r[fld]))
        exact += allok
    n = len(rows) or 1
    out = {"n": len(rows), "accuracy": {f: correct[f] / n for f in SIG_FIELDS}, "line_exact": exact / n,
           "errors": errors}
    splits = sorted({r.get("split") or "dev" for r in rows})
    if len(splits) > 1:
        out["splits"] = {sp: evaluate_sigs([{**r, "split": None} for r in rows if (r.get("split") or "dev") == sp])
                         for sp in splits}
    return out


def summarise(gold: dict) -> dict:
    pc = gold["per_category"]
    exp = sum(v["expected"] for k, v in pc.items() if k)
    found = sum(v["found"] for v in pc.values())
    tp = sum(v["tp"] for v in pc.values())
    fp = sum(v["fp"] for v in pc.values())
    pp = gold["per_provenance"]
    unsafe = sum(v["unsafe"] for v in pp.values())
    det = sum(v["detected"] for v in pp.values())
    core = {k: v for k, v in pp.items() if k != "rxsafebench"}
    core_exp = sum(v["expected"] for v in core.values())
    core_found = sum(v["found"] for v in core.values())
    return {"finding_recall": found / exp if exp else 1.0, "precision": tp / (tp + fp) if tp + fp else 1.0,
            "unsafe_case_recall": det / unsafe if unsafe else 1.0,
            "core_finding_recall": core_found / core_exp if core_exp else 1.0,
            "safe_false_alarm": (sum(v["false_alarm"] for v in pp.values()) /
                                 max(1, sum(v["safe"] for v in pp.values())))}


def markdown(gold: dict, sigs: dict | None) -> str:
    s = summarise(gold)
    lines = ["## Prescription checker on the gold set", "",
             f"- finding recall (all provenances): **{s['finding_recall']:.1%}**; without RxSafeBench: "
             f"**{s['core_finding_recall']:.1%}**",
             f"- precision of actionable findings (>= moderate): **{s['precision']:.1%}**",
             f"- unsafe prescriptions not passed (verdict review/block): **{s['unsafe_case_recall']:.1%}**; "
             f"safe prescriptions not passed (false alarms): {s['safe_false_alarm']:.1%}", "",
             "| category | expected | found | recall | scored reports (>= moderate) | precision | unscored |",
             "|---|---|---|---|---|---|---|"]
    for cat, v in sorted(gold["per_category"].items()):
        rec = v["found"] / v["expected"] if v["expected"] else float("nan")
        prec = v["tp"] / (v["tp"] + v["fp"]) if v["tp"] + v["fp"] else float("nan")
        lines.append(f"| {cat} | {v['expected']} | {v['found']} | {rec:.1%} | {v['tp'] + v['fp']} | {prec:.1%} | {v.get('unscored', 0)} |")
    lines += ["", "| provenance | expected findings | found | unsafe cases | not passed | safe cases | false alarms |",
              "|---|---|---|---|---|---|---|"]
    for prov, v in sorted(gold["per_provenance"].items()):
        lines.append(f"| {prov} | {v['expected']} | {v['found']} | {v['unsafe']} | {v['detected']} | {v['safe']} | "
                     f"{v['false_alarm']} |")
    if sigs:
        splits = sigs.get("splits", {})
        head = " | ".join(f"{sp} ({v['n']})" for sp, v in splits.items())
        lines += ["", f"## Sig parser ({sigs['n']} lines)", "",
                  f"| field | all | {head} |" if splits else "| field | accuracy |",
                  "|---|---|" + "---|" * len(splits)]
        for f, a in sigs["accuracy"].items():
            extra = "".join(f" {v['accuracy'][f]:.1%} |" for v in splits.values())
            lines.append(f"| {f} | {a:.1%} |{extra}")
        extra = "".join(f" {v['line_exact']:.1%} |" for v in splits.values())
        lines.append(f"| all fields of a line | {sigs['line_exact']:.1%} |{extra}")
    return "\n".join(lines)


def load_gold(path: Path = GOLD) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def load_sigs(path: Path = SIGS) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))
