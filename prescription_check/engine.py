"""The prescription checker: normalise items, run the rules (and the DDI model where no rule applies), verdict.

    from prescription_check import Checker, Prescription
    checker = Checker.load("var/kb/kb.json")       # the artefact ``python -m training kb`` builds
    result = checker.check(Prescription.model_validate({...}))
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from prescription_check.kb import KBStaleError, KnowledgeBase, stale_reason
from prescription_check.normalize import (
    COUNT_UNITS,
    MASS_UNITS_MG,
    VOLUME_UNITS_ML,
    canonical_unit,
    frequency_per_day,
)
from prescription_check.policy import Policy
from prescription_check.rules import ALL as RULES
from prescription_check.rules.context import Ctx
from prescription_check.schemas import (
    SEVERITY_RANK,
    CheckResult,
    Finding,
    NormalizedItem,
    Prescription,
    PrescriptionItem,
)
from prescription_check.sig_parser import ROUTES, parse_sig

log = logging.getLogger("prescription_check.engine")


def severity_rank(sev: str) -> int:
    """0 = contraindicated (most severe) ... 4 = info."""
    return SEVERITY_RANK[sev]


_RATIO = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*/\s*(\d+(?:\.\d+)?)(?:\s*/\s*(\d+(?:\.\d+)?))?(?![\d.])")
_MASS = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*(mg|mcg|g)\b", re.I)


def _strengths_in_name(written: str, ings: list[str]) -> dict[str, float]:
    """Per-unit strengths written in the product name: 'Norco 5/325' -> {hydrocodone: 5, acetaminophen: 325}
    (in the order the product lists its ingredients); 'lisinopril 10 mg' -> {lisinopril: 10}."""
    m = _RATIO.search(written)
    if m and "ml" not in written[m.end():m.end() + 4].lower():
        nums = [float(x) for x in m.groups() if x]
        if len(nums) == len(ings):
            return dict(zip(ings, nums))
        return {}
    masses = _MASS.findall(written)
    if len(ings) == 1 and len(masses) == 1:
        value, unit = masses[0]
        return {ings[0]: float(value) * MASS_UNITS_MG[unit.lower()]}
    return {}


class Checker:
    def __init__(self, kb: KnowledgeBase, policy: Policy | None = None, ddi_predictor=None,
                 model_status: str | None = None):
        self.kb = kb
        self.kb_version = kb.version
        self.policy = policy or Policy()
        self.ddi = ddi_predictor
        self.model_version = getattr(ddi_predictor, "version", None) if ddi_predictor is not None else None
        self.model_status = model_status or ("ok" if ddi_predictor is not None else "rules-only: no DDI model given")

    severity_rank = staticmethod(severity_rank)

    # ------------------------------------------------------------------------------------ loading
    @classmethod
    def load(cls, kb_path: str | Path, policy: Policy | None = None, ddi_predictor=None,
             model_status: str | None = None, curated_dir: str | Path | None = None,
             warm: bool = True) -> "Checker":
        """Load the KB artefact at ``kb_path`` (built offline by ``python -m training kb``).

        Raises :class:`KBError` when it is missing or unreadable, and :class:`KBStaleError` when
        ``curated_dir`` is given and its curated tables differ from the ones the artefact was built from.
        ``ddi_predictor`` is a loaded :class:`prescription_check.ddi_model.DDIPredictor` or None
        (rules only; ``model_status`` says why)."""
        kb = KnowledgeBase.load(Path(kb_path))
        if curated_dir is not None:
            stale = stale_reason(kb.raw.get("sources", {}), Path(curated_dir))
            if stale:
                raise KBStaleError(f"KB artefact {kb_path} ({kb.version}) is stale: {stale}; "
                                   "rebuild it: python -m training kb")
        checker = cls(kb, policy, ddi_predictor, model_status)
        if warm:
            checker.warm()
        return checker

    def warm(self) -> None:
        """Build the lazy structures (fuzzy index, spaCy pipeline) now rather than on the first request."""
        _ = self.kb.normalizer.fuzzy
        parse_sig("amoxicillin 500 mg po tid x 7 days")

    # ---------------------------------------------------------------------------------- normalise
    def _normalize_item(self, index: int, item: PrescriptionItem, findings: list[Finding]) -> NormalizedItem:
        from_sig = False
        sig_failed = False
        if item.sig:
            parsed = parse_sig(item.sig)
            if not parsed.ok:
                sig_failed = not item.drug
                findings.append(Finding(
                    rule_id="SIG-UNPARSED", category="unparsed_sig", severity="moderate",
                    drugs=[item.drug] if item.drug else [],
                    message=f"Sig line {item.sig!r} could not be fully read: {'; '.join(parsed.problems)}.",
                    evidence={"sig": item.sig, "problems": parsed.problems, "spans": parsed.spans},
                    source="sig parser", action="Ask the prescriber for a complete, unambiguous sig."))
            if parsed.item is not None and item.drug and parsed.item.drug:
                a = self.kb.normalizer.resolve(item.drug).ingredients
                b = self.kb.normalizer.resolve(parsed.item.drug).ingredients
                if a and b and set(a) != set(b):
                    findings.append(Finding(
                        rule_id="SIG-DRUG-MISMATCH", category="unparsed_sig", severity="moderate", drugs=a + b,
                        message=f"The drug field {item.drug!r} and the sig line {item.sig!r} name different drugs.",
                        evidence={"drug": item.drug, "sig": item.sig, "drug_ingredients": a, "sig_ingredients": b},
                        source="sig parser", action="Ask the prescriber which drug is meant."))
            if parsed.item is not None:
                p = parsed.item
                item = PrescriptionItem.model_construct(
                    drug=item.drug or p.drug, dose=item.dose if item.dose is not None else p.dose,
                    unit=item.unit or p.unit, strength_mg_per_ml=item.strength_mg_per_ml or p.strength_mg_per_ml,
                    route=item.route or p.route, frequency=item.frequency or p.frequency,
                    duration_days=item.duration_days or p.duration_days, prn=item.prn or p.prn, sig=item.sig)
                from_sig = True
        written = item.drug
        route = None
        if item.route:
            r = item.route.strip().lower().replace(".", "")
            route = ROUTES.get(r) or ("intramuscular" == r and "im") or r
        res = self.kb.normalizer.resolve(written) if written else None
        ings = res.ingredients if res else []
        atc = [c for i in ings for c in self.kb.atc_codes(i)]
        unit = canonical_unit(item.unit)
        per_day = frequency_per_day(item.frequency)
        strengths = dict(res.strengths_mg) if res else {}
        if written and ings and not strengths:
            strengths = _strengths_in_name(written, ings)
        per_ml = item.strength_mg_per_ml or (res.strength_mg_per_ml if res else None)
        ing_dose: dict[str, float] = {}
        raw_unit = (item.unit or "mg").strip().lower().rstrip(".") if item.dose is not None else None
        if item.dose is not None and ings:
            if raw_unit in MASS_UNITS_MG:
                total = item.dose * MASS_UNITS_MG[raw_unit]
                ing_dose[ings[0]] = total
                s0 = strengths.get(ings[0])
                if s0:
                    for ing in ings[1:]:
                        if strengths.get(ing):
                            ing_dose[ing] = total * strengths[ing] / s0
            elif raw_unit in VOLUME_UNITS_ML:
                if per_ml:
                    ing_dose[ings[0]] = item.dose * VOLUME_UNITS_ML[raw_unit] * per_ml
            elif raw_unit in COUNT_UNITS and COUNT_UNITS[raw_unit] in {"tab", "cap", "supp", "sachet"}:
                for ing in ings:
                    if strengths.get(ing):
                        ing_dose[ing] = item.dose * strengths[ing]
        ing_daily = {k: v * per_day for k, v in ing_dose.items()} if per_day is not None else {}
        dose_mg = ing_dose.get(ings[0]) if ings else None
        if res is not None and res.match in {"partial", "fuzzy"}:
            findings.append(Finding(
                rule_id=f"DRUG-{res.match.upper()}-MATCH", category="unrecognised_drug", severity="minor",
                drugs=ings, message=f"{written!r} was {res.note} = {' + '.join(ings)}; check that this is the intended drug"
                                    + (" and that no other ingredient is meant." if res.match == "partial" else "."),
                evidence={"written": written, "ingredients": ings, "match": res.match},
                source="name normalisation", action="Confirm the drug with the prescriber if in doubt."))
        if item.frequency and per_day is None and ings:
            findings.append(Finding(
                rule_id="FREQUENCY-UNPARSED", category="unparsed_sig", severity="minor", drugs=ings,
                message=f"Frequency {item.frequency!r} of {written!r} was not understood, so the daily dose was "
                        f"not checked.",
                evidence={"frequency": item.frequency}, source="frequency parser",
                action="Confirm the dosing frequency with the prescriber."))
        if written and not ings and not sig_failed:
            findings.append(Finding(
                rule_id="DRUG-UNRECOGNISED", category="unrecognised_drug", severity="moderate", drugs=[written],
                message=f"Drug {written!r} was not recognised, so it could not be checked for interactions, "
                        f"allergy, dose or contraindications.",
                evidence={"written": written}, source="name normalisation (drug_ner_synonyms, FDA UNII, WHO ATC)",
                action="Confirm the drug name with the prescriber and check it by hand."))
        return NormalizedItem(
            index=index, written=written, ingredients=ings, atc_codes=atc, match=res.match if res else None,
            dose=item.dose, unit=unit, dose_mg=dose_mg, frequency=item.frequency, frequency_per_day=per_day,
            daily_mg=ing_daily.get(ings[0]) if ings else None, route=route, duration_days=item.duration_days,
            prn=item.prn, strengths_mg=strengths, ingredient_dose_mg=ing_dose, ingredient_daily_mg=ing_daily,
            from_sig=from_sig)

    def _normalize_current(self, index: int, text: str, findings: list[Finding]) -> NormalizedItem:
        res = self.kb.normalizer.resolve(text)
        if not res.recognised:
            findings.append(Finding(
                rule_id="CURRENT-MED-UNRECOGNISED", category="unrecognised_drug", severity="minor", drugs=[text],
                message=f"Current medication {text!r} was not recognised; interactions with it were not checked.",
                evidence={"written": text}, source="name normalisation",
                action="Confirm the patient's current medication list."))
        return NormalizedItem(index=index, written=text, ingredients=res.ingredients,
                              atc_codes=[c for i in res.ingredients for c in self.kb.atc_codes(i)], match=res.match)

    # ------------------------------------------------------------------------------------- check
    def check(self, rx: Prescription) -> CheckResult:
        findings: list[Finding] = []
        items = [self._normalize_item(i, it, findings) for i, it in enumerate(rx.items)]
        current = [self._normalize_current(i, m, findings) for i, m in enumerate(rx.patient.current_medications)]
        ctx = Ctx(self.kb, rx.patient, items, current)
        for rule in RULES:
            findings.extend(rule(ctx))
        status = self.model_status
        if self.ddi is not None:
            status = self._predicted(ctx, findings) or status
        findings.sort(key=lambda f: (SEVERITY_RANK[f.severity], f.predicted, f.category, f.rule_id))
        daily: dict[str, float] = {}
        for it in items:
            for ing, mg in it.ingredient_daily_mg.items():
                daily[ing] = daily.get(ing, 0.0) + mg
        verdict, notes = self.policy.classify(findings, self.kb.atc_codes, daily.get)
        queue = self.policy.tiers.queue
        return CheckResult(verdict=verdict, findings=findings, kb_version=self.kb_version,
                           model_version=self.model_version, model_status=status, items=items,
                           current_medications=current, counselling_notes=notes,
                           tier_policy=f"{queue.name} v{queue.version}")

    def _predicted(self, ctx: Ctx, findings: list[Finding]) -> str | None:
        pairs = [(a, b) for a, b, _, _ in getattr(ctx, "unknown_pairs", [])
                 if self.ddi.knows(a) and self.ddi.knows(b)]
        if not pairs:
            return None
        try:
            probs = self.ddi.predict_pairs(pairs)
        except Exception as exc:  # the model must never take the checker down
            log.exception("DDI model failed")
            return f"rules-only: model error {type(exc).__name__}"
        threshold = getattr(self.ddi, "detector_threshold", None)
        for (a, b), p in zip(pairs, probs or []):
            if not p:
                continue
            graded = {k: v for k, v in p.items() if k in SEVERITY_RANK}
            if not graded:
                continue
            if "interaction" in p and threshold is not None:
                finding = _possible_interaction(a, b, p, graded, threshold, self.model_version)
                if finding is not None:
                    findings.append(finding)
                continue
            sev, prob = max(graded.items(), key=lambda kv: kv[1])
            if sev == "info":
                continue
            findings.append(Finding(
                rule_id="DDI-PREDICTED", category="predicted_interaction", severity=sev, drugs=[a, b],
                # the model grades severity *given* an interaction; it does not detect interactions
                message=f"No documented interaction between {a} and {b} in the knowledge base. If they interact, "
                        f"the model predicts {sev} severity (p={prob:.2f}): predicted by model, not a documented "
                        f"interaction.",
                evidence={"probabilities": {k: round(v, 4) for k, v in p.items()}},
                source=f"ddi-severity model {self.model_version or ''}".strip(),
                action="Check a drug-interaction reference before dispensing.", predicted=True,
                probability=float(prob)))
        return None


# A predicted finding is never graded above this: the detector's calibrated probability says how likely it is that a
# reference lists *an* interaction (precision ~0.8 at the threshold on held-out pairs), and the severity model's
# probabilities are not calibrated on unseen drugs (docs/ddi-model.md), so no prediction supports "major".
MAX_PREDICTED_SEVERITY = "moderate"


def _possible_interaction(a: str, b: str, p: dict, graded: dict, threshold: float,
                          model_version: str | None) -> Finding | None:
    """A "possible interaction" finding when the detector's calibrated probability reaches its threshold, else None.
    Severity: moderate when the severity model gives major + moderate >= 0.5 given an interaction, else minor."""
    p_int = float(p["interaction"])
    if p_int < threshold:
        return None
    top, top_p = max(graded.items(), key=lambda kv: kv[1])
    serious = graded.get("major", 0.0) + graded.get("moderate", 0.0)
    sev = MAX_PREDICTED_SEVERITY if serious >= 0.5 else "minor"
    return Finding(
        rule_id="DDI-PREDICTED", category="predicted_interaction", severity=sev, drugs=[a, b],
        message=f"Possible interaction between {a} and {b} (p={p_int:.2f}): predicted by a model, not documented in "
                f"the knowledge base. If they interact, the model's severity guess is {top} (p={top_p:.2f}); "
                f"reported as {sev} at most because the calibration supports no more.",
        evidence={"interaction_probability": round(p_int, 4), "threshold": round(threshold, 4),
                  "severity_probabilities": {k: round(v, 4) for k, v in graded.items()},
                  "max_predicted_severity": MAX_PREDICTED_SEVERITY},
        source=f"ddi-severity model {model_version or ''} (interaction detector)".strip(),
        action="Check a drug-interaction reference before dispensing.", predicted=True, probability=p_int)
