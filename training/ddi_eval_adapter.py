"""Lifecycle evaluation of a registered ``ddi-severity`` version.

The served artefact is the *final* fit on every labelled DDInter pair, so no held-out pair is left to
score it on afresh.  Its held-out figures are the ones the same training run measured with the same
recipe on the random and drug-disjoint fits (``meta.json`` -> ``metrics``).  This adapter

* reads those figures for the named split (``random``, ``one_unseen``, ``both_unseen``),
* adds the margin over the id+ATC logistic baseline measured on the same rows,
* fingerprints the held-out split (seed, split fractions, pair limit, sha256 of every source file) as
  ``heldout_id`` so that the promotion gate can refuse to compare versions scored on different rows,
* loads the artefact with the serving code (``DDIPredictor``) and scores a fixed set of pairs, so a
  version whose files do not load or give invalid probabilities fails evaluation outright.
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path

import numpy as np

from prescription_check.ddi_model import DDIPredictor
from serving.settings import Settings

DATASETS = ("random", "one_unseen", "both_unseen")
BASELINE = "logreg_id_atc"


class DDIEvaluationError(ValueError):
    """The version's artefact cannot be evaluated; the message says why."""


def heldout_fingerprint(meta: dict) -> str:
    opts = meta.get("options", {})
    basis = {
        "seed": opts.get("seed"),
        "test_frac": opts.get("test_frac"),
        "test_drug_frac": opts.get("test_drug_frac"),
        "limit": opts.get("limit"),
        "data_sha256": meta.get("data_sha256", {}),
    }
    return hashlib.sha256(json.dumps(basis, sort_keys=True).encode()).hexdigest()[:16]


def _smoke(model_dir: Path) -> dict:
    """Load the artefact the way the service does and score pairs of its own drugs."""

    predictor = DDIPredictor(model_dir)
    trained = [n for n in predictor.names if predictor.in_training_data(n)][:40]
    pairs = [(a, b) for a, b in zip(trained[::2], trained[1::2])]
    if not pairs:
        raise DDIEvaluationError(f"{model_dir}: the artefact knows no drug with labelled pairs")
    scored = [p for p in predictor.predict_pairs(pairs) if p]
    if len(scored) != len(pairs):
        raise DDIEvaluationError(f"{model_dir}: {len(pairs) - len(scored)} of {len(pairs)} known pairs got no prediction")
    probs = np.array([[p[label] for label in predictor.labels] for p in scored])
    if not np.isfinite(probs).all() or np.abs(probs.sum(axis=1) - 1).max() > 1e-3:
        raise DDIEvaluationError(f"{model_dir}: the ONNX model returns invalid probabilities")
    return {"smoke_pairs": len(pairs)}


def evaluate_ddi_dir(model_dir: Path, dataset: str, settings: Settings) -> dict:
    model_dir = Path(model_dir)
    if dataset not in DATASETS:
        raise DDIEvaluationError(f"unknown ddi data set {dataset!r}; choose one of {', '.join(DATASETS)}")
    meta_path = model_dir / "meta.json"
    if not meta_path.is_file():
        raise DDIEvaluationError(f"{model_dir} has no meta.json")
    meta = json.loads(meta_path.read_text())
    recorded = meta.get("metrics", {}).get(dataset)
    if not recorded or "model" not in recorded:
        raise DDIEvaluationError(f"version has no recorded {dataset!r} evaluation (was the split empty?)")
    model = recorded["model"]
    out: dict = {k: float(v) for k, v in model.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    out["n"] = int(model.get("n", 0))
    base = recorded.get(BASELINE)
    if base:
        for key in ("macro_f1", "major_auroc", "accuracy"):
            if key in model and key in base and math.isfinite(model[key]) and math.isfinite(base[key]):
                out[f"{key}_over_baseline"] = float(model[key] - base[key])
    labels = meta.get("labels", ["major", "moderate", "minor"])
    out["per_class"] = {label: {"recall": float(model[f"recall_{label}"])}
                        for label in labels if f"recall_{label}" in model}
    out["heldout_id"] = heldout_fingerprint(meta)
    out["evaluation"] = ("recorded by the training run on its held-out fit (the served model is refit on all "
                         "pairs); artefact loaded and scored")
    try:
        out.update(_smoke(model_dir))
    except DDIEvaluationError:
        raise
    except Exception as exc:  # onnxruntime / numpy errors from a damaged artefact
        raise DDIEvaluationError(f"{model_dir}: the artefact does not load or score: {exc}") from exc
    return out
