"""Recall and false-positive rate of the red-flag matcher on the hand-written test phrases.

    python -m training eval-redflags [--phrases PATH] [--table PATH] [--json]

The phrase set (``datasets/triage/redflag_test_phrases.csv``) has one lay message per row:
``text, expected_rule_id, expect_fire (1/0), kind, age_years, pregnant``.  A positive row
(``expect_fire=1``) is recalled when its expected rule fires; a negative row is a false positive
when *any* rule fires on it.  A positive whose expected rule is an emergency rule is a *missed
emergency* when no emergency-level flag fires at all; the script exits 1 if there is any.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from triage.redflags import DEFAULT_TABLE_PATH, RedFlagMatcher

DEFAULT_PHRASES_PATH = DEFAULT_TABLE_PATH.parent / "redflag_test_phrases.csv"
KINDS = ("positive", "negated", "history", "family", "unrelated", "misspelt")


@dataclass(frozen=True)
class Phrase:
    text: str
    expected_rule_id: str
    expect_fire: bool
    kind: str
    age_years: float | None
    pregnant: bool | None
    split: str = "dev"  # "holdout": written after the rules were frozen, first scored blind


def load_phrases(path: str | Path = DEFAULT_PHRASES_PATH) -> list[Phrase]:
    rows: list[Phrase] = []
    with Path(path).open(newline="", encoding="utf-8") as fh:
        for i, row in enumerate(csv.DictReader(fh), start=2):
            try:
                fire = row["expect_fire"].strip()
                if fire not in ("0", "1"):
                    raise ValueError(f"expect_fire must be 0 or 1, got {fire!r}")
                kind = row["kind"].strip()
                if kind not in KINDS:
                    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
                if not row["text"].strip():
                    raise ValueError("empty text")
                age = (row.get("age_years") or "").strip()
                preg = (row.get("pregnant") or "").strip()
                rows.append(
                    Phrase(
                        row["text"],
                        (row.get("expected_rule_id") or "").strip(),
                        fire == "1",
                        kind,
                        float(age) if age else None,
                        {"1": True, "0": False, "": None}[preg],
                        (row.get("split") or "dev").strip() or "dev",
                    )
                )
            except (KeyError, ValueError) as exc:
                raise ValueError(f"{path}: line {i}: {exc}") from None
    return rows


def evaluate_redflags(
    phrases_path: str | Path = DEFAULT_PHRASES_PATH, matcher: RedFlagMatcher | None = None
) -> dict:
    matcher = matcher or RedFlagMatcher()
    phrases = load_phrases(phrases_path)
    urgency_of = {rid: matcher.rule(rid).urgency for rid in matcher.rule_ids()}
    per_rule = defaultdict(lambda: {"positives": 0, "recalled": 0, "false_positives": 0})
    per_kind = defaultdict(lambda: {"n": 0, "correct": 0})
    per_split = defaultdict(lambda: {"positives": 0, "recalled": 0, "negatives": 0, "false_positives": 0})
    missed, missed_emergencies, false_positives = [], [], []
    positives = negatives = recalled = fp = 0
    for p in phrases:
        hits = matcher.match(p.text, age_years=p.age_years, pregnant=p.pregnant)
        fired = {h.rule_id for h in hits}
        per_kind[p.kind]["n"] += 1
        split = per_split[p.split]
        if p.expect_fire:
            split["positives"] += 1
            split["recalled"] += p.expected_rule_id in fired
            if p.expected_rule_id not in urgency_of:
                raise ValueError(f"phrase {p.text!r} expects unknown rule {p.expected_rule_id!r}")
            positives += 1
            stats = per_rule[p.expected_rule_id]
            stats["positives"] += 1
            if p.expected_rule_id in fired:
                recalled += 1
                stats["recalled"] += 1
                per_kind[p.kind]["correct"] += 1
            else:
                missed.append({"text": p.text, "expected": p.expected_rule_id, "fired": sorted(fired)})
            if urgency_of[p.expected_rule_id] == "emergency" and not any(h.urgency == "emergency" for h in hits):
                missed_emergencies.append({"text": p.text, "expected": p.expected_rule_id, "fired": sorted(fired)})
        else:
            negatives += 1
            split["negatives"] += 1
            split["false_positives"] += bool(fired)
            if fired:
                fp += 1
                false_positives.append({"text": p.text, "kind": p.kind, "fired": sorted(fired)})
                for rid in fired:
                    per_rule[rid]["false_positives"] += 1
            else:
                per_kind[p.kind]["correct"] += 1
    for rid in matcher.rule_ids():
        per_rule[rid]  # every rule appears in the report
    return {
        "table_version": matcher.version,
        "n_phrases": len(phrases),
        "positives": positives,
        "negatives": negatives,
        "recall": recalled / positives if positives else 0.0,
        "false_positive_rate": fp / negatives if negatives else 0.0,
        "missed": missed,
        "missed_emergencies": missed_emergencies,
        "false_positives": false_positives,
        "per_rule": {rid: dict(v) for rid, v in per_rule.items()},
        "per_kind": {k: dict(v) for k, v in per_kind.items()},
        "per_split": {k: dict(v) for k, v in per_split.items()},
    }


def render_markdown(report: dict) -> str:
    lines = [
        f"Red-flag test set: {report['n_phrases']} phrases ({report['positives']} positive, "
        f"{report['negatives']} negative), table {report['table_version']}",
        "",
        f"- recall (expected rule fired): **{report['recall']:.1%}**",
        f"- false-positive rate (any flag on a negative): **{report['false_positive_rate']:.1%}**",
        f"- missed emergencies: **{len(report['missed_emergencies'])}**",
        "",
        "| rule | positives | recalled | recall | false positives |",
        "|---|---:|---:|---:|---:|",
    ]
    for rid, s in report["per_rule"].items():
        rec = f"{s['recalled'] / s['positives']:.0%}" if s["positives"] else "-"
        lines.append(f"| {rid} | {s['positives']} | {s['recalled']} | {rec} | {s['false_positives']} |")
    lines += ["", "| split | positives | recalled | negatives | false positives |", "|---|---:|---:|---:|---:|"]
    for name, s in sorted(report["per_split"].items()):
        lines.append(f"| {name} | {s['positives']} | {s['recalled']} | {s['negatives']} | {s['false_positives']} |")
    lines += ["", "| kind | n | correct |", "|---|---:|---:|"]
    for kind, s in sorted(report["per_kind"].items()):
        lines.append(f"| {kind} | {s['n']} | {s['correct']} |")
    if report["missed"]:
        lines += ["", "Missed positives:"] + [f"- {m['expected']}: {m['text']!r} (fired {m['fired']})" for m in report["missed"]]
    if report["false_positives"]:
        lines += ["", "False positives:"] + [f"- {f['kind']}: {f['text']!r} -> {f['fired']}" for f in report["false_positives"]]
    return "\n".join(lines)
