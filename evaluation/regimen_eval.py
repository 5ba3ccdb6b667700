"""False alarms on everyday, guideline-cited regimens (``datasets/drugs/eval/everyday_regimens.csv``).

    python -m training eval-regimens [--kb PATH] [--ddi-model] [--policy default|strict|...] [--json]

Every row is a standard-of-care regimen whose expectation is "no review needed": a regimen is **sent to review**
when the checker's verdict is not ``pass``.  The report gives the share sent to review (overall and per split:
``dev`` rows may be inspected when curating, ``heldout`` rows only counted), the number of findings and of
counselling notes per regimen, and which rules fire (with the tier each finding got).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from pathlib import Path

from prescription_check.schemas import Prescription

REGIMENS = Path(__file__).resolve().parent.parent / "datasets" / "drugs" / "eval" / "everyday_regimens.csv"


def load_regimens(path: Path = REGIMENS) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    for r in rows:
        r["prescription"] = {"id": r["id"], "patient": json.loads(r["patient"]), "items": json.loads(r["items"])}
    return rows


def evaluate_regimens(checker, rows: list[dict]) -> dict:
    per_split: dict[str, Counter] = {}
    rules: Counter = Counter()
    details = []
    for r in rows:
        res = checker.check(Prescription.model_validate(r["prescription"]))
        sent = res.verdict != "pass"
        notes = getattr(res, "counselling_notes", None) or []
        split = r.get("split") or "dev"
        c = per_split.setdefault(split, Counter())
        c["n"] += 1
        c["sent"] += sent
        c["findings"] += len(res.findings)
        c["predicted"] += sum(f.predicted for f in res.findings)
        c["notes"] += len(notes)
        for f in res.findings:
            rules[(f.rule_id, f.severity, getattr(f, "tier", None) or "-")] += 1
        details.append({"id": r["id"], "split": split, "regimen": r["regimen"], "verdict": res.verdict,
                        "findings": [(f.rule_id, f.severity, getattr(f, "tier", None), f.drugs) for f in res.findings],
                        "counselling_notes": len(notes)})
    total = Counter()
    for c in per_split.values():
        total.update(c)
    return {"total": dict(total), "per_split": {k: dict(v) for k, v in sorted(per_split.items())},
            "rules": [{"rule_id": k[0], "severity": k[1], "tier": k[2], "count": n} for k, n in rules.most_common()],
            "details": details}


def share(c: dict) -> float:
    return c["sent"] / c["n"] if c.get("n") else 0.0


def markdown(report: dict, title: str = "Everyday regimens") -> str:
    t = report["total"]
    lines = [f"### {title}", "", "| split | regimens | sent to review | share | findings per regimen | "
             "predicted per regimen | counselling notes per regimen |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name, c in [*report["per_split"].items(), ("all", t)]:
        n = c["n"] or 1
        lines.append(f"| {name} | {c['n']} | {c['sent']} | {share(c):.1%} | {c['findings'] / n:.2f} | "
                     f"{c.get('predicted', 0) / n:.2f} | {c.get('notes', 0) / n:.2f} |")
    lines += ["", "| rule | severity | tier | findings |", "|---|---|---|---:|"]
    lines += [f"| {r['rule_id']} | {r['severity']} | {r['tier']} | {r['count']} |" for r in report["rules"]]
    sent = [d for d in report["details"] if d["verdict"] != "pass"]
    if sent:
        lines += ["", "Sent to review:", ""]
        for d in sent:
            fs = "; ".join(f"{rid} {sev} {tier or ''} {'+'.join(dr)}".replace("  ", " ") for rid, sev, tier, dr in d["findings"]
                           if sev in ("contraindicated", "major", "moderate"))
            lines.append(f"- {d['id']} ({d['split']}) {d['regimen']}: {d['verdict']} - {fs}")
    return "\n".join(lines)
