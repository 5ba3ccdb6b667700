"""The shadow challenger's live figures (issue 15): ``python -m training compare triage --live``, and the promotion
gate's optional live checks.

From ``shadow_scores`` (the challenger's top center and confidence beside the champion's, per shadow-scored
request) joined with ``triage_outcomes`` (where the patient was actually seen), per (champion, challenger) version
pair: requests scored, top-center agreement, mean confidences, hand-off rates, and - on the requests that have an
outcome - both models' top-1 accuracy and the difference.

The gate (``training/gates/triage.json``, ``"live"``): ``min_samples`` (shadow-scored requests *with an outcome*
the candidate needs; 0 = the live checks are off, the default) and ``max_accuracy_drop`` (the candidate's live
accuracy may be at most this far below the champion's on the same requests).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from serving.db.models import ShadowScore, TriageOutcome
from serving.db.session import session_scope
from serving.settings import Settings


def live_rows(settings: Settings, since: datetime | None = None, until: datetime | None = None,
              challenger: str | None = None) -> list[dict]:
    q = select(ShadowScore, TriageOutcome.actual_center).outerjoin(
        TriageOutcome, TriageOutcome.request_id == ShadowScore.request_id)
    if since is not None:
        q = q.where(ShadowScore.scored_at >= since)
    if until is not None:
        q = q.where(ShadowScore.scored_at < until)
    if challenger is not None:
        q = q.where(ShadowScore.challenger_version == str(challenger))
    with session_scope(settings) as session:
        return [{"champion_version": s.champion_version, "challenger_version": s.challenger_version,
                 "champion_center": s.champion_center, "challenger_center": s.challenger_center,
                 "champion_confidence": s.champion_confidence, "challenger_confidence": s.challenger_confidence,
                 "champion_abstained": s.champion_abstained, "challenger_abstained": s.challenger_abstained,
                 "agree": s.agree, "actual_center": actual}
                for s, actual in session.execute(q)]


def _mean(values) -> float | None:
    values = list(values)
    return None if not values else sum(values) / len(values)


def summarise(rows: list[dict]) -> dict:
    with_outcome = [r for r in rows if r["actual_center"] is not None]
    champion_acc = _mean(r["champion_center"] == r["actual_center"] for r in with_outcome)
    challenger_acc = _mean(r["challenger_center"] == r["actual_center"] for r in with_outcome)
    return {
        "scored": len(rows),
        "agreement": _mean(r["agree"] for r in rows),
        "champion_confidence_mean": _mean(r["champion_confidence"] for r in rows),
        "challenger_confidence_mean": _mean(r["challenger_confidence"] for r in rows),
        "champion_handoff_rate": _mean(r["champion_abstained"] for r in rows),
        "challenger_handoff_rate": _mean(r["challenger_abstained"] for r in rows),
        "with_outcome": len(with_outcome),
        "champion_accuracy": champion_acc,
        "challenger_accuracy": challenger_acc,
        "accuracy_delta": None if champion_acc is None else challenger_acc - champion_acc,
    }


def compare_live(settings: Settings, since: datetime | None = None, until: datetime | None = None,
                 challenger: str | None = None) -> dict:
    """Per (champion, challenger) version pair, and over all pairs per challenger version."""
    rows = live_rows(settings, since, until, challenger)
    pairs: dict[tuple[str, str], list[dict]] = {}
    by_challenger: dict[str, list[dict]] = {}
    for r in rows:
        pairs.setdefault((r["champion_version"], r["challenger_version"]), []).append(r)
        by_challenger.setdefault(r["challenger_version"], []).append(r)
    return {
        "since": None if since is None else since.isoformat(), "until": None if until is None else until.isoformat(),
        "pairs": [{"champion_version": a, "challenger_version": b, **summarise(rs)}
                  for (a, b), rs in sorted(pairs.items())],
        "challengers": {v: summarise(rs) for v, rs in sorted(by_challenger.items())},
    }


def live_gate_checks(gates: dict, version: str, settings: Settings) -> list[tuple[str, bool, str]]:
    """(name, passed, detail) of the gate's live checks for candidate ``version``; [] when they are off."""
    rule = gates.get("live") or {}
    need = int(rule.get("min_samples", 0) or 0)
    if need <= 0:
        return []
    stats = summarise(live_rows(settings, challenger=str(version)))
    n = stats["with_outcome"]
    checks = [("live sample", n >= need,
               f"{n} shadow-scored requests with an outcome for version {version} (minimum {need})")]
    drop = rule.get("max_accuracy_drop")
    if drop is not None and n >= need and n > 0:
        delta = stats["accuracy_delta"]
        checks.append(("live accuracy", delta >= -float(drop),
                       f"live accuracy {stats['challenger_accuracy']:.4f} vs champion {stats['champion_accuracy']:.4f} "
                       f"on the same {n} requests (may be at most {drop} lower)"))
    return checks
