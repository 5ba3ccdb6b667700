"""The project's one configuration object.

Every setting comes from an environment variable with the prefix ``RXT_`` (for example
``RXT_DATA_DIR``, ``RXT_DATABASE_URL``) or from a ``.env`` file in the working directory.
The defaults are the embedded set-up: everything lives under ``var/`` in the project root
(SQLite MLflow store, SQLite review database, downloaded data).  See docs/configuration.md.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent
CURATED_DRUG_TABLES_DIR = PROJECT_ROOT / "datasets" / "drugs"  # the curated tables a KB artefact is built from

Role = Literal["chat", "prescriber", "pharmacist", "admin", "ml", "clinician"]
ROLES: tuple[str, ...] = ("chat", "prescriber", "pharmacist", "admin", "ml", "clinician")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="RXT_", env_file=".env", extra="ignore", validate_default=True
    )

    # --- data -----------------------------------------------------------------------------
    data_dir: Path | None = Field(
        default=None,
        description="Folder holding the public datasets (layout of ../shared/datasets). "
        "Unset: ../shared/datasets beside the checkout.",
    )
    allow_download: bool = Field(
        default=False,
        description="Fetch a missing source file from its upstream URL (needs internet).",
    )
    work_dir: Path = Field(default=PROJECT_ROOT / "var", description="Where runtime state lives.")

    # --- MLflow -----------------------------------------------------------------------------
    mlflow_tracking_uri: str | None = Field(
        default=None, description="Unset: sqlite:///<work_dir>/mlflow.db"
    )
    mlflow_artifact_root: str | None = Field(
        default=None, description="Unset: <work_dir>/mlartifacts (used when creating experiments)"
    )
    triage_model_uri: str = "models:/triage-classifier@champion"
    ddi_model_uri: str = "models:/ddi-severity@champion"

    # --- service ----------------------------------------------------------------------------
    database_url: str | None = Field(default=None, description="Unset: sqlite:///<work_dir>/rxtriage.db")
    api_keys: dict[str, Role] = Field(
        default_factory=dict,
        description='JSON object {"<key>": "<role>"}; roles: chat, prescriber, pharmacist, admin, ml, clinician',
    )
    api_keys_file: Path | None = Field(
        default=None, description="A JSON file with the same shape as RXT_API_KEYS."
    )
    session_secret: str | None = Field(
        default=None, repr=False,
        description="Signs the /review page's session cookie. Unset: a random secret persisted (0600) in "
        "<work_dir>/session_secret. Set it when several service processes share one review page.",
    )
    max_text_chars: int = Field(default=2000, ge=1, description="Longest accepted complaint text.")
    max_request_bytes: int = Field(
        default=1_048_576, ge=1024,
        description="Largest accepted request body (bytes); a larger one is refused with 413 before it is parsed "
        "or the caller is authenticated.",
    )

    # --- review database timeouts ---------------------------------------------------------
    db_connect_timeout_s: int = Field(
        default=3, ge=2, le=60,
        description="PostgreSQL connect timeout (libpq connect_timeout; libpq treats less than 2 as 2).",
    )
    db_statement_timeout_ms: int = Field(
        default=5000, ge=50,
        description="Server-side limit per statement (PostgreSQL statement_timeout and lock_timeout; SQLite "
        "busy timeout).",
    )
    db_socket_timeout_s: float = Field(
        default=8.0, gt=0,
        description="Client-side limit on one request's database work (waiting for a connection, every statement "
        "and the commit). Past it the request answers 503 and the connection's socket is shut down (SQLite: the "
        "statement is interrupted), so a frozen server cannot hold a thread. Also the TCP user timeout.",
    )
    db_ping_timeout_s: float = Field(
        default=1.0, gt=0, description="Longest /readyz waits for the database probe."
    )
    db_group_commit: bool = Field(
        default=True,
        description="Record concurrent prescription checks in one transaction per batch (one writer per process; "
        "each answer is still sent only after its check is committed). False: one transaction per request.",
    )
    db_group_commit_max: int = Field(default=64, ge=1, description="Most checks one group commit records.")
    db_group_commit_wait_ms: float = Field(
        default=2.0, ge=0, le=50,
        description="Longest a group commit waits for the checks it expects (as many as its recent batches held) "
        "before writing fewer; 0: write whatever is waiting at once. An idle service never waits (batches of one).",
    )
    workers: int = Field(
        default=1, ge=1,
        description="Worker processes of 'python -m serving' (--workers wins; scripts/run defaults to one per core).",
    )
    db_migrate: bool = Field(
        default=True,
        description="Run the review database's migrations at start-up ('python -m serving --workers N' runs them "
        "once in the parent and sets this to false for its workers).",
    )
    ort_intra_op_threads: int = Field(
        default=0, ge=0,
        description="onnxruntime intra-op threads of the triage model; 0: 2 (one process), 1 per worker when "
        "--workers > 1.",
    )
    blas_threads: int = Field(
        default=1, ge=0,
        description="BLAS threads of numpy's matrix products in the service process (the urgency head's "
        "nearest-exemplar blend, the center exemplars); 0 leaves the library's default (one per core). One by "
        "default: per-request products are small, and OpenBLAS's threads waking beside onnxruntime's cost ~10 ms "
        "a call where one thread takes 0.14 ms (issue 16).",
    )
    batch_max_size: int = Field(default=32, ge=1)
    batch_max_wait_ms: float = Field(default=3.0, ge=0)
    log_patient_text: bool = False
    ort_spinning: bool = Field(
        default=False, description="Let onnxruntime's idle worker threads busy-wait (its default); off in the service."
    )
    model_poll_seconds: float = Field(
        default=0.0, ge=0, description="Poll the registry for a new champion; 0 disables."
    )

    # --- prescription review --------------------------------------------------------------
    kb_path: Path | None = Field(
        default=None, description="Built knowledge-base artefact. Unset: <work_dir>/kb/kb.json (built by 'python -m training kb' or 'bootstrap')."
    )
    ddi_review_threshold: float = Field(
        default=0.5, ge=0, le=1,
        description="A predicted (not documented) major interaction with at least this probability sends the "
        "prescription to review.",
    )
    verdict_block_severities: list[str] = Field(
        default_factory=lambda: ["contraindicated"], description="Severities whose findings block the prescription."
    )
    verdict_review_severities: list[str] = Field(
        default_factory=lambda: ["major", "moderate"], description="Severities whose findings send it to review."
    )
    queue_min_severity: str = Field(
        default="moderate", description="Least severe finding that puts a prescription in the pharmacist queue."
    )
    tier_settings_poll_s: float = Field(
        default=5.0, ge=0,
        description="How often each process re-reads the pharmacist lead's alert-tier settings from the review "
        "database (an edit through another process takes effect within this time); 0 disables polling.",
    )

    # --- CDS Hooks (docs/cds-hooks.md) ----------------------------------------------------
    cds_base_url: str | None = Field(
        default=None,
        description="Public base URL the EHR calls (https://cds.example.org); the JWT 'aud' must be "
        "<base>/cds-services[/<id>[/feedback]]. Unset: the base URL of the request as the service sees it.",
    )
    cds_issuers: dict[str, str] = Field(
        default_factory=dict,
        description='JSON {"<iss>": "<JWKS file path or https URL>"}: the EHRs whose JWTs are trusted, each with '
        "the JWK Set its signatures are verified against. Empty: CDS endpoints take API keys only.",
    )
    cds_jwt_algorithms: list[str] = Field(
        default_factory=lambda: ["ES384", "RS384", "ES256", "RS256", "ES512", "RS512", "PS384", "PS256"],
        description="Accepted JWT signature algorithms (asymmetric only; 'none' and HMAC are always refused).",
    )
    cds_jwt_leeway_s: float = Field(default=30.0, ge=0, le=300, description="Clock skew allowed on exp/iat.")
    cds_jwt_max_lifetime_s: float = Field(
        default=600.0, gt=0, description="Longest accepted exp - iat (and exp - now) of a CDS client JWT.")
    cds_jwks_cache_s: float = Field(default=300.0, ge=0, description="How long a JWKS fetched from a URL is cached.")
    cds_source_url: str | None = Field(
        default=None,
        description="Link shown as the card source when a finding cites no URL (e.g. your formulary page). "
        "Unset: no link.",
    )

    @field_validator("cds_issuers", mode="before")
    @classmethod
    def _parse_issuers(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value

    # --- feedback, shadow challenger, live monitoring (docs/lifecycle.md) ---------------------
    feedback_enabled: bool = Field(
        default=True,
        description="Record every /v1/triage answer (request id, model version, text sha256, prediction) so outcomes "
        "can be matched (POST /v1/triage/outcomes). Off: nothing is recorded and outcomes answer 404.",
    )
    feedback_keep_text: bool = Field(
        default=False,
        description="Keep the complaint text of a triage request for training, and only when that request also "
        "carried feedback_consent: true. Off: only a sha256 of the text is kept.",
    )
    feedback_retention_days: float = Field(
        default=90.0, gt=0,
        description="Kept complaint texts and embedding sketches older than this are deleted by the purge (at "
        "start-up, then hourly in the service; python -m serving.feedback purge); triage records older than this "
        "without an outcome are deleted.",
    )
    feedback_outcome_days: float = Field(
        default=30.0, gt=0,
        description="An outcome is accepted for a triage answer at most this old; an older one is refused with 410.",
    )
    feedback_queue: int = Field(
        default=10_000, ge=1,
        description="Triage records waiting for the database writer; past it new records are dropped (counted in "
        "rxt_feedback_dropped_total), never the answer.",
    )
    challenger_model_uri: str = Field(
        default="models:/triage-classifier@challenger",
        description="The model scored in shadow beside the champion (when RXT_SHADOW_FRACTION > 0).",
    )
    shadow_fraction: float = Field(
        default=0.0, ge=0, le=1,
        description="Share of /v1/triage requests the challenger also scores, off the answering path; 0 disables "
        "shadow scoring (the challenger is then not loaded).",
    )
    shadow_queue: int = Field(
        default=256, ge=1,
        description="Texts sent to the shadow scorer process and not scored yet; past it shadow work is dropped "
        "(rxt_shadow_dropped_total{reason=\"queue_full\"}), never the answer.",
    )
    shadow_threads: int = Field(default=1, ge=1, le=8,
                                description="onnxruntime threads of the challenger (in its own idle-priority process).")
    shadow_skip_waiting: int = Field(
        default=32, ge=0,
        description="A request drawn for shadow scoring is skipped (rxt_shadow_skipped_total{reason=\"busy\"}) while "
        "at least this many triage requests wait for a batch (the answering path is behind); 0 never skips.",
    )
    shadow_idle_only: bool = Field(
        default=True,
        description="The shadow scorer process scores only while its service worker has had no request in flight for "
        "RXT_SHADOW_IDLE_MS; meanwhile the drawn requests wait in it (at most RXT_SHADOW_QUEUE, then dropped), so "
        "under sustained load the shadow sample shrinks instead of the answers slowing. false: score as they come "
        "(still at idle CPU priority).",
    )
    shadow_idle_ms: float = Field(
        default=5.0, ge=0, le=10_000,
        description="With RXT_SHADOW_IDLE_ONLY: how long the worker must have been without a request in flight before "
        "the scorer starts (it looks again between every few texts).",
    )
    negation_scopes: bool = Field(
        default=False,
        description="Issue 11: when the urgency head alone raises the level, also remove NegEx-style negation / "
        "history / family / hypothetical scopes around any finding (triage.mentions) before re-scoring, not only the "
        "red-flag matcher's denied mentions. Off by default: on the blind v3 set's first run it cut traps raised to "
        "emergency 37.0% -> 33.3% but lost one of 37 emergencies (docs/urgency.md).",
    )
    monitor_window: int = Field(
        default=500, ge=10,
        description="The last N recorded answers behind the rxt_triage_live_* gauges.",
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _parse_keys(cls, value):
        if isinstance(value, str):
            value = json.loads(value) if value.strip() else {}
        return value

    # --- derived ----------------------------------------------------------------------------
    def resolved_data_dir(self) -> Path:
        return (self.data_dir or PROJECT_ROOT.parent / "shared" / "datasets").resolve()

    def resolved_tracking_uri(self) -> str:
        return self.mlflow_tracking_uri or f"sqlite:///{(self.work_dir / 'mlflow.db').resolve()}"

    def resolved_artifact_root(self) -> str:
        return self.mlflow_artifact_root or (self.work_dir / "mlartifacts").resolve().as_uri()

    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.work_dir / 'rxtriage.db').resolve()}"

    def resolved_kb_path(self) -> Path:
        return self.kb_path or self.work_dir / "kb" / "kb.json"

    def resolved_api_keys(self) -> dict[str, str]:
        keys = dict(self.api_keys)
        if self.api_keys_file is not None:
            keys.update(json.loads(Path(self.api_keys_file).read_text()))
        bad = {role for role in keys.values() if role not in ROLES}
        if bad:
            raise ValueError(f"unknown role(s) in API keys: {sorted(bad)}; allowed: {ROLES}")
        return keys


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
