"""Verdict policy: pass / review / block from the findings, configured by Settings."""

from __future__ import annotations

from dataclasses import dataclass

from prescription_check.schemas import SEVERITIES, SEVERITY_RANK, Finding


@dataclass(frozen=True)
class Policy:
    block: frozenset[str] = frozenset({"contraindicated"})
    review: frozenset[str] = frozenset({"major", "moderate"})
    ddi_review_threshold: float = 0.5
    queue_min_severity: str = "moderate"

    @classmethod
    def from_settings(cls, settings) -> "Policy":
        for name in ("verdict_block_severities", "verdict_review_severities"):
            bad = set(getattr(settings, name)) - set(SEVERITIES)
            if bad:
                raise ValueError(f"{name} has unknown severities {sorted(bad)}; allowed {SEVERITIES}")
        if settings.queue_min_severity not in SEVERITIES:
            raise ValueError(f"queue_min_severity {settings.queue_min_severity!r} not in {SEVERITIES}")
        return cls(frozenset(settings.verdict_block_severities), frozenset(settings.verdict_review_severities),
                   settings.ddi_review_threshold, settings.queue_min_severity)

    def verdict(self, findings: list[Finding]) -> str:
        verdict = "pass"
        for f in findings:
            if f.predicted:
                # a model prediction never blocks; only a predicted major above the threshold sends to review
                if f.severity in {"major", "contraindicated"} and (f.probability or 0) >= self.ddi_review_threshold:
                    verdict = "review"
                continue
            if f.severity in self.block:
                return "block"
            if f.severity in self.review:
                verdict = "review"
        return verdict

    def needs_queue(self, findings: list[Finding]) -> bool:
        limit = SEVERITY_RANK[self.queue_min_severity]
        return any(SEVERITY_RANK[f.severity] <= limit for f in findings)
