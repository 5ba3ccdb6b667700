"""Request and response models of the outcome-feedback endpoints (``serving.routes.outcomes``)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class OutcomeRequest(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [
            {"request_id": "3f2b7c1e9a0d4e5f", "actual_center": "respiratory", "clinician_urgency": "routine"}]},
    )

    request_id: str = Field(strict=True, min_length=1, max_length=200,
                            description="The `request_id` of the /v1/triage answer (also its X-Request-ID header).")
    actual_center: str = Field(strict=True, min_length=1, max_length=64,
                               description="The taxonomy center the patient was finally seen in (an id of "
                               "datasets/triage/taxonomy.json, `emergency` included).")
    clinician_urgency: str | None = Field(default=None, max_length=32,
                                          description="The urgency a clinician assigned: emergency, urgent, routine "
                                          "or self_care.")

    @model_validator(mode="before")
    @classmethod
    def _no_text(cls, data: Any) -> Any:
        if isinstance(data, dict) and "text" in data:
            raise ValueError("text: complaint text is never taken with an outcome; it is kept only from the triage "
                             "request itself, when that request carried feedback_consent: true and the deployment "
                             "enables RXT_FEEDBACK_KEEP_TEXT")
        return data


class OutcomeResponse(BaseModel):
    request_id: str
    actual_center: str
    clinician_urgency: str | None
    model_version: str = Field(description="The model version that answered the triage request.")
    predicted_center: str = Field(description="That model's top center.")
    answered_center: str = Field(description="The first center of the answer (`emergency` on a red-flag override).")
    predicted_urgency: str
    top1_correct: bool = Field(description="predicted_center == actual_center")
    answered_at: str
    recorded_at: str
    text_kept: bool = Field(description="Whether the complaint text is kept for training (consent + setting).")
    created: bool = Field(description="false: this outcome was already recorded with the same body (idempotent).")


class OutcomeDeleted(BaseModel):
    request_id: str
    outcome_deleted: bool
    text_deleted: bool
