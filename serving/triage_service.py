"""The triage pipeline behind ``POST /v1/triage``: classifier + red flags + urgency, micro-batched.

One micro-batch runs in the batcher's worker thread:
1. take the classifier serving now (``holder.model``) ONCE, so a reload during the batch does
   not mix models: the whole batch answers with the version it started on;
2. one ``classifier.predict(texts)`` call for the batch;
3. per text: ``RedFlagMatcher.match`` (spaCy rules; negation and history aware) and
   ``decide_urgency``.
The route then shapes the answer (top-k, the emergency override, center names) on the event loop.

Emergency override: if any fired red flag has urgency ``emergency`` (or the urgency decision is
``emergency``), the answer's urgency is ``emergency`` and the ``emergency`` center comes first
with ``probability: null`` (a rule decision, not a model probability), followed by the model's
top k-1 centers.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any

from serving.batching import MicroBatcher
from serving.errors import ServiceUnavailableError
from serving.feedback import FeedbackRecorder
from serving.logs import SERVICE_LOGGER, log_event, log_extra
from serving.metrics import Metrics
from serving.model_holder import ModelHolder, model_version_of
from serving.settings import Settings
from serving.shadow import ShadowScorer
from triage.classifier import latin_share
from triage.redflags import RedFlagMatcher
from triage.taxonomy import URGENCY_LEVELS, load_taxonomy
from triage.urgency import UrgencyModel, decide_urgency, respect_mentions

log = logging.getLogger(SERVICE_LOGGER)
triage_log = logging.getLogger("rxtriage.triage")

EMERGENCY = "emergency"
URGENCY_ORDER = tuple(reversed(URGENCY_LEVELS))  # least to most urgent
UNREAD_SCRIPT_SHARE = 0.5  # below this share of Latin letters the text is not read: hand it to a human
SCRIPT_CAVEAT = (
    "the text is mostly not in Latin script: the classifier, red-flag rules and urgency model read English, so "
    "this answer is not based on the text; a human must read it"
)
LANGUAGE_CAVEAT = (
    "language zh: the classifier and red-flag rules are trained/written for English; "
    "treat this answer with caution and review it"
)


def _rescore(model: Any, head: Any, text: str, version: str | None) -> UrgencyModel | None:
    """The urgency head on ``text`` (a message without its denied / past mentions); None when that fails, so the
    answer keeps the more urgent reading of the full text."""
    try:
        pred = model.predict([text])[0]
    except Exception:  # noqa: BLE001 - the full-text reading stands
        log.exception("urgency re-score without denied mentions failed; keeping the full-text reading")
        return None
    if getattr(pred, "urgency", None) is None:
        return None
    return UrgencyModel(pred.urgency, head.thresholds, version, getattr(pred, "urgency_evidence", None))


@dataclass(frozen=True)
class TriageInput:
    text: str
    age: float | None = None
    sex: str | None = None
    pregnant: bool | None = None
    language: str | None = None


@dataclass(frozen=True)
class TriageOutcome:
    centers: list[tuple[str, float]]  # model ranking, every label
    abstained: bool
    abstain_reason: str | None
    flags: list[Any]  # FlagHit
    urgency: str
    urgency_reasons: list[str]
    model_version: str
    taxonomy_version: str
    urgency_source: str = "default"
    urgency_probabilities: dict[str, float] | None = None
    embedding: Any = field(default=None, compare=False, repr=False)  # pooled embedding (drift sketch), if any


def _plain(value: Any) -> Any:
    return getattr(value, "value", value)  # enums -> their value


class TriageService:
    def __init__(self, settings: Settings, metrics: Metrics, taxonomy: Any | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        if taxonomy is None:

            taxonomy = load_taxonomy()
        self.taxonomy = taxonomy
        self.holder = ModelHolder(
            settings,
            taxonomy=taxonomy,
            on_change=lambda m: metrics.set_model(model_version_of(m), getattr(m, "taxonomy_version", None)),
        )
        self.matcher: Any | None = None
        self.matcher_error: str | None = "not loaded yet"
        self.red_flag_table_version: str | None = None
        self._decide_urgency = None
        self.batcher: MicroBatcher[TriageInput, TriageOutcome] = MicroBatcher(
            self._process_batch,
            max_size=settings.batch_max_size,
            max_wait_ms=settings.batch_max_wait_ms,
            max_queue=max(2048, 4 * settings.batch_max_size),
            metrics=metrics,
        )
        self._names = {c.id: (c.name_en, c.name_zh) for c in taxonomy.centers}
        # issue 15: answers recorded for outcome matching, and the shadow challenger (set by serving.app)
        self.feedback: FeedbackRecorder | None = None
        self.shadow: ShadowScorer | None = None

    # -- start-up pieces (run in a worker thread by the lifespan) ----------------------------
    def load_red_flags(self) -> None:
        try:

            matcher = RedFlagMatcher()
            # Warm up spaCy so the first patient does not pay for it.
            matcher.match("I have a headache", age_years=None, sex=None, pregnant=None)
        except Exception as exc:  # noqa: BLE001 - the service stays up but not ready, saying why
            self.matcher_error = f"{exc.__class__.__name__}: {exc}"
            log_event(log, "red-flag rules failed to load", level=logging.ERROR, error=self.matcher_error)
            return
        version = None
        for attr in ("table_version", "version", "red_flag_table_version"):
            version = getattr(matcher, attr, None)
            if version is not None:
                break
        self.red_flag_table_version = None if version is None else str(version)
        self._decide_urgency = decide_urgency
        self.matcher = matcher
        self.matcher_error = None

    def red_flags_ready(self) -> tuple[bool, str]:
        if self.matcher is None:
            return False, f"red-flag rules not loaded: {self.matcher_error}"
        return True, f"red-flag table {self.red_flag_table_version}"

    # -- the batch (worker thread) -----------------------------------------------------------
    def _process_batch(self, items: list[TriageInput]) -> list[TriageOutcome]:
        model = self.holder.model  # taken once: the whole batch answers with this version
        matcher, decide = self.matcher, self._decide_urgency
        if model is None:
            raise ServiceUnavailableError(f"the triage model is not loaded: {self.holder.last_error or 'loading'}")
        if matcher is None or decide is None:
            raise ServiceUnavailableError(f"the red-flag rules are not loaded: {self.matcher_error}")
        version = model_version_of(model)
        taxonomy_version = str(getattr(model, "taxonomy_version", self.taxonomy.version))
        try:
            predictions = model.predict([item.text for item in items])
        except Exception:  # noqa: BLE001 - isolate the item at fault: the others still get answers
            if len(items) == 1:
                raise
            log.exception("triage batch of %d failed; retrying item by item", len(items))
            outcomes: list = []
            for item in items:
                try:
                    outcomes.append(self._process_batch([item])[0])
                except Exception as exc:  # noqa: BLE001 - handed to that request only
                    outcomes.append(exc)
            return outcomes
        outcomes = []
        for item, pred in zip(items, predictions):
            flags = list(matcher.match(item.text, age_years=item.age, sex=item.sex, pregnant=item.pregnant))
            head = getattr(model, "urgency_head", None)
            urgency_model = None
            if head is not None and getattr(pred, "urgency", None) is not None:
                head_version = str(head.info.get("version", version))
                urgency_model = UrgencyModel(pred.urgency, head.thresholds, head_version,
                                             getattr(pred, "urgency_evidence", None))
                urgency_model = respect_mentions(
                    item.text, flags, urgency_model, matcher,
                    lambda text, v=head_version: _rescore(model, head, text, v),
                    age_years=item.age, sex=item.sex, pregnant=item.pregnant, scopes=self.settings.negation_scopes)
            decision = decide(item.text, pred.centers, flags, age_years=item.age, pregnant=item.pregnant,
                              model=urgency_model, matcher=matcher)
            level = str(_plain(decision.level))
            reasons = [str(r) for r in (getattr(decision, "reasons", None) or [])]
            source = str(getattr(decision, "source", "default"))
            if any(str(_plain(f.urgency)) == EMERGENCY for f in flags) and level != EMERGENCY:
                level = EMERGENCY
                reasons.insert(0, "an emergency red flag fired")
                source = "red_flag"
            abstained, abstain_reason = bool(pred.abstained), pred.abstain_reason
            if item.language == "zh":
                reasons.append(LANGUAGE_CAVEAT)
            if latin_share(item.text) < UNREAD_SCRIPT_SHARE:
                # never a silent "routine" for text nobody here could read
                reasons.insert(0, SCRIPT_CAVEAT)
                abstained, abstain_reason = True, SCRIPT_CAVEAT
            outcomes.append(
                TriageOutcome(
                    centers=list(pred.centers),
                    abstained=abstained,
                    abstain_reason=abstain_reason,
                    flags=flags,
                    urgency=level,
                    urgency_reasons=reasons,
                    model_version=version,
                    urgency_source=source,
                    urgency_probabilities=getattr(decision, "probabilities", None),
                    taxonomy_version=taxonomy_version,
                    embedding=getattr(pred, "embedding", None),
                )
            )
        return outcomes

    # -- shaping (event loop) ----------------------------------------------------------------
    def _center(self, center_id: str, probability: float | None) -> dict[str, Any]:
        name_en, name_zh = self._names.get(center_id, (center_id, center_id))
        return {"id": center_id, "name_en": name_en, "name_zh": name_zh, "probability": probability}

    def shape(self, item: TriageInput, outcome: TriageOutcome, k: int) -> dict[str, Any]:
        ranked = [(cid, p) for cid, p in outcome.centers if cid != EMERGENCY]
        centers = []
        if outcome.urgency == EMERGENCY:
            centers.append(self._center(EMERGENCY, None))
        for cid, prob in ranked[: max(0, k - len(centers))]:
            centers.append(self._center(cid, round(float(prob), 6)))
        red_flags = [
            {
                "rule_id": str(f.rule_id),
                "label": str(f.label),
                "urgency": str(_plain(f.urgency)),
                "center": None if getattr(f, "center", None) is None else str(f.center),
                "matched": [
                    {"text": str(s.text), "start": int(s.start), "end": int(s.end)}
                    for s in (getattr(f, "matched", None) or [])
                ],
                "source": str(f.source),
            }
            for f in outcome.flags
        ]
        self._observe(item, outcome, red_flags)
        return {
            "centers": centers,
            "urgency": outcome.urgency,
            "urgency_reasons": outcome.urgency_reasons,
            "urgency_source": outcome.urgency_source,
            "urgency_probabilities": None if outcome.urgency_probabilities is None else {
                k: round(float(v), 6) for k, v in outcome.urgency_probabilities.items()},
            "red_flags": red_flags,
            "abstained": outcome.abstained,
            "abstain_reason": outcome.abstain_reason,
            "model_version": outcome.model_version,
            "taxonomy_version": outcome.taxonomy_version,
            "red_flag_table_version": self.red_flag_table_version,
        }

    def _observe(self, item: TriageInput, outcome: TriageOutcome, red_flags: list[dict]) -> None:
        m = self.metrics
        m.predictions.inc()
        if outcome.abstained:
            m.abstained.inc()
        if red_flags:
            m.red_flagged.inc()
            for flag in red_flags:
                m.red_flag_rules.labels(rule_id=flag["rule_id"]).inc()
        m.urgency.labels(level=outcome.urgency).inc()
        if triage_log.isEnabledFor(logging.INFO):
            fields = {
                "model_version": outcome.model_version,
                "top_center": outcome.centers[0][0] if outcome.centers else None,
                "urgency": outcome.urgency,
                "abstained": outcome.abstained,
                "red_flags": [f["rule_id"] for f in red_flags],
                "text_chars": len(item.text),
            }
            if self.settings.log_patient_text:
                fields["text"] = item.text
            triage_log.info("triage", extra=log_extra(fields))

    def enable_feedback(self, db: Any) -> None:
        """Wire the feedback writer (on ``db``) and the shadow challenger (issue 15; serving.app calls this)."""
        self.feedback = FeedbackRecorder(db, self.settings, self.metrics, reference_for=self._model_folder)
        self.shadow = ShadowScorer(self.settings, self.metrics, self.taxonomy, sink=self.feedback.offer,
                                   waiting=self.batcher.waiting)

    def _model_folder(self, version: str) -> Any:
        model = self.holder.model
        return getattr(model, "folder", None) if model is not None and model_version_of(model) == version else None

    async def start_feedback(self) -> None:
        """Start the shadow scorer process and load the challenger (when shadow scoring is on), and the feedback
        writer thread."""
        if self.shadow is not None and self.shadow.enabled:
            await asyncio.to_thread(self.shadow.load)
        if self.feedback is not None:
            self.feedback.start()

    async def stop_feedback(self) -> None:
        if self.shadow is not None:
            await asyncio.to_thread(self.shadow.stop)
        if self.feedback is not None:
            await asyncio.to_thread(self.feedback.stop)

    def after_answer(self, request_id: str, item: TriageInput, outcome: TriageOutcome, answer: dict[str, Any],
                     consent: bool | None) -> None:
        """Hand the answer to the feedback writer and (for the configured fraction) the shadow challenger: two
        ``put_nowait`` calls, nothing that can delay or change the answer."""
        try:
            if self.feedback is not None and self.feedback.enabled:
                centers = answer.get("centers") or []
                self.feedback.offer_answer(request_id, item.text, item.language, consent, outcome,
                                           centers[0]["id"] if centers else "")
            if self.shadow is not None and self.shadow.enabled:
                self.shadow.offer(request_id, item.text, outcome)
        except Exception as exc:  # noqa: BLE001 - bookkeeping never costs a patient the answer
            self.metrics.feedback_dropped.labels(reason="error").inc()
            log_event(log, "feedback hand-off failed", level=logging.WARNING, error=exc.__class__.__name__)

    # -- life cycle --------------------------------------------------------------------------
    async def start(self) -> None:
        await self.batcher.start()

    async def stop(self) -> None:
        await self.batcher.stop()
