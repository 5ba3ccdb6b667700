"""Build the domain objects the service runs from its settings: the only place that turns settings and registry
URIs into folders, paths and a ``Policy`` for the domain packages (which read no settings themselves).

- ``load_triage_classifier(uri, settings)``: ``models:/triage-classifier@champion`` (or a folder) -> classifier.
- ``load_ddi_predictor(uri, settings)``: ``models:/ddi-severity@champion`` (or a folder) -> predictor.
- ``load_checker(settings)``: the KB artefact at ``settings.resolved_kb_path()`` -> rules-only ``Checker``;
  refuses an artefact built from other curated tables than the ones in ``datasets/drugs`` (``KBStaleError``).
  The artefact is built offline (``python -m training kb``; ``python -m training bootstrap`` does it when it is
  missing or stale).
"""

from __future__ import annotations

from dataclasses import replace

from prescription_check import Checker
from prescription_check.ddi_model import DDIPredictor
from prescription_check.policy import Policy
from prescription_check.tiers import PRESETS, ManagementTable, QueueSettings, TierPolicy
from serving.registry import resolve_model_dir
from serving.settings import CURATED_DRUG_TABLES_DIR, Settings
from triage.classifier import TriageClassifier

SERVING_INTRA_OP_THREADS = 2


MANAGEMENT_TABLE = CURATED_DRUG_TABLES_DIR / "interaction_management.csv"


def policy_from_settings(settings: Settings, queue: QueueSettings | None = None) -> Policy:
    """The verdict policy: severities from the settings, the cited management table (counselling tiers) and the
    queue settings (``queue``: the lead's tuning read from the database; None: the shipped ``default``)."""
    policy = Policy.validated(settings.verdict_block_severities, settings.verdict_review_severities,
                              settings.ddi_review_threshold, settings.queue_min_severity)
    return replace(policy, tiers=TierPolicy(ManagementTable.load(MANAGEMENT_TABLE), queue or PRESETS["default"]))


def load_triage_classifier(uri: str, settings: Settings, **options) -> TriageClassifier:
    """No busy-wait spinning of onnxruntime's idle worker threads by default: on a small machine it burns the CPU
    that the event loop (HTTP parsing, red-flag rules) needs (+24% req/s at c=8, docs/serving.md)."""
    folder, version = resolve_model_dir(str(uri), settings)
    options.setdefault("intra_op_threads", settings.ort_intra_op_threads or SERVING_INTRA_OP_THREADS)
    options.setdefault("spinning", settings.ort_spinning)
    classifier = TriageClassifier.from_folder(folder, version=version, **options)
    if classifier.meta.get("quick"):
        # a first-start model (training.bootstrap --quick) says so in /readyz and in every answer's model_version;
        # the registry version stays what the alias poller compares with
        classifier.registry_version = version
        classifier.version = f"{version or 'local'}+quick"
    return classifier


def load_ddi_predictor(uri: str, settings: Settings, version: str | None = None) -> DDIPredictor:
    """``version`` names a plain folder's registry version (a batch job's executors get the folder the driver
    resolved, not the ``models:/`` URI, so that every partition runs the same version)."""
    folder, resolved = resolve_model_dir(str(uri), settings)
    return DDIPredictor.load(folder, version=version or resolved)


def load_checker(settings: Settings, ddi_predictor: DDIPredictor | None = None, model_status: str | None = None,
                 warm: bool = True, verify_curated: bool = True) -> Checker:
    """``verify_curated=False`` skips the stale-artefact check: only for a batch job's executors, which load the
    very file (same sha256) that its driver loaded with the check."""
    return Checker.load(settings.resolved_kb_path(), policy_from_settings(settings), ddi_predictor, model_status,
                        curated_dir=CURATED_DRUG_TABLES_DIR if verify_curated else None, warm=warm)
