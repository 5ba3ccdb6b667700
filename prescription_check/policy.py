"""Verdict policy: pass / review / block from the findings (the service builds it from its settings)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Callable

from prescription_check.schemas import SEVERITIES, SEVERITY_RANK, Finding
from prescription_check.tiers import QueueSettings, TierPolicy, verdict_from_tiers


@dataclass(frozen=True)
class Policy:
    block: frozenset[str] = frozenset({"contraindicated"})
    review: frozenset[str] = frozenset({"major", "moderate"})
    ddi_review_threshold: float = 0.5
    queue_min_severity: str = "moderate"
    tiers: TierPolicy = field(default_factory=TierPolicy)

    @classmethod
    def validated(cls, block, review, ddi_review_threshold: float = 0.5,
                  queue_min_severity: str = "moderate") -> "Policy":
        """A policy from plain values, refusing unknown severities with a message naming the field."""
        for name, values in (("verdict_block_severities", block), ("verdict_review_severities", review)):
            bad = set(values) - set(SEVERITIES)
            if bad:
                raise ValueError(f"{name} has unknown severities {sorted(bad)}; allowed {SEVERITIES}")
        if queue_min_severity not in SEVERITIES:
            raise ValueError(f"queue_min_severity {queue_min_severity!r} not in {SEVERITIES}")
        return cls(frozenset(block), frozenset(review), float(ddi_review_threshold), queue_min_severity)

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

    def with_queue_settings(self, queue: QueueSettings) -> "Policy":
        """The same policy with other queue settings (the pharmacist lead's tuning)."""
        return replace(self, tiers=replace(self.tiers, queue=queue))

    def classify(self, findings: list[Finding], atc_of: Callable[[str], list[str]] = lambda _: [],
                 daily_mg: Callable[[str], float | None] = lambda _: None) -> tuple[str, list[dict]]:
        """Tier every finding (``prescription_check.tiers``) and return (verdict, counselling notes)."""
        notes = self.tiers.assign(findings, block=self.block, review=self.review,
                                  ddi_review_threshold=self.ddi_review_threshold, atc_of=atc_of, daily_mg=daily_mg)
        return verdict_from_tiers(findings), notes

    def needs_queue(self, findings: list[Finding]) -> bool:
        limit = SEVERITY_RANK[self.queue_min_severity]
        return any(SEVERITY_RANK[f.severity] <= limit for f in findings)
