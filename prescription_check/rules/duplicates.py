"""Duplicate therapy: the same ingredient twice, or two drugs of a recognised duplicate ATC class."""

from __future__ import annotations

from prescription_check.rules.context import Ctx
from prescription_check.schemas import Finding


def run(ctx: Ctx) -> list[Finding]:
    out: list[Finding] = []
    owners = list(ctx.owners())
    flagged: set = set()
    for i in range(len(owners)):
        la, ia, new_a, _ = owners[i]
        for j in range(i + 1, len(owners)):
            lb, ib, new_b, _ = owners[j]
            if not (new_a or new_b):
                continue
            same = [x for x in ia if x in ib]
            for ing in same:
                if ("ing", ing) in flagged:
                    continue
                flagged.add(("ing", ing))
                where = "current medication" if not (new_a and new_b) else "this prescription"
                out.append(Finding(
                    rule_id="DUP-INGREDIENT", category="duplicate", severity="major", drugs=[ing],
                    message=f"{ing} appears twice ({la!r} and {lb!r}, in {where}): risk of cumulative overdose.",
                    evidence={"written": [la, lb], "ingredient": ing},
                    source="Same active ingredient in two products (name normalisation)",
                    action="Remove one of the two products or confirm the combined total dose is intended."))
            for a in ia:
                ca = ctx.kb.duplicate_class(a)
                if ca is None:
                    continue
                for b in ib:
                    if a == b or ctx.kb.duplicate_class(b) != ca:
                        continue
                    key = ("cls", ca, *sorted((a, b)))
                    if key in flagged:
                        continue
                    flagged.add(key)
                    cname = ctx.kb.dup_classes[ca]["name"]
                    out.append(Finding(
                        rule_id=f"DUP-CLASS-{ca.upper()}", category="duplicate", severity="moderate",
                        drugs=sorted((a, b)),
                        message=f"Therapeutic duplication: {a} and {b} are both {cname}.",
                        evidence={"class": ca, "atc": {a: ctx.kb.atc_codes(a), b: ctx.kb.atc_codes(b)},
                                  "written": [la, lb]},
                        source=ctx.kb.duplicate_source,
                        action="Confirm both are intended (e.g. a switch); otherwise stop one."))
    return out
