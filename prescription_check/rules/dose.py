"""Dose range: adult max single/daily dose, pediatric mg/kg limits, and frequency rules (methotrexate weekly)."""

from __future__ import annotations

from prescription_check.rules.context import Ctx
from prescription_check.schemas import Finding

_ROUTE_ALIASES = {"oral": "oral", "sublingual": "oral", "iv": "iv", "im": "im", "sc": "sc", "rectal": "rectal",
                  "inhaled": "inhaled", "topical": "topical", "transdermal": "topical"}


def _rows(ctx: Ctx, ing: str, route: str | None, population: str) -> list[dict]:
    """Limit rows for the route (route not written: oral), else the route-independent ('any') rows.  For a
    child the adult rows also apply as an upper bound (a child's dose never exceeds the adult maximum)."""
    want = _ROUTE_ALIASES.get(route or "oral", route or "oral")
    out: list[dict] = []
    for pop in (("pediatric", "adult") if population == "pediatric" else ("adult",)):
        rows = [r for r in ctx.kb.rows_for("dose_limits", ing) if r["population"] == pop]
        exact = [r for r in rows if r["route"] == want]
        out.extend(exact or [r for r in rows if r["route"] == "any"])
    return out


def _fmt(x: float) -> str:
    return f"{x:g}"


def run(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    age = ctx.patient.age_years
    weight = ctx.patient.weight_kg
    population = "pediatric" if age is not None and age < 18 else "adult"
    for it in ctx.items:
        for ing in it.ingredients:
            rows = _rows(ctx, ing, it.route, population)
            if not rows:
                continue
            single = it.ingredient_dose_mg.get(ing)
            daily = it.ingredient_daily_mg.get(ing)
            per_day = it.frequency_per_day
            for r in rows:
                base_ev = {"ingredient": ing, "written": it.written, "route": r["route"], "population": r["population"],
                           "dose": it.dose, "unit": it.unit, "dose_mg": single, "frequency": it.frequency,
                           "frequency_per_day": per_day, "daily_mg": daily, "row": r["_row"]}
                rule = r.get("frequency_rule") or ""
                if rule == "weekly" and per_day is not None and per_day > 1 / 7 + 1e-9:
                    out.append(Finding(
                        rule_id="DOSE-FREQ-WEEKLY", category="dose", severity="contraindicated", drugs=[ing],
                        message=f"{ing} is dosed once weekly for this use ({r['indication_note'] or 'label'}), but "
                                f"is prescribed {it.frequency!r} (~{per_day:.2g}x/day). Daily dosing of weekly "
                                f"{ing} has caused fatal toxicity.",
                        evidence=base_ev, source=r["source"],
                        action="Do not dispense; confirm the weekly schedule with the prescriber."))
                elif rule == "once_daily" and per_day is not None and per_day > 1 + 1e-9:
                    out.append(Finding(
                        rule_id="DOSE-FREQ-ONCE-DAILY", category="dose", severity="major", drugs=[ing],
                        message=f"{ing} is dosed once daily, but is prescribed {it.frequency!r}.",
                        evidence=base_ev, source=r["source"], action="Confirm the frequency with the prescriber."))
                if single is not None and r["max_single_mg"] is not None and single > r["max_single_mg"] * 1.0001:
                    out.append(Finding(
                        rule_id="DOSE-MAX-SINGLE", category="dose", severity="major", drugs=[ing],
                        message=f"Single dose of {ing} {_fmt(single)} mg exceeds the {r['population']} maximum of "
                                f"{_fmt(r['max_single_mg'])} mg ({r['route']}).",
                        evidence={**base_ev, "max_single_mg": r["max_single_mg"]}, source=r["source"],
                        action=f"Reduce the dose to at most {_fmt(r['max_single_mg'])} mg or confirm with the prescriber."))
                if daily is not None and r["max_daily_mg"] is not None and daily > r["max_daily_mg"] * 1.0001:
                    out.append(Finding(
                        rule_id="DOSE-MAX-DAILY", category="dose", severity="major", drugs=[ing],
                        message=f"Daily dose of {ing} {_fmt(daily)} mg ({_fmt(single or 0)} mg x {per_day:.3g}/day) "
                                f"exceeds the {r['population']} maximum of {_fmt(r['max_daily_mg'])} mg/day.",
                        evidence={**base_ev, "max_daily_mg": r["max_daily_mg"]}, source=r["source"],
                        action=f"Reduce to at most {_fmt(r['max_daily_mg'])} mg/day or confirm with the prescriber."))
                if r["max_single_mg_per_kg"] is not None or r["max_daily_mg_per_kg"] is not None:
                    if weight is None:
                        if population == "pediatric" and single is not None:
                            out.append(Finding(
                                rule_id="DOSE-WEIGHT-MISSING", category="dose", severity="minor", drugs=[ing],
                                message=f"{ing} has a mg/kg limit for children but no weight was given.",
                                evidence=base_ev, source=r["source"], action="Record the child's weight and re-check."))
                        continue
                    if single is not None and r["max_single_mg_per_kg"] is not None:
                        per_kg = single / weight
                        if per_kg > r["max_single_mg_per_kg"] * 1.0001:
                            out.append(Finding(
                                rule_id="DOSE-MAX-SINGLE-PER-KG", category="dose", severity="major", drugs=[ing],
                                message=f"Single dose of {ing} {per_kg:.3g} mg/kg ({_fmt(single)} mg for {weight:g} kg) "
                                        f"exceeds {_fmt(r['max_single_mg_per_kg'])} mg/kg.",
                                evidence={**base_ev, "weight_kg": weight, "mg_per_kg": round(per_kg, 3),
                                          "max_single_mg_per_kg": r["max_single_mg_per_kg"]},
                                source=r["source"],
                                action=f"Reduce to at most {_fmt(r['max_single_mg_per_kg'] * weight)} mg per dose."))
                    if daily is not None and r["max_daily_mg_per_kg"] is not None:
                        per_kg = daily / weight
                        if per_kg > r["max_daily_mg_per_kg"] * 1.0001:
                            out.append(Finding(
                                rule_id="DOSE-MAX-DAILY-PER-KG", category="dose", severity="major", drugs=[ing],
                                message=f"Daily dose of {ing} {per_kg:.3g} mg/kg/day ({_fmt(daily)} mg for {weight:g} kg) "
                                        f"exceeds {_fmt(r['max_daily_mg_per_kg'])} mg/kg/day.",
                                evidence={**base_ev, "weight_kg": weight, "mg_per_kg_day": round(per_kg, 3),
                                          "max_daily_mg_per_kg": r["max_daily_mg_per_kg"]},
                                source=r["source"],
                                action=f"Reduce to at most {_fmt(r['max_daily_mg_per_kg'] * weight)} mg/day."))
    # keep only the most specific finding per (rule, ingredient)
    seen: set = set()
    uniq = []
    for f in out:
        k = (f.rule_id, tuple(f.drugs))
        if k not in seen:
            seen.add(k)
            uniq.append(f)
    return uniq
