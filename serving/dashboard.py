"""The pharmacy lead's dashboard: what the alerts cost and whether they earn their place.

``dashboard_data(session, days=30)`` (served as JSON by ``GET /v1/reviews/stats/dashboard`` and drawn by
``/review/dashboard``):

- ``alerts``: findings of every check in the window per day and tier, and per rule and tier, read from the
  ``prescription.check`` audit entries (every check has one; its ``after`` lists rule ids and, since the tiers,
  each finding's tier; older entries count as tier ``unknown``);
- ``overrides``: per rule, decided reviews, how many were approved anyway (override rate) and the approvals'
  reason codes;
- ``time_to_decision``: minutes from check to decision of the reviews decided in the window (median, p90 and a
  histogram);
- ``queue_depth``: pending reviews at the end of each day, and now.

``render_charts(data)`` draws them as inline SVG on the server: no JavaScript library, nothing fetched from a
CDN, and the page's Content-Security-Policy (``default-src 'self'``) needs no exception (presentation
attributes only, no ``style``).
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from html import escape
from statistics import median
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from serving import audit
from serving.db.models import AuditEntryRow, Review, ReviewFinding
from serving.review_queue import REASON_CODES, aware

TIER_ORDER = ("block", "review", "counsel", "info", "unknown")
TIER_COLOURS = {"block": "#8b0000", "review": "#c2410c", "counsel": "#1f5fbf", "info": "#94a3b8",
                "unknown": "#cbd5e1"}
DECISION_BUCKETS = ((15, "< 15 min"), (60, "15-60 min"), (240, "1-4 h"), (1440, "4-24 h"), (None, "> 24 h"))
MAX_DAYS = 366
MAX_CHECKS = 200_000  # audit entries read per request at most (the newest)


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def dashboard_data(session: Session, *, days: int = 30, now: datetime | None = None) -> dict[str, Any]:
    now = (now or datetime.now(UTC)).astimezone(UTC)
    days = max(1, min(int(days), MAX_DAYS))
    start_day = (now - timedelta(days=days - 1)).date()
    start = datetime.combine(start_day, datetime.min.time(), tzinfo=UTC)
    day_keys = [(start_day + timedelta(days=i)).isoformat() for i in range(days)]

    # --- alerts per tier and rule, from the check audit entries ----------------------------------------
    rows = session.execute(
        select(AuditEntryRow.ts, AuditEntryRow.after_json)
        .where(AuditEntryRow.action == "prescription.check", AuditEntryRow.ts >= audit.format_ts(start))
        .order_by(AuditEntryRow.id.desc()).limit(MAX_CHECKS)
    ).all()
    per_day: dict[str, Counter] = {d: Counter() for d in day_keys}
    per_rule: dict[str, Counter] = defaultdict(Counter)
    checks = Counter()
    for ts, after_json in rows:
        after = json.loads(after_json or "{}")
        day = ts[:10]
        rule_ids = after.get("rule_ids") or []
        tiers = after.get("tiers") or [None] * len(rule_ids)
        checks["checks"] += 1
        checks["queued"] += bool(after.get("queued"))
        checks["with_counselling_notes"] += bool(after.get("counselling_notes"))
        for rule, tier in zip(rule_ids, tiers):
            tier = tier if tier in TIER_COLOURS else "unknown"
            if day in per_day:
                per_day[day][tier] += 1
            per_rule[str(rule)][tier] += 1
    rules = sorted(per_rule.items(), key=lambda kv: (-sum(kv[1].values()), kv[0]))
    alerts = {
        "days": [{"day": d, **{t: per_day[d][t] for t in TIER_ORDER}} for d in day_keys],
        "rules": [{"rule_id": r, "total": sum(c.values()), **{t: c[t] for t in TIER_ORDER}} for r, c in rules[:25]],
        "totals": {t: sum(c[t] for c in per_day.values()) for t in TIER_ORDER},
        "checks": checks["checks"], "queued": checks["queued"],
        "with_counselling_notes": checks["with_counselling_notes"],
        "truncated": len(rows) >= MAX_CHECKS,
    }

    # --- override rate per rule, with the approvals' reasons ------------------------------------------------
    decided_in = (Review.status != "pending", Review.decided_at >= start)
    stat_rows = session.execute(
        select(ReviewFinding.rule_id, Review.decision, Review.reason_code, func.count(func.distinct(Review.id)))
        .join(Review, Review.id == ReviewFinding.review_id)
        .where(*decided_in)
        .group_by(ReviewFinding.rule_id, Review.decision, Review.reason_code)
    ).all()
    ov: dict[str, dict[str, Any]] = {}
    for rule, decision, reason, n in stat_rows:
        o = ov.setdefault(rule, {"rule_id": rule, "decided": 0, "overridden": 0, "reasons": Counter()})
        o["decided"] += n
        if decision == "approve":
            o["overridden"] += n
            o["reasons"][reason or "none"] += n
    overrides = []
    for o in sorted(ov.values(), key=lambda o: (-o["decided"], o["rule_id"]))[:20]:
        overrides.append({
            "rule_id": o["rule_id"], "decided": o["decided"], "overridden": o["overridden"],
            "override_rate": round(o["overridden"] / o["decided"], 4) if o["decided"] else None,
            "reasons": [{"reason_code": code, "label": REASON_CODES[code].label if code in REASON_CODES else code,
                         "count": n} for code, n in o["reasons"].most_common()],
        })

    # --- time from check to decision -------------------------------------------------------------------
    decided = session.execute(select(Review.created_at, Review.decided_at).where(*decided_in)).all()
    minutes = [max(0.0, (aware(d) - aware(c)).total_seconds() / 60) for c, d in decided if c and d]
    hist = []
    lower = 0
    for upper, label in DECISION_BUCKETS:
        n = sum(1 for m in minutes if m >= lower and (upper is None or m < upper))
        hist.append({"bucket": label, "count": n})
        lower = upper or lower
    time_to_decision = {"decided": len(minutes), "median_minutes": round(median(minutes), 1) if minutes else None,
                        "p90_minutes": round(_pct(minutes, 0.9), 1) if minutes else None, "histogram": hist}

    # --- queue depth at the end of each day --------------------------------------------------------------
    spans = session.execute(
        select(Review.created_at, Review.decided_at)
        .where(Review.created_at <= now, or_(Review.decided_at.is_(None), Review.decided_at >= start))
    ).all()
    spans = [(aware(c), aware(d) if d else None) for c, d in spans]
    depth = []
    for d in day_keys:
        end = min(now, datetime.fromisoformat(d).replace(tzinfo=UTC) + timedelta(days=1))
        depth.append({"day": d, "pending": sum(1 for c, dd in spans if c <= end and (dd is None or dd > end))})
    pending_now = session.execute(select(func.count(Review.id)).where(Review.status == "pending")).scalar() or 0
    return {"window": {"days": days, "from": start.isoformat(), "to": now.isoformat()}, "alerts": alerts,
            "overrides": overrides, "time_to_decision": time_to_decision,
            "queue_depth": {"now": int(pending_now), "days": depth}}


# --- inline SVG ------------------------------------------------------------------------------------------


def _svg(width: int, height: int, body: list[str], label: str) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="100%" role="img" '
            f'aria-label="{escape(label)}" class="chart">' + "".join(body) + "</svg>")


def _text(x, y, s, anchor="start", size=11, fill="#5d6776", weight="normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}" '
            f'font-weight="{weight}">{escape(str(s))}</text>')


def _legend(tiers, x, y) -> list[str]:
    out = []
    for t in tiers:
        out.append(f'<rect x="{x}" y="{y - 9}" width="10" height="10" fill="{TIER_COLOURS[t]}"/>')
        out.append(_text(x + 14, y, t))
        x += 14 + 7 * len(t) + 18
    return out


def _nice_max(v: float) -> float:
    if v <= 0:
        return 1
    for step in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000, 10_000, 50_000, 100_000):
        if v <= step * 4:
            return step * 4 if v > step * 2 else step * 2 if v > step else step
    return v


def stacked_days(data: dict) -> str:
    days = data["alerts"]["days"]
    tiers = [t for t in TIER_ORDER if any(d[t] for d in days)] or ["review", "counsel"]
    w, h, left, top, bottom = 720, 230, 40, 24, 40
    top_v = _nice_max(max((sum(d[t] for t in tiers) for d in days), default=0))
    bw = (w - left - 10) / max(1, len(days))
    body = _legend(tiers, left, 14)
    for i in range(3):
        v = top_v * i / 2
        y = h - bottom - (h - top - bottom) * i / 2
        body += [f'<line x1="{left}" x2="{w - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e5e7eb"/>',
                 _text(left - 4, y + 4, f"{v:g}", "end")]
    for i, d in enumerate(days):
        y = h - bottom
        for t in tiers:
            hh = (h - top - bottom) * d[t] / top_v
            if hh > 0:
                y -= hh
                body.append(f'<rect x="{left + i * bw + 1:.1f}" y="{y:.1f}" width="{max(1, bw - 2):.1f}" '
                            f'height="{hh:.1f}" fill="{TIER_COLOURS[t]}"><title>{escape(d["day"])} {t}: '
                            f'{d[t]}</title></rect>')
        if len(days) <= 14 or i % max(1, len(days) // 7) == 0:
            body.append(_text(left + i * bw + bw / 2, h - bottom + 14, d["day"][5:], "middle", 10))
    return _svg(w, h, body, "Alerts per day by tier")


def rules_by_tier(data: dict, limit: int = 10) -> str:
    rules = data["alerts"]["rules"][:limit]
    tiers = [t for t in TIER_ORDER if any(r[t] for r in rules)] or ["review"]
    row, left, w = 24, 200, 720
    h = 30 + row * max(1, len(rules))
    top_v = max((r["total"] for r in rules), default=1) or 1
    body = _legend(tiers, left, 14)
    for i, r in enumerate(rules):
        y = 24 + i * row
        body.append(_text(left - 6, y + 14, r["rule_id"][:30], "end", 11, "#1d2430"))
        x = left
        for t in tiers:
            ww = (w - left - 50) * r[t] / top_v
            if ww > 0:
                body.append(f'<rect x="{x:.1f}" y="{y + 3}" width="{ww:.1f}" height="{row - 8}" '
                            f'fill="{TIER_COLOURS[t]}"><title>{escape(r["rule_id"])} {t}: {r[t]}</title></rect>')
                x += ww
        body.append(_text(x + 4, y + 14, r["total"]))
    if not rules:
        body.append(_text(left, 40, "no alerts in this window"))
    return _svg(w, h, body, "Alerts per rule by tier")


def override_rates(data: dict) -> str:
    rows = data["overrides"][:10]
    row, left, w = 34, 200, 720
    h = 20 + row * max(1, len(rows))
    body = []
    for i, o in enumerate(rows):
        y = 10 + i * row
        rate = o["override_rate"] or 0
        body.append(_text(left - 6, y + 13, o["rule_id"][:30], "end", 11, "#1d2430"))
        body.append(f'<rect x="{left}" y="{y + 2}" width="{w - left - 150}" height="14" fill="#eef1f5"/>')
        body.append(f'<rect x="{left}" y="{y + 2}" width="{(w - left - 150) * rate:.1f}" height="14" '
                    f'fill="{"#c2410c" if rate >= 0.5 else "#1f5fbf"}"><title>{escape(o["rule_id"])}: '
                    f'{o["overridden"]} of {o["decided"]} approved anyway</title></rect>')
        body.append(_text(w - 145, y + 13, f"{rate:.0%} of {o['decided']}", "start", 11, "#1d2430", "bold"))
        reasons = ", ".join(f"{r['label']} ({r['count']})" for r in o["reasons"][:2])
        body.append(_text(left, y + 29, reasons or "no approvals", "start", 10))
    if not rows:
        body.append(_text(left, 30, "no decided reviews in this window"))
    return _svg(w, h, body, "Override rate per rule with the reasons given")


def decision_histogram(data: dict) -> str:
    hist = data["time_to_decision"]["histogram"]
    w, h, left, bottom = 360, 200, 30, 36
    top_v = _nice_max(max((b["count"] for b in hist), default=0))
    bw = (w - left - 10) / len(hist)
    body = []
    for i, b in enumerate(hist):
        hh = (h - 20 - bottom) * b["count"] / top_v
        x = left + i * bw
        body.append(f'<rect x="{x + 4:.1f}" y="{h - bottom - hh:.1f}" width="{bw - 8:.1f}" height="{hh:.1f}" '
                    f'fill="#1f5fbf"><title>{escape(b["bucket"])}: {b["count"]}</title></rect>')
        body.append(_text(x + bw / 2, h - bottom - hh - 4, b["count"], "middle", 10, "#1d2430"))
        body.append(_text(x + bw / 2, h - bottom + 14, b["bucket"], "middle", 10))
    return _svg(w, h, body, "Time from check to decision")


def queue_depth(data: dict) -> str:
    days = data["queue_depth"]["days"]
    w, h, left, top, bottom = 360, 200, 30, 16, 36
    top_v = _nice_max(max((d["pending"] for d in days), default=0))
    step = (w - left - 10) / max(1, len(days) - 1)
    pts = [(left + i * step, h - bottom - (h - top - bottom) * d["pending"] / top_v) for i, d in enumerate(days)]
    body = [f'<line x1="{left}" x2="{w - 10}" y1="{h - bottom}" y2="{h - bottom}" stroke="#d9dee6"/>',
            _text(left - 4, top + 4, f"{top_v:g}", "end"), _text(left - 4, h - bottom + 4, "0", "end")]
    if pts:
        body.append('<polyline fill="none" stroke="#c2410c" stroke-width="2" points="'
                    + " ".join(f"{x:.1f},{y:.1f}" for x, y in pts) + '"/>')
        for (x, y), d in zip(pts, days):
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="#c2410c"><title>{escape(d["day"])}: '
                        f'{d["pending"]} pending</title></circle>')
        body.append(_text(left, h - bottom + 14, days[0]["day"][5:], "start", 10))
        body.append(_text(w - 10, h - bottom + 14, days[-1]["day"][5:], "end", 10))
    return _svg(w, h, body, "Pending reviews at the end of each day")


def render_charts(data: dict) -> dict[str, str]:
    return {"alerts_per_day": stacked_days(data), "alerts_per_rule": rules_by_tier(data),
            "override_rates": override_rates(data), "time_to_decision": decision_histogram(data),
            "queue_depth": queue_depth(data)}
