"""Urgency measured on AcuityBench seed100 (evaluation only; its licence forbids training on it).

    python -m training eval-acuity [--field vignette_text|opening_utterance] [--json]

Each vignette carries a physician-panel urgency: A = self-care, B = routine, C = urgent,
D = emergency.  We predict urgency from red flags + the rule set in :mod:`triage.urgency` only
(``centers=[]``; the classifier is not involved), passing the vignette's age and sex as a client
would.  Reported: exact accuracy, *safe* accuracy (prediction at least as urgent as the gold
label, i.e. never under-triaged), under-triage of D (emergencies predicted below emergency),
over-triage, and the confusion table.  Published comparators: symptom checkers get 49-57% of
vignettes' urgency right, physicians about 91% (as quoted in the issue).
"""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from triage.redflags import RedFlagMatcher
from triage.urgency import URGENCY_LEVELS, decide_urgency

GOLD_TO_LEVEL = {"A": "self_care", "B": "routine", "C": "urgent", "D": "emergency"}
RANK = {"self_care": 0, "routine": 1, "urgent": 2, "emergency": 3}
COMPARATORS = {"published symptom checkers": "49-57%", "physicians": "~91%"}


def _float(value: str | None) -> float | None:
    try:
        return float(value) if value not in (None, "") else None
    except ValueError:
        return None


THREE_LEVEL = {"emergency": "emergent", "urgent": "non_emergent", "routine": "non_emergent", "self_care": "self_care"}


def acuity_metrics(gold: list[str], pred: list[str]) -> dict:
    """Metric math on aligned lists of urgency levels (exposed for testing)."""
    if len(gold) != len(pred):
        raise ValueError("gold and pred differ in length")
    for level in list(gold) + list(pred):
        if level not in RANK:
            raise ValueError(f"unknown urgency level {level!r}")
    n = len(gold)
    confusion = {g: {p: 0 for p in URGENCY_LEVELS} for g in URGENCY_LEVELS}
    for g, p in zip(gold, pred):
        confusion[g][p] += 1
    exact = sum(g == p for g, p in zip(gold, pred))
    safe = sum(RANK[p] >= RANK[g] for g, p in zip(gold, pred))
    under = n - safe
    over = sum(RANK[p] > RANK[g] for g, p in zip(gold, pred))
    n_d = sum(g == "emergency" for g in gold)
    d_under = sum(g == "emergency" and p != "emergency" for g, p in zip(gold, pred))
    urgent = {"emergency", "urgent"}
    dichotomised = sum((g in urgent) == (p in urgent) for g, p in zip(gold, pred))
    three = sum(THREE_LEVEL[g] == THREE_LEVEL[p] for g, p in zip(gold, pred))
    return {
        "n": n,
        "exact_accuracy": exact / n if n else 0.0,
        # emergency+urgent vs routine+self-care (the dichotomy of the lay-vignette literature)
        "dichotomised_accuracy": dichotomised / n if n else 0.0,
        # emergent / non-emergent (urgent + routine) / self-care: the three levels of the symptom-checker studies
        # (Semigran et al., BMJ 2015) that issue 11's clinical vignettes are scored on
        "three_level_accuracy": three / n if n else 0.0,
        "emergency_recall": (n_d - d_under) / n_d if n_d else 0.0,
        "safe_accuracy": safe / n if n else 0.0,
        "under_triage_rate": under / n if n else 0.0,
        "over_triage_rate": over / n if n else 0.0,
        "n_emergency": n_d,
        "emergency_under_triaged": d_under,
        "emergency_under_triage_rate": d_under / n_d if n_d else 0.0,
        "confusion": confusion,
        "gold_counts": dict(Counter(gold)),
        "pred_counts": dict(Counter(pred)),
    }


def evaluate_acuity(
    vignettes_path: str | Path,
    *,
    field: str = "vignette_text",
    matcher: RedFlagMatcher | None = None,
) -> dict:
    path = Path(vignettes_path)
    matcher = matcher or RedFlagMatcher()
    gold: list[str] = []
    pred: list[str] = []
    flagged_rules: Counter = Counter()
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        raise ValueError(f"{path}: no vignettes")
    for i, row in enumerate(rows, start=2):
        label = (row.get("gold_triage") or "").strip()
        if label not in GOLD_TO_LEVEL:
            raise ValueError(f"{path}: line {i}: gold_triage must be one of A-D, got {label!r}")
        if field not in row:
            raise ValueError(f"{path}: no column {field!r}")
        text = row[field] or ""
        age = _float(row.get("age"))
        sex = (row.get("sex") or "").strip() or None
        flags = matcher.match(text, age_years=age, sex=sex)
        flagged_rules.update(f.rule_id for f in flags)
        decision = decide_urgency(text, [], flags, age_years=age)
        gold.append(GOLD_TO_LEVEL[label])
        pred.append(decision.level)
    report = acuity_metrics(gold, pred)
    report.update(
        {
            "field": field,
            "table_version": matcher.version,
            "flagged_rules": dict(flagged_rules.most_common()),
            "comparators": COMPARATORS,
        }
    )
    return report


def render_markdown(report: dict) -> str:
    lines = [
        f"AcuityBench seed100 ({report['n']} vignettes, text field `{report['field']}`, red-flag table "
        f"{report['table_version']}; flags + rules only, no classifier)",
        "",
        "| metric | value |",
        "|---|---:|",
        f"| exact accuracy | {report['exact_accuracy']:.1%} |",
        f"| safe accuracy (never under-triaged) | {report['safe_accuracy']:.1%} |",
        f"| under-triage (any) | {report['under_triage_rate']:.1%} |",
        f"| over-triage | {report['over_triage_rate']:.1%} |",
        f"| D (emergency) under-triaged | {report['emergency_under_triaged']}/{report['n_emergency']} "
        f"({report['emergency_under_triage_rate']:.1%}) |",
        f"| comparator: published symptom checkers (exact) | {COMPARATORS['published symptom checkers']} |",
        f"| comparator: physicians (exact) | {COMPARATORS['physicians']} |",
        "",
        "Confusion (rows gold, columns predicted):",
        "",
        "| gold \\ pred | " + " | ".join(URGENCY_LEVELS) + " | total |",
        "|---|" + "---:|" * (len(URGENCY_LEVELS) + 1),
    ]
    for g in URGENCY_LEVELS:
        row = report["confusion"][g]
        lines.append(f"| {g} | " + " | ".join(str(row[p]) for p in URGENCY_LEVELS) + f" | {sum(row.values())} |")
    return "\n".join(lines)
