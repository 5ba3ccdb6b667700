"""Request and response models of the triage API (documented in the OpenAPI schema at /docs).

Requests reject unknown fields (``extra="forbid"``) and use strict types: ``"age": "30"`` or
``"pregnant": "yes"`` is a 422 naming the field, not a silent coercion.  The text length limit
is ``settings.max_text_chars`` (default 2000), checked by the route because it is configurable; the route checks
the length first and only then whether the text is blank (``clean_text``: per-character work), so an oversized
text never costs more than its length.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from triage.taxonomy import Urgency

BATCH_MAX_ITEMS = 256
"""Largest ``items`` list accepted by ``POST /v1/triage/batch``."""

DEFAULT_TOP_K = 3
MAX_TOP_K = 25

_EXAMPLE_TEXT = "I have had a dry cough and a fever for three days and my chest feels tight"


class TriageRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"text": _EXAMPLE_TEXT, "age": 34, "sex": "female", "pregnant": False, "language": "en"},
                {"text": "crushing chest pain spreading to my left arm and I'm sweating", "age": 58},
            ]
        },
    )

    text: str = Field(
        strict=True,
        min_length=1,
        description="The patient's complaint in their own words (English). Not empty, whitespace or control "
        "characters only; at most settings.max_text_chars characters (default 2000).",
    )
    age: float | None = Field(
        default=None,
        strict=True,
        ge=0,
        le=130,
        allow_inf_nan=False,
        description="Age in years (fractions allowed: 0.25 = 3 months). 0 <= age <= 130.",
    )
    sex: Literal["female", "male", "other"] | None = Field(default=None, description="Sex, if known.")
    pregnant: bool | None = Field(default=None, strict=True, description="Whether the patient is pregnant.")
    language: Literal["en", "zh"] | None = Field(
        default=None,
        description="Language of `text`. The classifier and red-flag rules are English-only; "
        "`zh` is accepted and answered, with a lower-confidence caveat in `urgency_reasons`.",
    )
    feedback_consent: bool | None = Field(
        default=None,
        strict=True,
        description="The patient agreed that this complaint's text may be kept to improve the model. The text is "
        "kept only when this is true AND the deployment enables it (RXT_FEEDBACK_KEEP_TEXT); otherwise only a "
        "sha256 of it. Ignored by /v1/triage/batch (batch answers are not recorded).",
    )


class TriageBatchRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"items": [{"text": _EXAMPLE_TEXT, "age": 34}, {"text": "itchy red rash on both elbows"}]}
            ]
        },
    )

    items: list[TriageRequest] = Field(
        min_length=1,
        max_length=BATCH_MAX_ITEMS,
        description=f"1 to {BATCH_MAX_ITEMS} triage requests, answered in the same order.",
    )


class CenterOut(BaseModel):
    id: str = Field(description="Center id from the taxonomy, e.g. `respiratory`.")
    name_en: str
    name_zh: str
    probability: float | None = Field(
        description="Calibrated probability from the classifier. `null` for the `emergency` center "
        "when it was put first by a red-flag rule (a rule decision, not a model probability)."
    )


class SpanOut(BaseModel):
    text: str
    start: int = Field(description="Character offset in the request text (inclusive).")
    end: int = Field(description="Character offset in the request text (exclusive).")


class RedFlagOut(BaseModel):
    rule_id: str
    label: str
    urgency: Urgency
    center: str | None = Field(default=None, description="Center the rule routes to, if any.")
    matched: list[SpanOut]
    source: str = Field(description="The public guidance the rule cites.")


class TriageResult(BaseModel):
    centers: list[CenterOut] = Field(description="Top-k centers, most likely first.")
    urgency: Urgency
    urgency_reasons: list[str] = Field(description="Why: the first reason is what set the level.")
    urgency_source: str = Field(
        "default",
        description="What set the urgency: `red_flag:<rule_id>`, `model` (the urgency head), `rule:<name>` (a "
        "documented safety-net rule) or `default`. The more urgent of red flags, model and rules wins.",
    )
    urgency_probabilities: dict[str, float] | None = Field(
        None, description="The urgency head's probability per level (same encoder pass as the centers); null "
        "when the served model has no urgency head.")
    red_flags: list[RedFlagOut]
    abstained: bool = Field(
        description="True when the classifier is not confident enough to route: hand the patient to "
        "a human. An emergency red flag still sets urgency=emergency and puts `emergency` first."
    )
    abstain_reason: str | None
    model_version: str
    taxonomy_version: str
    red_flag_table_version: str | None


_RESULT_EXAMPLE = {
    "centers": [
        {"id": "emergency", "name_en": "Emergency", "name_zh": "急诊科", "probability": None},
        {"id": "cardiology", "name_en": "Cardiovascular medicine", "name_zh": "心血管内科", "probability": 0.81},
        {"id": "respiratory", "name_en": "Respiratory medicine", "name_zh": "呼吸内科", "probability": 0.07},
    ],
    "urgency": "emergency",
    "urgency_reasons": ["red flag chest_pain_radiating: chest pain spreading to the arm with sweating"],
    "urgency_source": "red_flag:chest_pain_radiating",
    "urgency_probabilities": {"emergency": 0.93, "urgent": 0.05, "routine": 0.01, "self_care": 0.01},
    "red_flags": [
        {
            "rule_id": "chest_pain_radiating",
            "label": "Chest pain spreading to the arm, jaw or back, or with sweating",
            "urgency": "emergency",
            "center": "emergency",
            "matched": [{"text": "crushing chest pain", "start": 0, "end": 19}],
            "source": "NHS: Heart attack - symptoms",
        }
    ],
    "abstained": False,
    "abstain_reason": None,
    "model_version": "3",
    "taxonomy_version": "2026.11-1",
    "red_flag_table_version": "1",
}


class TriageResponse(TriageResult):
    model_config = ConfigDict(json_schema_extra={"examples": [{"request_id": "5f0c…", **_RESULT_EXAMPLE}]})

    request_id: str = Field(description="Echo of X-Request-ID, or the id generated for this request.")


class TriageBatchResponse(BaseModel):
    request_id: str
    results: list[TriageResult] = Field(description="One result per item, in request order.")


class ReloadResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {"model": "triage", "previous_version": "3", "current_version": "4", "reloaded": True,
                 "error": None},
                {
                    "model": "triage",
                    "previous_version": "3",
                    "current_version": "3",
                    "reloaded": False,
                    "error": "ModelArtifactError: cannot load ONNX model …/model.int8.onnx: …",
                },
            ]
        }
    )

    model: Literal["triage", "ddi"] = Field(
        "triage", description="Which model was reloaded: the triage classifier or the prescription DDI risk model."
    )
    previous_version: str | None
    current_version: str | None
    reloaded: bool
    error: str | None = None


class ComponentState(BaseModel):
    ok: bool
    detail: str


class WorkerState(BaseModel):
    pid: int = Field(description="Process id of the worker that answered (several with --workers N).")
    triage_model_version: str | None = Field(description="Triage model version this worker serves (a quick "
                                             "first-start model says so: '<version>+quick').")
    ddi_model_version: str | None = Field(description="DDI model version this worker serves; null: rules-only.")


class ReadinessResponse(BaseModel):
    ready: bool
    components: dict[str, ComponentState]
    worker: WorkerState | None = None


class FieldError(BaseModel):
    field: str = Field(description="Dotted path of the offending field, e.g. `text` or `items.2.age`.")
    message: str


class ErrorResponse(BaseModel):
    detail: str
    errors: list[FieldError] = Field(default_factory=list)
    request_id: str | None = None


# --- every endpoint's answer and error bodies (OpenAPI; a generated client parses these) ---------------------


class HealthResponse(BaseModel):
    status: Literal["ok"]


def error_responses(*codes: int) -> dict[int | str, dict]:
    """OpenAPI ``responses`` entries for the given error statuses, each with the ``ErrorResponse`` body."""
    return {code: {"model": ErrorResponse, "description": ERROR_DESCRIPTIONS[code]} for code in codes}


ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON (or not UTF-8); `errors` names the position and reason.",
    401: "No API key, or an unknown one.",
    403: "The key's role may not do this.",
    404: "No such resource (e.g. review id).",
    409: "The review was decided by someone else first, or `expected_version` is stale.",
    413: "The request body is larger than RXT_MAX_REQUEST_BYTES (default 1 MB); refused before it is read.",
    422: "A field is missing, of the wrong type, out of range or unknown; `errors` names each field.",
    503: "Not ready (model or checker not loaded, queue full) or the review database is unavailable; retry after "
         "`Retry-After` seconds.",
}
