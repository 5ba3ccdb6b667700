"""Allergy: direct ingredient allergy (contraindicated), same allergy class, and cross-sensitive classes."""

from __future__ import annotations

import re

from prescription_check.normalize import clean
from prescription_check.rules.context import Ctx
from prescription_check.schemas import SEVERITY_RANK, Finding


_REACTION = re.compile(r"\(.*?\)|\s-\s.*$|:.*$|\b(allerg(y|ies|ic)|intoleran(ce|t)|sensitivity|hypersensitivity|"
                       r"to|reaction|rash|hives|anaphylaxis|swelling|causes?|caused|with|severe|mild)\b")


def _allergen(text: str) -> str:
    """'Penicillin (rash)' -> 'penicillin'; 'allergic to sulfa drugs' -> 'sulfa drugs'."""
    key = _REACTION.sub(" ", text.lower())
    return clean(key)


def _allergy_profile(ctx: Ctx):
    """(ingredients the patient is allergic to, allergy classes -> written text, unrecognised texts)."""
    kb = ctx.kb
    ings: dict[str, str] = {}
    classes: dict[str, str] = {}
    unknown: list[str] = []
    for text in ctx.patient.allergies:
        key = _allergen(text)
        cid = kb.allergy_alias.get(key)
        if cid is None:
            words = key.split()
            for n in range(len(words) - 1, 0, -1):  # "penicillin rash" -> "penicillin"
                cid = kb.allergy_alias.get(" ".join(words[:n]))
                if cid:
                    break
        if cid:
            classes.setdefault(cid, text)
            continue
        res = kb.normalizer.resolve(key)
        if res.recognised:
            for ing in res.ingredients:
                ings.setdefault(ing, text)
                for c in kb.allergy_classes_of(ing):
                    classes.setdefault(c, text)
        else:
            unknown.append(text)
    return ings, classes, unknown


def run(ctx: Ctx) -> list[Finding]:
    if not ctx.patient.allergies:
        return []
    kb = ctx.kb
    out: list[Finding] = []
    ings, classes, unknown = _allergy_profile(ctx)
    for text in unknown:
        out.append(Finding(rule_id="ALLERGY-UNRECOGNISED", category="allergy", severity="info", drugs=[],
                           message=f"Allergy entry {text!r} was not recognised; check it by hand.",
                           evidence={"allergy": text}, source="name normalisation",
                           action="Confirm the allergen with the patient/prescriber."))
    for it in ctx.items:
        for ing in it.ingredients:
            if ing in ings:
                out.append(Finding(
                    rule_id="ALLERGY-DIRECT", category="allergy", severity="contraindicated", drugs=[ing],
                    message=f"Patient is allergic to {ing} (recorded as {ings[ing]!r}) and it is prescribed "
                            f"({it.written!r}).",
                    evidence={"allergy": ings[ing], "ingredient": ing}, source="Patient allergy record",
                    action="Do not dispense; ask the prescriber for an alternative from another class."))
                continue
            own = kb.allergy_classes_of(ing)
            done = False
            for cid in own:
                if cid in classes:
                    row = kb.allergy_classes[cid]
                    out.append(Finding(
                        rule_id=f"ALLERGY-CLASS-{cid.upper()}", category="allergy", severity="contraindicated",
                        drugs=[ing],
                        message=f"Patient allergy {classes[cid]!r} covers the class {row['name']}, which includes "
                                f"{ing} ({it.written!r}).",
                        evidence={"allergy": classes[cid], "class": cid, "atc": kb.atc_codes(ing)},
                        source=row["source"], action="Do not dispense; choose a drug from an unrelated class."))
                    done = True
                    break
            if done:
                continue
            best = None
            for acls in classes:
                for row in kb.cross.get(acls, ()):
                    if row["cross_class"] in own:
                        if best is None or SEVERITY_RANK[row["severity"]] < SEVERITY_RANK[best[1]["severity"]]:
                            best = (acls, row)
            if best:
                acls, row = best
                cname = kb.allergy_classes.get(row["cross_class"], {}).get("name", row["cross_class"])
                out.append(Finding(
                    rule_id=f"ALLERGY-CROSS-{acls.upper()}-{row['cross_class'].upper()}", category="allergy",
                    severity=row["severity"], drugs=[ing],
                    message=f"Cross-sensitivity: allergy {classes[acls]!r} and {ing} ({cname}). {row['message']}",
                    evidence={"allergy": classes[acls], "allergy_class": acls, "drug_class": row["cross_class"]},
                    source=row["source"],
                    action="Check the nature of the reaction; use only if the benefit outweighs the risk, "
                           "with monitoring, or choose an unrelated class."))
    return out
