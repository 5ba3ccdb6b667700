"""Prometheus metrics, one ``CollectorRegistry`` per app (so several apps in one process, as in
the tests, never share or clash).

Exposed at ``GET /metrics`` (text exposition format).  Names:

- ``rxt_http_requests_total{route,method,status}``, ``rxt_http_request_duration_seconds{route,method}``
- ``rxt_triage_batch_size`` (texts per classifier call), ``rxt_triage_batch_seconds``,
  ``rxt_triage_queue_depth``, ``rxt_triage_rejected_total{reason}``
- ``rxt_triage_predictions_total``, ``rxt_triage_abstained_total``, ``rxt_triage_red_flag_total``
  (predictions with at least one red flag), ``rxt_triage_red_flag_rule_total{rule_id}``,
  ``rxt_triage_urgency_total{level}``; the abstention and red-flag *rates* are
  ``abstained_total / predictions_total`` and ``red_flag_total / predictions_total``.
- ``rxt_triage_model_info{version,taxonomy_version}`` (1 for the model serving now),
  ``rxt_model_reloads_total{model,outcome}``

With several worker processes (``python -m serving --workers N``, ``PROMETHEUS_MULTIPROC_DIR`` set by
``serving.workers``) every worker writes its samples to that directory and ``render()`` aggregates them: counters
and histograms are summed over workers, ``rxt_triage_queue_depth`` is summed over live workers, and
``rxt_triage_model_info`` has one sample per live worker (label ``pid``), so a promotion that some worker has not
picked up yet is visible.
- feedback and live monitoring (``serving.feedback``, ``serving.shadow``; thresholds in docs/lifecycle.md):
  ``rxt_feedback_recorded_total``, ``rxt_feedback_dropped_total{reason}``, ``rxt_triage_outcomes_total{match}``;
  gauges over the last ``RXT_MONITOR_WINDOW`` answers of the serving version: ``rxt_triage_live_window``,
  ``rxt_triage_live_confidence_mean``, ``rxt_triage_live_handoff_rate``, ``rxt_triage_live_nonlatin_share``,
  ``rxt_triage_live_text_chars_mean``, ``rxt_triage_live_embedding_shift``; the shadow challenger:
  ``rxt_shadow_scored_total``, ``rxt_shadow_dropped_total{reason}``, ``rxt_shadow_skipped_total{reason}``,
  ``rxt_shadow_outstanding``, ``rxt_shadow_agreement_rate``,
  ``rxt_shadow_challenger_info{version}``.  The gauges are per process (``multiprocess_mode="livemostrecent"``
  when prometheus_client runs in multiprocess mode).
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


def multiprocess_dir() -> str | None:
    """``PROMETHEUS_MULTIPROC_DIR`` when the service runs several worker processes (``serving.workers``): every
    worker writes its samples there and ``render()`` aggregates all of them."""
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or None


def mark_worker_dead() -> None:
    """On a worker's shutdown: drop its live gauges from the multiprocess aggregate."""
    if multiprocess_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(os.getpid())

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "rxt_http_requests", "HTTP requests by route template, method and status",
            ["route", "method", "status"], registry=r,
        )
        self.latency = Histogram(
            "rxt_http_request_duration_seconds", "HTTP request latency",
            ["route", "method"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.batch_size = Histogram(
            "rxt_triage_batch_size", "Texts per classifier call (micro-batch size)",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.batch_seconds = Histogram(
            "rxt_triage_batch_seconds", "Time of one micro-batch (classifier + red flags + urgency)",
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.commit_batch_size = Histogram(
            "rxt_check_commit_batch_size", "Prescription checks recorded per group-commit transaction",
            buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("rxt_triage_queue_depth", "Texts waiting for the micro-batcher", registry=r,
                                 multiprocess_mode="livesum")
        self.rejected = Counter(
            "rxt_triage_rejected", "Triage texts refused before prediction", ["reason"], registry=r
        )
        self.predictions = Counter("rxt_triage_predictions", "Texts triaged", registry=r)
        self.abstained = Counter("rxt_triage_abstained", "Texts where the model abstained", registry=r)
        self.red_flagged = Counter(
            "rxt_triage_red_flag", "Texts where at least one red flag fired", registry=r
        )
        self.red_flag_rules = Counter(
            "rxt_triage_red_flag_rule", "Red-flag hits by rule", ["rule_id"], registry=r
        )
        self.urgency = Counter("rxt_triage_urgency", "Urgency decisions by level", ["level"], registry=r)
        self.model_info = Gauge(
            "rxt_triage_model_info", "1 for the triage model version serving now",
            ["version", "taxonomy_version"], registry=r,
            multiprocess_mode="liveall",  # one sample per live worker (label pid): each worker's version
        )
        self.reloads = Counter("rxt_model_reloads", "Model reload attempts by model and outcome", ["model", "outcome"],
                               registry=r)

        # --- feedback, live monitoring, shadow challenger (issue 15) ---
        live = dict(registry=r, multiprocess_mode="livemostrecent")
        self.feedback_recorded = Counter("rxt_feedback_recorded", "Triage answers recorded for outcome matching",
                                         registry=r)
        self.feedback_dropped = Counter("rxt_feedback_dropped", "Feedback records dropped (never the answer)",
                                        ["reason"], registry=r)
        self.outcomes = Counter("rxt_triage_outcomes", "Outcomes recorded, by whether the model's top center matched",
                                ["match"], registry=r)
        self.live_window = Gauge("rxt_triage_live_window", "Answers behind the rxt_triage_live_* gauges", **live)
        self.live_confidence = Gauge("rxt_triage_live_confidence_mean", "Mean top-center probability, recent answers",
                                     **live)
        self.live_handoff = Gauge("rxt_triage_live_handoff_rate", "Share of recent answers handed to a human",
                                  **live)
        self.live_nonlatin = Gauge("rxt_triage_live_nonlatin_share", "Share of recent texts mostly not Latin script",
                                   **live)
        self.live_text_chars = Gauge("rxt_triage_live_text_chars_mean", "Mean length of recent texts", **live)
        self.live_embedding_shift = Gauge(
            "rxt_triage_live_embedding_shift",
            "Mean |live - reference| / reference std of the embedding sketch (reference.json of the model)", **live)
        self.shadow_scored = Counter("rxt_shadow_scored", "Requests the challenger scored in shadow", registry=r)
        self.shadow_dropped = Counter("rxt_shadow_dropped", "Shadow work dropped (never the answer)", ["reason"],
                                      registry=r)
        self.shadow_skipped = Counter("rxt_shadow_skipped",
                                      "Requests drawn for shadow scoring but not sent: the answering path was behind",
                                      ["reason"], registry=r)
        self.shadow_outstanding = Gauge("rxt_shadow_outstanding",
                                        "Requests sent to the shadow scorer process and not scored yet", **live)
        self.shadow_agreement = Gauge("rxt_shadow_agreement_rate",
                                      "Share of recent shadow-scored requests where both models' top center agree",
                                      **live)
        self.shadow_info = Gauge("rxt_shadow_challenger_info", "1 for the challenger version scored in shadow",
                                 ["version"], **live)

    def set_challenger(self, version: str | None) -> None:
        self.shadow_info.clear()
        if version is not None:
            self.shadow_info.labels(version=str(version)).set(1)

    def set_model(self, version: str | None, taxonomy_version: str | None) -> None:
        previous = getattr(self, "_model_labels", None)
        if previous is not None and multiprocess_dir():
            # a worker's samples live in its file until it exits: the old version is set to 0, not forgotten
            self.model_info.labels(*previous).set(0)
        self._model_labels = None if version is None else (str(version), str(taxonomy_version))
        if not multiprocess_dir():  # (prometheus_client cannot clear labels in multiprocess mode)
            self.model_info.clear()
        if version is not None:
            self.model_info.labels(version=str(version), taxonomy_version=str(taxonomy_version)).set(1)

    def render(self) -> tuple[bytes, str]:
        if multiprocess_dir():
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry), CONTENT_TYPE_LATEST
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
