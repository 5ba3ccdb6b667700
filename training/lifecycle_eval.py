"""Evaluators the lifecycle CLI runs on a registered version's artefact (no torch).

Each returns a flat metrics dict plus ``per_class`` ({label: {recall, precision, support}}), computed
fresh on the named held-out data so that two versions are compared on exactly the same rows.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

from evaluation.redflag_eval import evaluate_redflags
from evaluation.triage_eval import (
    classification_metrics,
    expected_calibration_error,
    selective,
)
from evaluation.routing_eval import read_rows, routing_report
from evaluation.urgency_eval import evaluate_urgency, headline, pipeline
from serving.settings import Settings
from training import urgency_train
from training.ddi_eval_adapter import evaluate_ddi_dir
from training.triage_data import load_examples, make_splits
from triage.classifier import TriageClassifier
from triage.redflags import RedFlagMatcher

TRIAGE_DATASETS = {
    "test": None,  # every held-out test row (external sources only: project-written rows never reach test)
    "test-external": None,
}


def evaluate_triage(model_dir: Path, dataset: str, settings: Settings) -> dict:

    clf = TriageClassifier.from_folder(model_dir)
    meta = json.loads((Path(model_dir) / "meta.json").read_text())
    seed = int(meta.get("seed", 13))
    df = make_splits(load_examples(settings), seed=seed)
    test = df[(df["split"] == "test") & (df["origin"] == "external")]
    test = test[test["center"].isin(clf.labels)]
    if test.empty:
        raise ValueError("the held-out test split has no rows with this model's labels")
    index = {label: i for i, label in enumerate(clf.labels)}
    y = np.array([index[c] for c in test["center"]])
    probs = clf.predict_proba(list(test["text"]))
    metrics = classification_metrics(y, probs, clf.labels)
    sel = selective(y, probs, clf.threshold)
    # the service's urgency decision with this artifact (its urgency head, or rules alone when it has none) on the
    # blind urgency set: the gate refuses a model that misses more emergencies or under-triages more
    matcher = RedFlagMatcher()
    urgency = headline(evaluate_urgency(urgency_train.blind_rows(), pipeline(matcher, clf)))
    # the second blind set (written before any model ran on it; first run in docs/urgency.md): read by the gate too,
    # so a candidate that misses more of either set's emergencies is refused
    urgency2 = headline(evaluate_urgency(urgency_train.blind_rows_v2(), pipeline(matcher, clf)))
    # the blind routing set (written outside the training data): the gate refuses a model that routes it worse or
    # hands more of it to a human than the champion (issue 12)
    routing = routing_report(clf, read_rows(urgency_train.BLIND_SET.parent / "routing_blind_v1.csv"))["overall"]
    routing2 = routing_report(clf, read_rows(urgency_train.BLIND_SET.parent / "routing_blind_v2.csv"))["overall"]
    # the largest sets written blind (2026-12-07, night; first runs in docs/urgency.md and docs/triage-model.md)
    urgency5 = headline(evaluate_urgency(urgency_train.blind_rows_v5(), pipeline(matcher, clf)))
    routing3 = routing_report(clf, read_rows(urgency_train.BLIND_SET.parent / "routing_blind_v3.csv"))["overall"]
    return {
        "routing_blind_top1": routing["top1"],
        "routing_blind_top3": routing["top3"],
        "routing_blind_coverage": 1.0 - routing["handed_off"],
        "routing_blind2_top1": routing2["top1"],
        "routing_blind2_top3": routing2["top3"],
        "routing_blind2_coverage": 1.0 - routing2["handed_off"],
        "routing_blind3_top1": routing3["top1"],
        "routing_blind3_top3": routing3["top3"],
        "routing_blind3_coverage": 1.0 - routing3["handed_off"],
        # the training run's cross-source tests (a model of the same recipe trained on one public source, tested on
        # the other): a property of the recipe, read from the artefact's meta; absent when trained without them
        **cross_source_figures(meta),
        "urgency_emergency_recall": urgency["emergency_recall"],
        "urgency_under_triage_rate": urgency["under_triage_rate"],
        "urgency_exact_accuracy": urgency["exact_accuracy"],
        "urgency_blind2_emergency_recall": urgency2["emergency_recall"],
        "urgency_blind2_under_triage_rate": urgency2["under_triage_rate"],
        "urgency_blind2_exact_accuracy": urgency2["exact_accuracy"],
        "urgency_blind5_emergency_recall": urgency5["emergency_recall"],
        "urgency_blind5_under_triage_rate": urgency5["under_triage_rate"],
        "urgency_blind5_exact_accuracy": urgency5["exact_accuracy"],
        "n": metrics["n"],
        "accuracy": metrics["accuracy"],
        "macro_f1": metrics["macro_f1"],
        "top3_accuracy": metrics["top3_accuracy"],
        "ece": float(expected_calibration_error(y, probs)),
        "selective_accuracy": sel["selective_accuracy"],
        "coverage": sel["coverage"],
        "threshold": float(clf.threshold),
        "per_class": metrics["per_center"],
    }


XSRC_TOP1 = re.compile(r"xsrc_[a-z0-9]+_to_[a-z0-9]+_accuracy")


def cross_source_figures(meta: dict) -> dict:
    """Mean top-1 / top-3 over the training run's cross-source directions (``xsrc_<a>_to_<b>_accuracy``), or {}."""
    metrics = meta.get("metrics") or {}
    # only the cross-source models' own top-1 (xsrc_<a>_to_<b>_accuracy), not the baseline's, the exemplar
    # blend's / head's or the WiSE-FT grid's figures that share the prefix
    top1 = [float(v) for k, v in metrics.items() if XSRC_TOP1.fullmatch(k)]
    top3 = [float(v) for k, v in metrics.items() if k.startswith("xsrc_") and k.endswith("_top3_accuracy")]
    out = {}
    if top1:
        out["cross_source_top1"] = float(np.mean(top1))
    if top3:
        out["cross_source_top3"] = float(np.mean(top3))
    return out


def evaluate_ddi(model_dir: Path, dataset: str, settings: Settings) -> dict:

    return evaluate_ddi_dir(model_dir, dataset, settings)


def redflag_recall() -> float:
    """Recall of the red-flag rules on the project's phrase set (1.0 = no missed emergency)."""

    result = evaluate_redflags()
    return float(result["recall"])
