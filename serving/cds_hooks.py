"""CDS Hooks ``order-select`` / ``order-sign`` services over FHIR R4: discovery, cards, feedback.

- :func:`discovery` lists the two services with their prefetch templates.
- :func:`evaluate` reads a hook request (``serving.fhir_mapping``), runs the prescription checker the service
  already answers ``/v1/prescriptions/check`` with (``CheckerService``: one code path) and turns its findings, plus
  everything that could not be checked, into cards (:func:`build_cards`).
- :func:`record_hook` stores every card (uuid -> rule id, category, severity, orders, suggestion ids) with one
  ``cds.hook`` entry in the hash-chained audit log, in one transaction; the answer is sent only after it commits.
- :func:`record_feedback` stores the EHR's ``accepted`` / ``overridden`` outcomes, each with a ``cds.feedback``
  audit entry; ``serving.review_queue.override_stats`` counts them per rule beside the pharmacists' overrides.

Errors are :class:`CdsError` (400 / 401 / 404), answered as an OperationOutcome-like body naming the path
(``serving.errors``).  Specification: https://cds-hooks.hl7.org/ (HL7 CDS Hooks 2.0; card and feedback fields as
published there).  Mapping and card rules: docs/cds-hooks.md.
"""

from __future__ import annotations

import copy
import json
import math
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from prescription_check import Checker
from prescription_check.schemas import CheckResult, Finding, NormalizedItem
from serving import audit
from serving.db.models import CdsCard, CdsFeedback, utcnow
from serving.db.session import Database
from serving.fhir_mapping import UCUM, MappedRequest, MappingError, Unchecked, map_hook
from serving.review_queue import REASON_CODES, sha256_json
from serving.settings import Settings

SPEC_VERSION = "2.0"
OVERRIDE_REASON_SYSTEM = "urn:rxtriage:cds:override-reason"   # codes = the review queue's approve reason codes
CATEGORY_SYSTEM = "urn:rxtriage:cds:finding-category"
SUMMARY_MAX = 139  # the specification: "<140-character summary"
FEEDBACK_MAX_ENTRIES = 100
COMMENT_MAX = 2000


class CdsError(Exception):
    """A CDS Hooks request that is answered with an OperationOutcome: ``status`` 400 / 401 / 403 / 404."""

    def __init__(self, status: int, path: str, message: str, *, code: str = "invalid",
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.path, self.message, self.code, self.headers = status, path, message, code, headers


# --- discovery ----------------------------------------------------------------------------------------------

_PID = "{{context.patientId}}"
PREFETCH = {
    "patient": f"Patient/{_PID}",
    "medications": f"MedicationRequest?patient={_PID}&status=active",
    "allergies": f"AllergyIntolerance?patient={_PID}",
    "conditions": f"Condition?patient={_PID}",
    "weight": f"Observation?patient={_PID}&code=http://loinc.org|29463-7,http://loinc.org|3141-9&_sort=-date&_count=1",
    "renal": f"Observation?patient={_PID}&code=http://loinc.org|33914-3,http://loinc.org|62238-1,"
             "http://loinc.org|98979-8,http://loinc.org|48642-3,http://loinc.org|48643-1,http://loinc.org|50044-7,"
             "http://loinc.org|69405-9,http://loinc.org|2164-2,http://loinc.org|2160-0&_sort=-date&_count=10",
    "pregnancy": f"Observation?patient={_PID}&code=http://loinc.org|82810-3,http://loinc.org|11449-6"
                 "&_sort=-date&_count=1",
}


@dataclass(frozen=True)
class Service:
    id: str
    hook: str
    title: str
    description: str


SERVICES: dict[str, Service] = {s.id: s for s in [
    Service("rxtriage-order-select", "order-select", "rxtriage prescription check (order-select)",
            "Checks the draft MedicationRequests as they are selected: interactions (with each other and the "
            "patient's active medications), duplicate therapy, allergy and cross-sensitivity, dose range, pregnancy, "
            "age, renal and hepatic dosing, condition contraindications. Every rule cites its public source. What "
            "cannot be checked (an unreadable code, an unconvertible unit, missing renal function ...) is an info "
            "card, never a silent pass."),
    Service("rxtriage-order-sign", "order-sign", "rxtriage prescription check (order-sign)",
            "The same checks on the complete orders before signing, with suggestions to remove an order or change a "
            "dose to the limit, and override reasons."),
]}


def discovery() -> dict[str, Any]:
    return {"services": [
        {"hook": s.hook, "title": s.title, "description": s.description, "id": s.id, "prefetch": dict(PREFETCH),
         "usageRequirements": "Send the prefetch keys; a missing key becomes an info card naming the check that "
                              "was not run. The service does not query the FHIR server itself.",
         "version": SPEC_VERSION, "hookVersion": "1.0"}
        for s in SERVICES.values()]}


def service(service_id: str) -> Service:
    found = SERVICES.get(service_id)
    if found is None:
        raise CdsError(404, "id", f"no CDS service {service_id[:80]!r}; see GET /cds-services", code="not-found")
    return found


# --- reading the request -------------------------------------------------------------------------------------


def parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except UnicodeDecodeError:
        raise CdsError(400, "body", "the request body is not UTF-8 text") from None
    except ValueError as exc:
        raise CdsError(400, "body", f"the request body is not valid JSON: {exc}") from None


def _printable(value: Any, path: str, limit: int, *, required: bool = True) -> str | None:
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value.strip() or len(value) > limit or not value.isprintable():
        raise CdsError(400, path, f"must be a non-empty printable string of at most {limit} characters")
    return value


@dataclass
class HookRequest:
    hook: str
    hook_instance: str
    fhir_server: str | None
    context: dict[str, Any]
    prefetch: dict[str, Any] | None


def parse_hook_request(body: Any, svc: Service) -> HookRequest:
    if not isinstance(body, dict):
        raise CdsError(400, "body", "a JSON object is required")
    hook = _printable(body.get("hook"), "hook", 100)
    if hook != svc.hook:
        raise CdsError(400, "hook", f"service {svc.id} answers the {svc.hook!r} hook, not {hook!r}")
    instance = _printable(body.get("hookInstance"), "hookInstance", 200)
    fhir_server = _printable(body.get("fhirServer"), "fhirServer", 2000, required=False)
    if body.get("fhirAuthorization") is not None and not isinstance(body["fhirAuthorization"], dict):
        raise CdsError(400, "fhirAuthorization", "must be an object")
    context = body.get("context")
    if not isinstance(context, dict):
        raise CdsError(400, "context", "required: an object with the hook's context")
    prefetch = body.get("prefetch")
    if prefetch is not None and not isinstance(prefetch, dict):
        raise CdsError(400, "prefetch", "must be an object of prefetch key -> FHIR resource or Bundle")
    return HookRequest(hook, instance, fhir_server, context, prefetch)


# --- cards ---------------------------------------------------------------------------------------------------

INDICATOR = {"contraindicated": "critical", "major": "warning", "moderate": "warning", "minor": "info",
             "info": "info"}
CATEGORY_LABEL = {
    "interaction": "Interaction", "predicted_interaction": "Possible interaction (model)",
    "duplicate": "Duplicate therapy", "allergy": "Allergy", "dose": "Dose", "pregnancy": "Pregnancy",
    "breastfeeding": "Breastfeeding", "age": "Age", "renal": "Renal dosing", "hepatic": "Hepatic dosing",
    "contraindication": "Contraindication", "unrecognised_drug": "Drug not recognised",
    "unparsed_sig": "Dosing not read", "not_checked": "Not checked",
}
_URL = re.compile(r"https?://[^\s;,<>\"')]+")


def override_reasons() -> list[dict[str, str]]:
    return [{"system": OVERRIDE_REASON_SYSTEM, "code": r.code, "display": r.label}
            for r in REASON_CODES.values() if "approve" in r.decisions]


def summarise(label: str, message: str) -> str:
    text = re.sub(r"\s+", " ", f"{label}: {message}").strip()
    if len(text) <= SUMMARY_MAX:
        return text
    cut = text[:SUMMARY_MAX - 1]
    cut = cut[:cut.rfind(" ")] if " " in cut[SUMMARY_MAX // 2:] else cut
    return cut.rstrip(" ,;:.") + "…"


_MD_ESCAPES = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "\\": "\\\\", "`": "\\`", "*": "\\*",
                             "_": "\\_", "[": "\\[", "]": "\\]", "|": "\\|"})


def _md(text: Any) -> str:
    """Plain text into GitHub-flavoured markdown: no raw HTML, no accidental emphasis or links."""
    return str(text).translate(_MD_ESCAPES)


def _evidence_lines(evidence: dict) -> list[str]:
    lines = []
    for key, value in evidence.items():
        if key == "row" or value in (None, "", [], {}):
            continue
        if isinstance(value, float):
            value = f"{value:g}"
        elif isinstance(value, (dict, list)):
            value = json.dumps(value, ensure_ascii=False)[:300]
        lines.append(f"- {_md(key.replace('_', ' '))}: {_md(value)}")
    return lines


def _source(source_text: str, settings: Settings, category: str) -> tuple[dict[str, Any], str | None]:
    m = _URL.search(source_text or "")
    url = m.group(0).rstrip(".") if m else settings.cds_source_url
    label = (_URL.sub("", source_text or "").strip(" ,;:-") or "rxtriage prescription check")
    label = re.sub(r"\s+", " ", label)[:120]
    src: dict[str, Any] = {"label": label,
                           "topic": {"system": CATEGORY_SYSTEM, "code": category,
                                     "display": CATEGORY_LABEL.get(category, category)}}
    if url:
        src["url"] = url
    return src, url


@dataclass
class CardRecord:
    card: dict[str, Any]
    rule_id: str
    category: str
    severity: str
    drugs: list[str]
    order_ids: list[str]
    suggestion_ids: list[str] = field(default_factory=list)


def _orders_for(finding: Finding, mapped: MappedRequest, items: list[NormalizedItem]) -> list[str]:
    wanted = {d.lower() for d in finding.drugs}
    out = []
    for order in mapped.orders:
        if order.item_index is None or order.item_index >= len(items):
            continue
        it = items[order.item_index]
        names = {i.lower() for i in it.ingredients} | {(it.written or "").lower(), (order.name or "").lower()}
        if wanted & names:
            out.append(order.resource_id)
    return out


def _limit_per_dose(finding: Finding, item: NormalizedItem) -> tuple[float, str] | None:
    """(mg per dose, why) that brings the order to the limit the finding cites, when the fix is that clear."""
    ev = finding.evidence or {}
    if finding.category not in ("dose", "renal", "hepatic") or len(item.ingredients) != 1:
        return None
    if ev.get("max_single_mg") is not None:
        return float(ev["max_single_mg"]), f"the maximum single dose ({ev['max_single_mg']:g} mg)"
    per_day = item.frequency_per_day
    if ev.get("max_daily_mg") is not None and per_day:
        return float(ev["max_daily_mg"]) / per_day, f"the maximum daily dose ({ev['max_daily_mg']:g} mg/day)"
    weight = ev.get("weight_kg")
    if weight and ev.get("max_single_mg_per_kg") is not None:
        return float(ev["max_single_mg_per_kg"]) * weight, f"{ev['max_single_mg_per_kg']:g} mg/kg per dose"
    if weight and ev.get("max_daily_mg_per_kg") is not None and per_day:
        return float(ev["max_daily_mg_per_kg"]) * weight / per_day, f"{ev['max_daily_mg_per_kg']:g} mg/kg/day"
    return None


def _dose_suggestion(finding: Finding, mapped: MappedRequest, items: list[NormalizedItem]) -> dict | None:
    for order in mapped.orders:
        if order.item_index is None or not order.mass_dose or order.item_index >= len(items):
            continue
        item = items[order.item_index]
        if finding.drugs[:1] != item.ingredients[:1] or item.dose_mg is None:
            continue
        limit = _limit_per_dose(finding, item)
        if limit is None:
            return None
        mg, why = limit
        mg = math.floor(mg * 100) / 100  # never round up past the limit
        if not (0 < mg < item.dose_mg):
            return None
        resource = copy.deepcopy(order.raw)
        dosage = resource["dosageInstruction"][0]
        rates = [r for r in dosage.get("doseAndRate") or [] if isinstance(r, dict)]
        first = dict(rates[0]) if rates else {}
        first.pop("doseRange", None)
        first["doseQuantity"] = {"value": mg, "unit": "mg", "system": UCUM, "code": "mg"}
        dosage["doseAndRate"] = [first] + rates[1:]
        dosage.pop("text", None)  # it states the old dose
        ing = item.ingredients[0]
        return {"label": f"Change {ing} to {mg:g} mg per dose ({why})"[:200], "uuid": str(uuid.uuid4()),
                "isRecommended": True,
                "actions": [{"type": "update", "description": f"Set the dose of {ing} in {order.resource_id} to "
                                                              f"{mg:g} mg per dose",
                             "resource": resource}]}
    return None


def _finding_card(finding: Finding, mapped: MappedRequest, result: CheckResult, settings: Settings) -> CardRecord:
    label = CATEGORY_LABEL.get(finding.category, finding.category)
    src, url = _source(finding.source, settings, finding.category)
    order_ids = _orders_for(finding, mapped, result.items)
    lines = [f"**{_md(finding.severity)}** {_md(label.lower())} finding, rule `{finding.rule_id}`", "",
             _md(finding.message)]
    if finding.predicted:
        lines += ["", f"_Predicted by the ddi-severity model (probability {finding.probability or 0:.2f}), not a "
                      "documented interaction._"]
    if finding.action:
        lines += ["", f"**Action:** {_md(finding.action)}"]
    ev = _evidence_lines(finding.evidence or {})
    if ev:
        lines += ["", "**Evidence**", *ev]
    if order_ids:
        lines += ["", f"**Orders:** {', '.join(_md(o) for o in order_ids)}"]
    lines += ["", f"**Source:** {_md(finding.source or 'rxtriage')}", "",
              f"_Knowledge base {_md(result.kb_version)}; model: {_md(result.model_status)}._"]
    card: dict[str, Any] = {
        "uuid": str(uuid.uuid4()), "summary": summarise(label, finding.message),
        "indicator": INDICATOR[finding.severity], "detail": "\n".join(lines), "source": src,
    }
    if url:
        card["links"] = [{"label": f"Source: {src['label']}"[:120], "url": url, "type": "absolute"}]
    suggestions = []
    if finding.severity in ("contraindicated", "major"):
        dose = _dose_suggestion(finding, mapped, result.items) if finding.category in ("dose", "renal", "hepatic") \
            else None
        if dose:
            suggestions.append(dose)
        for oid in order_ids:
            order = next(o for o in mapped.orders if o.resource_id == oid)
            if not order.raw.get("id"):
                continue  # an order without an id cannot be named in a delete action
            name = order.name or oid
            suggestions.append({
                "label": f"Remove the {name} order"[:200], "uuid": str(uuid.uuid4()),
                "isRecommended": not dose and finding.severity == "contraindicated" and len(order_ids) == 1,
                "actions": [{"type": "delete", "description": f"Remove the draft order for {name}",
                             "resourceId": oid}]})
    if suggestions:
        card["suggestions"] = suggestions
        card["selectionBehavior"] = "at-most-one"
    if finding.severity != "info":
        card["overrideReasons"] = override_reasons()
    return CardRecord(card, finding.rule_id, finding.category, finding.severity, list(finding.drugs), order_ids,
                      [s["uuid"] for s in suggestions])


def _unchecked_card(note: Unchecked, settings: Settings) -> CardRecord:
    src, url = _source("rxtriage FHIR mapping (docs/cds-hooks.md)", settings, "not_checked")
    detail = "\n".join([f"**Not checked**, rule `{note.rule_id}`", "", note.detail, "",
                        f"**Where:** `{note.path}`"] + ([f"**Orders:** {', '.join(note.order_ids)}"]
                                                       if note.order_ids else []))
    card = {"uuid": str(uuid.uuid4()), "summary": summarise("Not checked", note.summary), "indicator": "info",
            "detail": detail, "source": src}
    if url:
        card["links"] = [{"label": "rxtriage", "url": url, "type": "absolute"}]
    return CardRecord(card, note.rule_id, "not_checked", "info", note.drugs, note.order_ids)


def build_cards(mapped: MappedRequest, result: CheckResult | None, settings: Settings) -> list[CardRecord]:
    out: list[CardRecord] = []
    if result is not None:
        seen: set = set()
        for f in result.findings:  # most severe first (the checker sorts them)
            key = (f.rule_id, tuple(f.drugs))
            if key in seen:
                continue  # the same rule on the same drugs, reached through the code and the text of a condition
            seen.add(key)
            out.append(_finding_card(f, mapped, result, settings))
    out.extend(_unchecked_card(n, settings) for n in mapped.unchecked)
    return out


@dataclass
class Evaluation:
    cards: list[CardRecord]
    verdict: str | None
    kb_version: str
    model_version: str | None
    prescription_sha256: str | None
    orders: int


def evaluate(svc: Service, request: HookRequest, checker: Checker, settings: Settings) -> Evaluation:
    """Map, check, build the cards (CPU only: run it off the event loop)."""
    try:
        mapped = map_hook(request.context, request.prefetch, checker.kb, hook=svc.hook)
    except MappingError as exc:
        raise CdsError(400, exc.path, exc.message) from None
    result = checker.check(mapped.prescription) if mapped.prescription is not None else None
    cards = build_cards(mapped, result, settings)
    sha = sha256_json(mapped.prescription.model_dump(mode="json")) if mapped.prescription is not None else None
    return Evaluation(cards, result.verdict if result else None, checker.kb_version,
                      result.model_version if result else checker.model_version, sha, len(mapped.orders))


# --- storing -------------------------------------------------------------------------------------------------

_INSERT_CARD = CdsCard.__table__.insert()


def record_hook(db: Database, *, svc: Service, request: HookRequest, actor: str, evaluation: Evaluation) -> int:
    """One transaction: a ``cds.hook`` audit entry (no patient data) and every card's row."""
    cards = evaluation.cards
    with db.session() as session:
        audit_id = audit.record(
            session, actor=actor[:200], action="cds.hook", subject=f"cds-hook:{request.hook_instance}"[:300],
            after={"service": svc.id, "hook": svc.hook, "verdict": evaluation.verdict, "orders": evaluation.orders,
                   "rule_ids": [c.rule_id for c in cards], "cards": [c.card["uuid"] for c in cards],
                   "kb_version": evaluation.kb_version, "model_version": evaluation.model_version,
                   "prescription_sha256": evaluation.prescription_sha256,
                   "fhir_server": request.fhir_server})
        if cards:
            now = utcnow()
            session.execute(_INSERT_CARD, [
                {"uuid": c.card["uuid"], "created_at": now, "service_id": svc.id,
                 "hook_instance": request.hook_instance, "actor": actor[:300], "rule_id": c.rule_id[:200],
                 "category": c.category[:40], "severity": c.severity, "indicator": c.card["indicator"],
                 "drugs": c.drugs, "order_ids": c.order_ids, "suggestion_ids": c.suggestion_ids,
                 "audit_id": audit_id}
                for c in cards])
        return audit_id


# --- feedback ------------------------------------------------------------------------------------------------


@dataclass
class FeedbackEntry:
    card: str
    outcome: str
    outcome_timestamp: str
    accepted: list[str]
    reason_system: str | None
    reason_code: str | None
    comment: str | None
    path: str


def parse_feedback(body: Any) -> list[FeedbackEntry]:
    if not isinstance(body, dict):
        raise CdsError(400, "body", "a JSON object {\"feedback\": [...]} is required")
    items = body.get("feedback")
    if not isinstance(items, list) or not items:
        raise CdsError(400, "feedback", "required: a non-empty array")
    if len(items) > FEEDBACK_MAX_ENTRIES:
        raise CdsError(400, "feedback", f"at most {FEEDBACK_MAX_ENTRIES} entries per request")
    out = []
    for i, fb in enumerate(items):
        p = f"feedback[{i}]"
        if not isinstance(fb, dict):
            raise CdsError(400, p, "must be an object")
        card = _printable(fb.get("card"), f"{p}.card", 36)
        outcome = fb.get("outcome")
        if outcome not in ("accepted", "overridden"):
            raise CdsError(400, f"{p}.outcome", "must be 'accepted' or 'overridden'")
        ts = _printable(fb.get("outcomeTimestamp"), f"{p}.outcomeTimestamp", 40)
        try:
            moment = datetime.fromisoformat(ts)
        except ValueError:
            raise CdsError(400, f"{p}.outcomeTimestamp", "must be an ISO 8601 / RFC 3339 date-time, e.g. "
                           "2026-12-07T10:05:31Z") from None
        if moment.tzinfo is None:
            raise CdsError(400, f"{p}.outcomeTimestamp", "must carry a time zone (UTC: 'Z')")
        accepted: list[str] = []
        if outcome == "accepted":
            sugg = fb.get("acceptedSuggestions")
            if not isinstance(sugg, list) or not sugg:
                raise CdsError(400, f"{p}.acceptedSuggestions", "required for an accepted outcome: [{\"id\": ...}]")
            for j, s in enumerate(sugg):
                if not isinstance(s, dict):
                    raise CdsError(400, f"{p}.acceptedSuggestions[{j}]", "must be an object {\"id\": ...}")
                accepted.append(_printable(s.get("id"), f"{p}.acceptedSuggestions[{j}].id", 36))
        system = code = comment = None
        reason = fb.get("overrideReason")
        if reason is not None:
            if outcome != "overridden":
                raise CdsError(400, f"{p}.overrideReason", "only an overridden outcome carries an override reason")
            if not isinstance(reason, dict):
                raise CdsError(400, f"{p}.overrideReason", "must be an object {reason, userComment}")
            coding = reason.get("reason")
            if coding is not None:
                if not isinstance(coding, dict):
                    raise CdsError(400, f"{p}.overrideReason.reason", "must be a Coding {system, code, display}")
                code = _printable(coding.get("code"), f"{p}.overrideReason.reason.code", 200)
                system = _printable(coding.get("system"), f"{p}.overrideReason.reason.system", 300, required=False)
                if system == OVERRIDE_REASON_SYSTEM and code not in {r["code"] for r in override_reasons()}:
                    raise CdsError(400, f"{p}.overrideReason.reason.code",
                                   f"unknown override reason {code!r}; the card lists the allowed ones")
            comment = reason.get("userComment")
            if comment is not None and (not isinstance(comment, str) or len(comment) > COMMENT_MAX
                                        or "\x00" in comment):
                raise CdsError(400, f"{p}.overrideReason.userComment",
                               f"must be text of at most {COMMENT_MAX} characters")
            comment = (comment or "").strip() or None
        out.append(FeedbackEntry(card, outcome, ts, accepted, system, code, comment, p))
    return out


def record_feedback(db: Database, *, svc: Service, actor: str, entries: list[FeedbackEntry]) -> dict[str, Any]:
    """Every new entry with its ``cds.feedback`` audit entry, in one transaction; an entry already stored (same
    card, outcome and outcomeTimestamp) is counted as a duplicate and not stored twice."""
    try:
        return _record_feedback(db, svc, actor, entries)
    except IntegrityError:  # a concurrent request stored the same entry first: the retry sees it as a duplicate
        return _record_feedback(db, svc, actor, entries)


def _record_feedback(db: Database, svc: Service, actor: str, entries: list[FeedbackEntry]) -> dict[str, Any]:
    with db.session() as session:
        uuids = sorted({e.card for e in entries})
        cards = {c.uuid: c for c in session.scalars(select(CdsCard).where(CdsCard.uuid.in_(uuids)))}
        for e in entries:
            card = cards.get(e.card)
            if card is None:
                raise CdsError(404, f"{e.path}.card", f"no card {e.card!r} was answered by this service",
                               code="not-found")
            if card.service_id != svc.id:
                raise CdsError(400, f"{e.path}.card", f"card {e.card!r} was answered by {card.service_id}, "
                               f"send its feedback to /cds-services/{card.service_id}/feedback")
            for j, sid in enumerate(e.accepted):
                if sid not in (card.suggestion_ids or []):
                    raise CdsError(400, f"{e.path}.acceptedSuggestions[{j}].id",
                                   f"card {e.card!r} has no suggestion {sid!r}")
        existing = {(f.card_uuid, f.outcome, f.outcome_timestamp) for f in session.scalars(
            select(CdsFeedback).where(CdsFeedback.card_uuid.in_(uuids)))}
        stored, duplicates, audit_ids = 0, 0, []
        for e in entries:
            key = (e.card, e.outcome, e.outcome_timestamp)
            if key in existing:
                duplicates += 1
                continue
            existing.add(key)
            card = cards[e.card]
            audit_id = audit.record(
                session, actor=actor[:200], action="cds.feedback", subject=f"cds-card:{e.card}",
                after={"service": svc.id, "rule_id": card.rule_id, "severity": card.severity,
                       "outcome": e.outcome, "outcome_timestamp": e.outcome_timestamp,
                       "accepted_suggestions": e.accepted, "override_reason": (
                           {"system": e.reason_system, "code": e.reason_code} if e.reason_code else None),
                       "user_comment": e.comment, "hook_instance": card.hook_instance})
            session.add(CdsFeedback(card_uuid=e.card, received_at=utcnow(), actor=actor[:300], outcome=e.outcome,
                                    outcome_timestamp=e.outcome_timestamp, accepted_suggestions=e.accepted,
                                    reason_system=e.reason_system, reason_code=e.reason_code,
                                    user_comment=e.comment, audit_id=audit_id))
            stored += 1
            audit_ids.append(audit_id)
        session.flush()
        return {"received": len(entries), "stored": stored, "duplicates": duplicates, "audit_ids": audit_ids}


def operation_outcome(status: int, path: str, message: str, code: str = "invalid") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message, "expression": [path]}]}
