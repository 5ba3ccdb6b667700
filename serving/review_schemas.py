"""Response models of the prescription check and review-queue endpoints (OpenAPI; generated clients).

They describe exactly what ``serving.review_queue`` returns (``review_summary``, ``review_detail``,
``override_stats``) and what ``POST /v1/prescriptions/check`` answers.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from prescription_check.schemas import CheckResult, Finding, NormalizedItem


class CheckResponse(CheckResult):
    queued: bool = Field(description="True when the check was put in the pharmacist review queue.")
    review_id: int | None = Field(description="The queued review's id (null when not queued).")
    audit_id: int = Field(description="The check's audit entry (every check is audited).")


class DecisionOut(BaseModel):
    decision: Literal["approve", "reject", "request_change"]
    reason_code: str | None
    note: str | None
    decided_by: str | None
    decided_at: str | None = Field(description="ISO-8601 UTC.")


class ReviewSummary(BaseModel):
    id: int
    status: Literal["pending", "approved", "rejected", "changes_requested"]
    verdict: Literal["pass", "review", "block"]
    max_severity: str
    created_at: str = Field(description="ISO-8601 UTC.")
    prescription_ref: str | None
    prescriber_id: str | None
    submitted_by: str
    drugs: list[str]
    finding_count: int
    rule_ids: list[str | None]
    kb_version: str
    model_version: str | None
    version: int = Field(description="Optimistic-locking version; send it back as `expected_version`.")
    decision: DecisionOut | None


class ReviewPage(BaseModel):
    items: list[ReviewSummary]
    total: int
    limit: int
    offset: int
    next_offset: int | None


class AuditEntryOut(BaseModel):
    id: int
    ts: str
    actor: str
    action: str
    subject: str
    before: dict[str, Any] | None
    after: dict[str, Any] | None
    prev_hash: str
    hash: str


class ReviewDetail(ReviewSummary):
    prescription: dict[str, Any]
    patient: dict[str, Any]
    findings: list[Finding]
    normalized_items: list[NormalizedItem]
    model_status: str | None
    requires_override_reason: bool
    audit: list[AuditEntryOut]


class DecisionResponse(ReviewSummary):
    audit_id: int = Field(description="The decision's audit entry.")


class ReasonCodeOut(BaseModel):
    code: str
    label: str
    decisions: list[Literal["approve", "reject", "request_change"]]
    needs_note: bool


class ReasonCodesResponse(BaseModel):
    reason_codes: list[ReasonCodeOut]
    override_reason_required_for: list[str]


class RuleOverrides(BaseModel):
    rule_id: str
    category: str
    severity: str
    decided: int
    overridden: int
    pending: int
    override_rate: float | None
    ehr_feedback: int = Field(default=0, description="CDS Hooks cards of this rule the EHR sent feedback on")
    ehr_overridden: int = Field(default=0, description="... overridden by the prescriber")
    ehr_accepted: int = Field(default=0, description="... whose suggestion the prescriber accepted")
    ehr_override_rate: float | None = None


class OverrideTotals(BaseModel):
    decided: int
    overridden: int
    override_rate: float | None
    ehr_feedback: int = 0
    ehr_overridden: int = 0
    ehr_accepted: int = 0
    ehr_override_rate: float | None = None


class OverrideStatsResponse(BaseModel):
    rules: list[RuleOverrides]
    total: OverrideTotals
