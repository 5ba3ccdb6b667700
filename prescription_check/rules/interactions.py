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


def _class_finding(ctx: Ctx, a: str, b: str, la: str, lb: str, key: str, entry: dict) -> Finding:
    """A pair matched by a class-level rule: the rule's message and source, and the citation of each drug's
    class membership (WHO ATC code, FDA table or label) in the evidence."""
    rule = ctx.kb.class_rules[entry["rule"]]
    sev = entry["severity"]
    members = {}
    for ing, row in entry.get("members", {}).items():
        m = ctx.kb.class_members.get(row)
        members[ing] = {"class": m["class_id"], "membership_source": m["source"], "row": row} if m else {
            "class": f"drug:{ing}"}
    msg = (f"{a} + {b}: {rule['message']} ({a}: {_member_text(members.get(a))}; {b}: "
           f"{_member_text(members.get(b))}.)")
    if entry.get("ddinter_level"):
        msg += f" DDInter grades this pair {entry['ddinter_level']}, so it is reported at that severity."
    return Finding(rule_id=f"DDI-CLASS-{entry['rule']}", category="interaction", severity=sev, drugs=[a, b],
                   message=msg,
                   evidence={"pair": key, "written": [la, lb], "origin": "class_rule", "rule": entry["rule"],
                             "rule_origin": rule["origin"], "row": rule["row"], "rule_severity": rule["severity"],
                             "members": members, "licence": rule["licence"],
                             **({"ddinter_level": entry["ddinter_level"]} if entry.get("ddinter_level") else {})},
                   source=rule["source"], action=rule.get("management") or DEFAULT_ACTIONS[sev])


def _member_text(member: dict | None) -> str:
    if not member or member["class"].startswith("drug:"):
        return "named in the rule"
    return f"class {member['class']} per {member['membership_source']}"


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
        elif entry.get("origin") == "class_rule":
            out.append(_class_finding(ctx, a, b, la, lb, key, entry))
            continue
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
