"""Urgency measured end to end (red flags + urgency head + rules, as the service decides) on labelled complaints.

``evaluate_urgency(rows, decide)``: ``rows`` are dicts with ``text``, ``urgency`` (gold level) and optionally
``age_years``, ``sex``, ``pregnant`` and a ``group`` to break the figures down by (a style, a source);
``decide(row) -> UrgencyDecision``.  ``pipeline(matcher, classifier)`` builds the service's decision: the
classifier's urgency head (when its artifact has one) and the cited red flags.  Metrics per
``evaluation.acuity_eval.acuity_metrics``: exact and dichotomised accuracy, emergency recall, under- and
over-triage rates, confusion table; plus which source set each level and how many negated/history mentions were
raised to emergency (rows whose ``group`` is ``negation_trap`` or ``history_trap``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from typing import Callable

from evaluation.acuity_eval import acuity_metrics
from triage.redflags import RedFlagMatcher
from triage.urgency import UrgencyDecision, UrgencyModel, decide_urgency, respect_mentions

TRAP_GROUPS = ("negation_trap", "history_trap")


def pipeline(matcher: RedFlagMatcher, classifier=None, respect_negation: bool = True,
             scopes: bool = False) -> Callable[[dict], UrgencyDecision]:
    """The service's urgency decision for one row (classifier optional: rules and red flags only without it).
    ``respect_negation=False`` leaves out ``triage.urgency.respect_mentions`` (to measure what it changes);
    ``scopes=False`` keeps it to the red-flag matcher's blocked mentions (as before issue 11's negation scopes)."""
    head = getattr(classifier, "urgency_head", None)
    version = None if classifier is None else (getattr(classifier, "version", None) or "local")

    def decide(row: dict) -> UrgencyDecision:
        decide.texts += 1
        text = row["text"]
        age, sex, pregnant = row.get("age_years"), row.get("sex"), row.get("pregnant")
        centers, model = [], None
        if classifier is not None:
            pred = classifier.predict([text])[0]
            centers = pred.centers
            if pred.urgency is not None and head is not None:
                model = UrgencyModel(pred.urgency, head.thresholds, version, pred.urgency_evidence)
        flags = matcher.match(text, age_years=age, sex=sex, pregnant=pregnant)
        if model is not None and respect_negation:
            model = respect_mentions(text, flags, model, matcher, rescore, age_years=age, sex=sex, pregnant=pregnant,
                                     scopes=scopes)
        return decide_urgency(text, centers, flags, age_years=age, pregnant=pregnant, model=model, matcher=matcher)

    def rescore(text: str) -> UrgencyModel | None:
        decide.rescored += 1  # one more encoder pass: counted, to measure how often the re-scoring costs it
        pred = classifier.predict([text])[0]
        if pred.urgency is None:
            return None
        return UrgencyModel(pred.urgency, head.thresholds, version, pred.urgency_evidence)

    decide.texts, decide.rescored = 0, 0
    return decide


RESCORED_MARK = "scored without the denied / past"  # in the model's reason when respect_mentions re-scored


def emergency_path(decision: UrgencyDecision) -> str:
    """Which path set an emergency: ``red_flag:<rule>`` (a red-flag rule fired: for a trap, it missed the negation /
    history), ``model_rescored`` (the head raised it, the text was re-scored without its denied / past mentions and
    still read as an emergency) or ``model_not_rescored`` (the head raised it and nothing denied or past was found
    to remove, so no re-score)."""
    if decision.source.startswith("red_flag"):
        return decision.source
    if decision.source == "model":
        return "model_rescored" if any(RESCORED_MARK in r for r in decision.reasons) else "model_not_rescored"
    return decision.source


def evaluate_urgency(rows: list[dict], decide: Callable[[dict], UrgencyDecision], keep_errors: int = 1000) -> dict:
    gold, pred, groups, sources = [], [], defaultdict(lambda: ([], [])), Counter()
    errors, trap_paths, raised = [], Counter(), []
    before = (getattr(decide, "texts", 0), getattr(decide, "rescored", 0))
    for row in rows:
        d = decide(row)
        if row.get("group") in TRAP_GROUPS and d.level == "emergency":
            path = emergency_path(d)
            trap_paths[path.split(":")[0]] += 1
            raised.append({"id": row.get("id"), "path": path, "text": row["text"][:160]})
        gold.append(row["urgency"])
        pred.append(d.level)
        sources[d.source.split(":")[0]] += 1
        if row.get("group"):
            groups[row["group"]][0].append(row["urgency"])
            groups[row["group"]][1].append(d.level)
        if d.level != row["urgency"] and len(errors) < keep_errors:
            errors.append({"id": row.get("id"), "gold": row["urgency"], "pred": d.level, "source": d.source,
                           "text": row["text"][:160]})
    report = {"overall": acuity_metrics(gold, pred), "decided_by": dict(sources),
              "by_group": {g: acuity_metrics(*gp) for g, gp in sorted(groups.items())}, "errors": errors}
    traps = [(g, p) for name in TRAP_GROUPS for g, p in zip(*groups.get(name, ([], [])))]
    report["traps"] = {"n": len(traps), "raised_to_emergency": sum(p == "emergency" for _, p in traps),
                       "paths": dict(trap_paths), "raised": raised}
    if hasattr(decide, "rescored"):  # the service pipeline: how many texts cost a second encoder pass
        report["rescored"] = {"texts": decide.texts - before[0], "rescored": decide.rescored - before[1]}
    return report


def headline(report: dict) -> dict[str, float]:
    """The figures the issue and the promotion gate use, flat."""
    o = report["overall"]
    out = {k: float(o[k]) for k in ("exact_accuracy", "dichotomised_accuracy", "three_level_accuracy",
                                    "emergency_recall", "under_triage_rate", "over_triage_rate")}
    out["n"] = float(o["n"])
    if report["traps"]["n"]:
        out["trap_emergency_rate"] = report["traps"]["raised_to_emergency"] / report["traps"]["n"]
    return out
