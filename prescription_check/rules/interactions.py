"""Documented drug-drug interactions for every pair among new items and current medications."""

from __future__ import annotations

from prescription_check.rules.context import DEFAULT_ACTIONS, Ctx
from prescription_check.schemas import Finding

DDINTER_SOURCE = ("DDInter 1.0 (Xiong et al., Nucleic Acids Res 2022;50:D1200), level {level}; "
                  "licence CC BY-NC-SA 4.0 (non-commercial)")


def pairs(ctx: Ctx):
    """Unordered ingredient pairs from different drugs, at least one of them new: (a, b, label_a, label_b)."""
    owners = list(ctx.owners())
    seen: set[tuple[str, str]] = set()
    for i in range(len(owners)):
        la, ia, new_a, _ = owners[i]
        for j in range(i + 1, len(owners)):
            lb, ib, new_b, _ = owners[j]
            if not (new_a or new_b):
                continue
            for a in ia:
                for b in ib:
                    if a == b:
                        continue
                    key = (a, b) if a < b else (b, a)
                    if key in seen:
                        continue
                    seen.add(key)
                    yield a, b, la, lb


def _label(ctx: Ctx, ing: str) -> str:
    """'simvastatin (HMG CoA reductase inhibitors)': the ATC level-4 class helps the pharmacist judge the pair."""
    codes = ctx.kb.atc_codes(ing)
    name = ctx.kb.atc_names.get(codes[0][:5]) if codes else None
    return f"{ing} ({name})" if name else ing


def run(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    unknown: list[tuple[str, str, str, str]] = []
    for a, b, la, lb in pairs(ctx):
        hit = ctx.kb.interaction(a, b)
        if hit is None:
            unknown.append((a, b, la, lb))
            continue
        key, entry = hit
        sev = entry["severity"]
        if entry.get("origin") == "ddinter":
            level = entry["ddinter_level"]
            graded = "" if level != "Unknown" else " (DDInter lists it without a severity grade; reported as minor)"
            msg = (f"Documented interaction between {_label(ctx, a)} and {_label(ctx, b)}: DDInter level "
                   f"{level}{graded}.")
            source = DDINTER_SOURCE.format(level=level)
            action = DEFAULT_ACTIONS[sev]
            rule = f"DDI-DDINTER-{level.upper()}"
        else:
            msg = f"{a} + {b}: {entry['message']}"
            source = entry["source"]
            action = entry.get("management") or DEFAULT_ACTIONS[sev]
            rule = f"DDI-{entry['origin'].upper()}"
        out.append(Finding(rule_id=rule, category="interaction", severity=sev, drugs=[a, b], message=msg,
                           evidence={"pair": key, "written": [la, lb], "origin": entry.get("origin"),
                                     **({"row": entry["row"]} if "row" in entry else {})},
                           source=source, action=action))
    ctx.unknown_pairs = unknown  # the engine offers these to the model
    return out
