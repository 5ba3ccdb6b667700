"""Dose range: adult max single/daily dose, pediatric mg/kg limits, and frequency rules (methotrexate weekly)."""

from __future__ import annotations

from functools import lru_cache

from prescription_check.rules.context import Ctx
from prescription_check.schemas import DAYS_PER_MONTH, DAYS_PER_YEAR, Finding

_ROUTE_ALIASES = {"oral": "oral", "sublingual": "oral", "iv": "iv", "im": "im", "sc": "sc", "rectal": "rectal",
                  "inhaled": "inhaled", "topical": "topical", "transdermal": "topical"}


def _in_band(r: dict, age_days: float | None, weight: float | None) -> bool:
    """A paediatric row applies when the age is inside its band (``age_min_days <= age < age_max_days``; a row
    with a band needs a known age) and the weight is below its ``weight_max_kg`` (heavier children take adult
    dosing, as the labels say; an unknown weight keeps the row, so the missing weight is reported)."""
    lo, hi = r.get("age_min_days"), r.get("age_max_days")
    if lo is not None or hi is not None:
        if age_days is None or (lo is not None and age_days < lo) or (hi is not None and age_days >= hi):
            return False
    wmax = r.get("weight_max_kg")
    return not (wmax is not None and weight is not None and weight >= wmax)


def _rows(ctx: Ctx, ing: str, route: str | None, population: str, age_days: float | None = None,
          weight: float | None = None) -> tuple[list[dict], list[dict]]:
    """(rows that apply, paediatric rows of the route left out by age band).  Limit rows for the route (route
    not written: oral), else the route-independent ('any') rows.  For a child the paediatric rows of the age
    band apply, and the adult rows too, as an upper bound (a child's dose never exceeds the adult maximum)."""
    want = _ROUTE_ALIASES.get(route or "oral", route or "oral")
    out: list[dict] = []
    uncovered: list[dict] = []
    all_rows = ctx.kb.rows_for("dose_limits", ing)
    for pop in (("pediatric", "adult") if population == "pediatric" else ("adult",)):
        rows = [r for r in all_rows if r["population"] == pop]
        chosen = [r for r in rows if r["route"] == want] or [r for r in rows if r["route"] == "any"]
        if pop == "pediatric" and chosen:
            fit = [r for r in chosen if _in_band(r, age_days, weight)]
            if not fit and age_days is not None and age_days < min(r.get("age_min_days") or 0 for r in chosen):
                # younger than every band: not checked per kg (older than every band: adult dosing applies)
                uncovered = chosen
            chosen = fit
        out.extend(chosen)
    return out, uncovered


def _days_text(days: float) -> str:
    years = days / DAYS_PER_YEAR
    if days >= 365 and abs(years - round(years)) * DAYS_PER_YEAR < 1:
        return f"{round(years)} year{'s' if round(years) != 1 else ''}"
    months = days / DAYS_PER_MONTH
    if days >= 28 and days not in (28, 29) and abs(months - round(months)) * DAYS_PER_MONTH < 1:
        return f"{round(months)} month{'s' if round(months) != 1 else ''}"
    return f"{days:g} days"


_GROUPS = (("neonate", 0, 28), ("infant", 28, 365), ("child", 365, 4383), ("adolescent", 4383, 6575))


def band_text(r: dict) -> str:
    """The row's age band in words ('neonate, birth to < 28 days', 'child and adolescent, 2 years to < 18 years,
    under 50 kg'); a row without a band: 'all children'."""
    return _band_words(r.get("age_min_days"), r.get("age_max_days"), r.get("weight_max_kg"))


@lru_cache(maxsize=1024)  # a handful of distinct bands; built once each, not per checked item
def _band_words(lo: float | None, hi: float | None, wmax: float | None) -> str:
    if lo is None and hi is None:
        text = "all children"
    else:
        lo_d, hi_d = lo or 0, hi if hi is not None else 6575
        groups = [g for g, a, b in _GROUPS if lo_d < b and hi_d > a and min(hi_d, b) - max(lo_d, a) > 1]
        start = "birth" if not lo_d else _days_text(lo_d)
        rng = f"{start} to < {_days_text(hi)}" if hi is not None else f"{start} and older"
        text = f"{' and '.join(groups)}, {rng}"
    if wmax is not None:
        text += f", under {wmax:g} kg"
    return text


def _age_text(days: float | None) -> str:
    if days is None:
        return "age unknown"
    if days < 28:
        return f"{days:.0f} days old"
    if days < 2 * DAYS_PER_YEAR:
        return f"{days / DAYS_PER_MONTH:.1f} months old"
    return f"{days / DAYS_PER_YEAR:.1f} years old"


def _who(r: dict) -> str:
    return f"the paediatric maximum for {band_text(r)}" if r["population"] == "pediatric" else \
        f"the {r['population']} maximum"


def _fmt(x: float) -> str:
    return f"{x:g}"


def _cap(rows: list[dict], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return min(vals) if vals else None


def run(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    age = ctx.patient.age_in_years()
    age_days = ctx.patient.age_in_days()
    weight = ctx.patient.weight_kg
    population = "pediatric" if age is not None and age < 18 else "adult"
    for it in ctx.items:
        for ing in it.ingredients:
            rows, uncovered = _rows(ctx, ing, it.route, population, age_days, weight)
            single = it.ingredient_dose_mg.get(ing)
            daily = it.ingredient_daily_mg.get(ing)
            per_day = it.frequency_per_day
            if uncovered and (single is not None or daily is not None):
                out.append(Finding(
                    rule_id="DOSE-PEDIATRIC-AGE-UNCOVERED", category="dose", severity="minor", drugs=[ing],
                    message=f"{ing}: the knowledge base has paediatric dose limits only for "
                            f"{'; '.join(band_text(r) for r in uncovered)}, not for this child "
                            f"({_age_text(age_days)}); the mg/kg dose was not checked, only the adult maximum.",
                    evidence={"ingredient": ing, "written": it.written, "age_days": age_days,
                              "bands": [band_text(r) for r in uncovered], "rows": [r["_row"] for r in uncovered]},
                    source="; ".join(dict.fromkeys(r["source"] for r in uncovered)),
                    action="Check the dose for this age in a paediatric formulary (e.g. BNF for Children)."))
            if not rows:
                continue
            adult = [r for r in rows if r["population"] == "adult"]
            has_ped = len(adult) < len(rows)
            for r in rows:
                ped = r["population"] == "pediatric"
                base_ev = {"ingredient": ing, "written": it.written, "route": r["route"], "population": r["population"],
                           "dose": it.dose, "unit": it.unit, "dose_mg": single, "frequency": it.frequency,
                           "frequency_per_day": per_day, "daily_mg": daily, "row": r["_row"]}
                if ped:
                    base_ev.update(age_band=band_text(r), age_days=None if age_days is None else round(age_days, 1))
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
                        message=f"Single dose of {ing} {_fmt(single)} mg exceeds {_who(r)} of "
                                f"{_fmt(r['max_single_mg'])} mg ({r['route']}).",
                        evidence={**base_ev, "max_single_mg": r["max_single_mg"]}, source=r["source"],
                        action=f"Reduce the dose to at most {_fmt(r['max_single_mg'])} mg or confirm with the prescriber."))
                if daily is not None and r["max_daily_mg"] is not None and daily > r["max_daily_mg"] * 1.0001:
                    out.append(Finding(
                        rule_id="DOSE-MAX-DAILY", category="dose", severity="major", drugs=[ing],
                        message=f"Daily dose of {ing} {_fmt(daily)} mg ({_fmt(single or 0)} mg x {per_day:.3g}/day) "
                                f"exceeds {_who(r)} of {_fmt(r['max_daily_mg'])} mg/day.",
                        evidence={**base_ev, "max_daily_mg": r["max_daily_mg"]}, source=r["source"],
                        action=f"Reduce to at most {_fmt(r['max_daily_mg'])} mg/day or confirm with the prescriber."))
                if r["max_single_mg_per_kg"] is None and r["max_daily_mg_per_kg"] is None:
                    continue
                if not ped and has_ped:
                    continue  # a child in a paediatric band: its per-kg limits, not the adults' (acyclovir IV 20 vs 10)
                if weight is None:
                    if ped and (single is not None or daily is not None):
                        limits = ", ".join(x for x in (
                            r["max_single_mg_per_kg"] is not None and f"{_fmt(r['max_single_mg_per_kg'])} mg/kg per dose",
                            r["max_daily_mg_per_kg"] is not None and f"{_fmt(r['max_daily_mg_per_kg'])} mg/kg/day") if x)
                        out.append(Finding(
                            rule_id="DOSE-WEIGHT-MISSING", category="dose", severity="moderate", drugs=[ing],
                            message=f"The dose of {ing} cannot be checked: no weight was given for this child "
                                    f"({_age_text(age_days)}); the limit for {band_text(r)} is {limits}"
                                    f" ({r['_row']}).",
                            evidence={**base_ev, "max_single_mg_per_kg": r["max_single_mg_per_kg"],
                                      "max_daily_mg_per_kg": r["max_daily_mg_per_kg"]},
                            source=r["source"],
                            action=f"Record the child's weight and re-check; do not dispense until the dose is "
                                   f"confirmed ({limits})."))
                    continue
                for kind, dose_mg, limit_key, cap_key in (("single", single, "max_single_mg_per_kg", "max_single_mg"),
                                                          ("daily", daily, "max_daily_mg_per_kg", "max_daily_mg")):
                    limit = r[limit_key]
                    if dose_mg is None or limit is None:
                        continue
                    per_kg = dose_mg / weight
                    if per_kg <= limit * 1.0001:
                        continue
                    caps = [c for c in (r[cap_key], _cap(adult, cap_key)) if c is not None]
                    allowed = min([limit * weight, *caps])
                    unit = "mg/kg" if kind == "single" else "mg/kg/day"
                    capped = f" (capped at {_fmt(min(caps))} mg)" if caps and min(caps) < limit * weight else ""
                    out.append(Finding(
                        rule_id="DOSE-MAX-SINGLE-PER-KG" if kind == "single" else "DOSE-MAX-DAILY-PER-KG",
                        category="dose", severity="major", drugs=[ing],
                        message=f"{'Single' if kind == 'single' else 'Daily'} dose of {ing} {per_kg:.3g} {unit} "
                                f"({_fmt(dose_mg)} mg for {weight:g} kg) exceeds {_fmt(limit)} {unit}, the limit for "
                                f"{band_text(r) if ped else r['population'] + 's'} ({r['_row']}).",
                        evidence={**base_ev, "weight_kg": weight,
                                  ("mg_per_kg" if kind == "single" else "mg_per_kg_day"): round(per_kg, 3),
                                  limit_key: limit, f"max_{kind}_mg_for_weight": round(allowed, 3)},
                        source=r["source"],
                        action=f"The maximum {'dose' if kind == 'single' else 'daily dose'} for {weight:g} kg is "
                               f"{_fmt(round(allowed, 1))} mg{'' if kind == 'single' else '/day'}{capped}; reduce "
                               f"to at most that or confirm with the prescriber."))
    # keep only the most specific finding per (rule, ingredient)
    seen: set = set()
    uniq = []
    for f in out:
        k = (f.rule_id, tuple(f.drugs))
        if k not in seen:
            seen.add(k)
            uniq.append(f)
    return uniq
