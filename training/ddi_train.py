"""Train, evaluate, export and register the ``ddi-severity`` model.

    python -m training ddi                      # full run (all DDInter pairs), registers a version
    python -m training ddi --alias champion     # ... and points the alias at it
    python -m training ddi --fast               # small subset, few trees (tests, smoke runs)

One run = three fits of the same recipe plus baselines, all logged to the MLflow experiment
``ddi-severity``:

* **random** split (pairs at random, 80/20): optimistic, both drugs were seen in training;
* **drug-disjoint** split (20 % of drugs held out): "one unseen" and "both unseen" test sets;
* **final** fit on every labelled pair: the artifact that is exported to ONNX and registered.

Model: scikit-learn ``HistGradientBoostingClassifier`` on order-free pair features
(``prescription_check.ddi_model.pair_matrix``) of per-drug features: WHO ATC levels 1-4,
Morgan + MACCS fingerprints, RDKit descriptors (``training.ddi_data``), plus each drug's
*interaction profile* (log count and severity mix of its known DDInter pairs; out-of-fold and
randomly masked in training so the model also learns the unseen-drug case).  Baselines in the same
run: majority class, and logistic regression on drug id + ATC.  Exported with skl2onnx and checked
against onnxruntime (max |probability difference|).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.triage_eval import expected_calibration_error
from prescription_check.ddi_model import DrugContext
from prescription_check.kb import KnowledgeBase
from serving.settings import Settings, get_settings
from training import ddi_data, ddi_detect, registry
from training.kb_build import ensure_kb
from training.sources import hashes_for
from training.weights import balanced_class_weights

log = logging.getLogger(__name__)

MODEL_NAME = "ddi-severity"
EXPERIMENT = "ddi-severity"
LABELS = list(ddi_data.LABELS)          # class ids 0..2 = major, moderate, minor
MAJOR = LABELS.index("major")


@dataclass
class DDIResult:
    run_id: str
    version: str | None
    model_dir: Path
    metrics: dict


# ----------------------------------------------------------------------------------------------
# pair features from a set of labelled pairs (out-of-fold for training pairs)
# ----------------------------------------------------------------------------------------------
class PairFeaturiser:
    """Builds ``prescription_check.ddi_model.DrugContext`` objects from labelled pairs and the pair
    feature matrices the classifier sees (the serving code computes the very same features)."""

    def __init__(self, feats: ddi_data.DrugFeatures, k: int = 10):
        self.feats = feats
        self.n_labelled = int(feats.in_ddinter.sum())
        self.knn_idx, self.knn_w = ddi_data.structural_neighbours(feats.morgan, self.n_labelled, k)

    def label_counts(self, ra, rb, y) -> np.ndarray:
        L = np.zeros((self.n_labelled, self.n_labelled, len(LABELS)), dtype=np.uint8)
        L[ra, rb, y] = 1
        L[rb, ra, y] = 1
        return L

    def context(self, ra, rb, y, prior):

        f = self.feats
        return DrugContext(f.binary, f.physchem, f.atc[2], f.atc[3], f.atc[4], self.knn_idx, self.knn_w,
                           self.label_counts(ra, rb, y), prior)

    def train_matrix(self, ra, rb, y, prior, seed, mask_rate, folds=5) -> np.ndarray:
        """Out-of-fold: a training pair's features come from the other folds' labels only (never
        its own); each drug slot is hidden ("unseen") with probability ``mask_rate``."""
        rng = np.random.default_rng(seed + 7)
        fold = rng.integers(0, folds, size=len(y))
        ua = rng.random(len(y)) < mask_rate
        ub = rng.random(len(y)) < mask_rate
        x = None
        for k in range(folds):
            inside = np.flatnonzero(fold == k)
            out = fold != k
            ctx = self.context(ra[out], rb[out], y[out], prior)
            part = ctx.pair_features(ra[inside], rb[inside], ua[inside], ub[inside])
            if x is None:
                x = np.empty((len(y), part.shape[1]), dtype=np.float32)
            x[inside] = part
        return x

    def test_matrix(self, ra, rb, train_ra, train_rb, train_y, prior) -> np.ndarray:
        return self.context(train_ra, train_rb, train_y, prior).pair_features(ra, rb)

    def feature_names(self, ctx) -> list[str]:
        return ctx.feature_names(self.feats.binary_names, list(ddi_data.PHYSCHEM))


# ----------------------------------------------------------------------------------------------
# models
# ----------------------------------------------------------------------------------------------
def sample_weights(y: np.ndarray, power: float) -> np.ndarray:
    """Per-sample weights: balanced class weights to the ``power`` (0 = unweighted, 1 = balanced)."""
    return (balanced_class_weights(y, len(LABELS)) ** power)[y]


def fit_hgb(x, y, opts: dict):
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=opts["max_iter"],
        learning_rate=opts["learning_rate"],
        max_leaf_nodes=opts["max_leaf_nodes"],
        min_samples_leaf=opts["min_samples_leaf"],
        l2_regularization=opts["l2_regularization"],
        max_features=opts["max_features"],
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=opts["n_iter_no_change"],
        random_state=opts["seed"],
    )
    clf.fit(x, y, sample_weight=sample_weights(y, opts["class_weight_power"]))
    return clf


class MajorityBaseline:
    """Always the most frequent training class; probabilities = training class shares."""

    def fit(self, y):
        self.prior = np.bincount(y, minlength=len(LABELS)) / len(y)
        return self

    def predict_proba(self, n: int) -> np.ndarray:
        return np.tile(self.prior, (n, 1))


class IdAtcLogReg:
    """Logistic regression on drug identity (one-hot of both drugs, summed) + ATC levels 1-4 multi-hot
    (summed).  A drug unseen in training has an all-zero identity part."""

    def __init__(self, feats: ddi_data.DrugFeatures, seed: int, class_weight_power: float = 0.0):
        n12 = len(feats.atc_vocab[1]) + len(feats.atc_vocab[2])
        self.atc = np.hstack([feats.binary[:, :n12], feats.atc[3], feats.atc[4]]).astype(np.float32)
        self.seed = seed
        self.power = class_weight_power

    def _x(self, ra, rb):
        from scipy import sparse

        n = len(ra)
        ids = sparse.csr_matrix(
            (np.ones(2 * n, dtype=np.float32), (np.repeat(np.arange(n), 2), np.column_stack([ra, rb]).ravel())),
            shape=(n, self.atc.shape[0]),
        )[:, self.id_cols]
        atc = sparse.csr_matrix(self.atc[ra] + self.atc[rb])
        return sparse.hstack([ids, atc]).tocsr()

    def fit(self, ra, rb, y):
        from sklearn.linear_model import LogisticRegression

        self.id_cols = np.unique(np.concatenate([ra, rb]))
        self.clf = LogisticRegression(C=1.0, max_iter=300, random_state=self.seed)
        self.clf.fit(self._x(ra, rb), y, sample_weight=sample_weights(y, self.power))
        return self

    def predict_proba(self, ra, rb):
        p = np.zeros((len(ra), len(LABELS)))
        p[:, self.clf.classes_] = self.clf.predict_proba(self._x(ra, rb))
        return p


# ----------------------------------------------------------------------------------------------
# metrics and plots
# ----------------------------------------------------------------------------------------------
def _renorm(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, 1e-7, 1)
    return p / p.sum(axis=1, keepdims=True)


def evaluate(y: np.ndarray, proba: np.ndarray) -> dict:
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        f1_score,
        log_loss,
        recall_score,
        roc_auc_score,
    )

    pred = proba.argmax(axis=1)
    out = {
        "n": int(len(y)),
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, labels=range(len(LABELS)), average="macro", zero_division=0)),
        "ece": expected_calibration_error(y, proba),
        "log_loss": float(log_loss(y, _renorm(proba), labels=range(len(LABELS)))),
    }
    rec = recall_score(y, pred, labels=range(len(LABELS)), average=None, zero_division=0)
    for label, r in zip(LABELS, rec):
        out[f"recall_{label}"] = float(r)
    major = (y == MAJOR).astype(int)
    if 0 < major.sum() < len(major):
        out["major_auroc"] = float(roc_auc_score(major, proba[:, MAJOR]))
        out["major_aupr"] = float(average_precision_score(major, proba[:, MAJOR]))
    else:
        out["major_auroc"] = out["major_aupr"] = float("nan")
    return out


def reliability_plot(curves: dict, path: Path) -> Path:
    """curves: {split: {model: (y, proba)}} -> one panel per split, top-label reliability."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 4.5), squeeze=False)
    edges = np.linspace(0, 1, 11)
    for ax, (split, models) in zip(axes[0], curves.items()):
        ax.plot([0, 1], [0, 1], "k:", lw=1)
        for name, (y, proba) in models.items():
            conf = proba.max(axis=1)
            correct = proba.argmax(axis=1) == y
            idx = np.clip(np.digitize(conf, edges[1:-1]), 0, 9)
            xs, ys = [], []
            for b in range(10):
                m = idx == b
                if m.sum() >= 20:
                    xs.append(conf[m].mean())
                    ys.append(correct[m].mean())
            ax.plot(xs, ys, "o-", label=f"{name} (ECE {expected_calibration_error(y, proba):.3f})")
        ax.set_title(split)
        ax.set_xlabel("predicted probability of top class")
        ax.set_ylabel("observed accuracy")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1)
        ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------
def export_onnx(clf, n_features: int, path: Path) -> Path:
    from skl2onnx import to_onnx
    from skl2onnx.common import tree_ensemble
    from skl2onnx.common.data_types import FloatTensorType

    # skl2onnx 1.20 passes HistGradientBoosting's missing-value flags as Python/NumPy booleans,
    # which onnx 1.23's make_attribute rejects ("Expected an int, got a boolean"): cast them.
    original = tree_ensemble.add_node

    def add_node(*args, nodes_missing_value_tracks_true=0, **kwargs):
        return original(*args, nodes_missing_value_tracks_true=int(nodes_missing_value_tracks_true), **kwargs)

    tree_ensemble.add_node = add_node
    try:
        onx = to_onnx(
            clf,
            initial_types=[("X", FloatTensorType([None, n_features]))],
            options={id(clf): {"zipmap": False}},
            target_opset={"": 17, "ai.onnx.ml": 3},
        )
    finally:
        tree_ensemble.add_node = original
    path.write_bytes(onx.SerializeToString())
    return path


def onnx_parity(path: Path, clf, x: np.ndarray) -> dict:
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = sess.run(["probabilities"], {"X": x.astype(np.float32)})[0]
    ref = clf.predict_proba(x)
    return {
        "parity_max_abs_prob_diff": float(np.abs(got - ref).max()),
        "parity_argmax_agreement": float((got.argmax(1) == ref.argmax(1)).mean()),
        "parity_n": int(len(x)),
    }


# ----------------------------------------------------------------------------------------------
# the run
# ----------------------------------------------------------------------------------------------
DEFAULTS = {
    "seed": 0,
    "test_frac": 0.2,
    "test_drug_frac": 0.2,
    "morgan_bits": 1024,
    "morgan_radius": 2,
    "knn": 10,
    "include_external_drugs": True,
    "profile_mask_rate": 0.25,
    "max_iter": 300,
    "learning_rate": 0.1,
    "max_leaf_nodes": 31,
    "min_samples_leaf": 40,
    "l2_regularization": 1.0,
    "max_features": 1.0,
    "n_iter_no_change": 20,
    "class_weight_power": 0.5,
    "baseline_class_weight_power": 0.0,
    "limit": None,
    "evaluate_severity": True,     # False: skip the severity model's split evaluations (the served fit is the same)
    # the interaction detector (training.ddi_detect): does a reference list an interaction for this pair?
    "detector": True,
    "detector_min_degree": 50,     # "well-documented" drugs: at least this many DDInter pairs
    "detector_limit": 120_000,     # pairs sampled (uniformly) among their observable pairs
    "detector_precision": 0.8,     # the served threshold meets this precision on validation pairs
    "detector_exclude_kb": True,   # drop candidate negatives any other KB source lists
}
FAST = {"morgan_bits": 256, "include_external_drugs": False, "max_iter": 30, "limit": 4000, "n_iter_no_change": 5,
        "detector_limit": 6000, "detector_exclude_kb": False}


def _resolve_opts(fast: bool, overrides: dict) -> dict:
    opts = dict(DEFAULTS)
    if fast:
        opts.update(FAST)
    opts.update({k: v for k, v in overrides.items() if v is not None})
    unknown = set(opts) - set(DEFAULTS)
    if unknown:
        raise TypeError(f"unknown train_ddi option(s): {sorted(unknown)}; known: {sorted(DEFAULTS)}")
    if opts["limit"] is not None and int(opts["limit"]) < 500:
        raise ValueError(f"limit={opts['limit']}: use at least 500 pairs (drug-disjoint test sets would be empty)")
    for key in ("test_frac", "test_drug_frac", "profile_mask_rate"):
        if not 0 <= float(opts[key]) < 1:
            raise ValueError(f"{key}={opts[key]} must be in [0, 1)")
    if int(opts["max_iter"]) < 1:
        raise ValueError(f"max_iter={opts['max_iter']} must be >= 1")
    return opts


_FEATURES: dict[tuple, tuple] = {}


def drug_features(settings: Settings, include_external: bool, morgan_bits: int, morgan_radius: int):
    """(DrugTable, DrugFeatures), cached per process: RDKit featurisation is the slow part of a small
    run and depends only on the (sha256-verified) source files and these options."""
    key = (str(settings.resolved_data_dir()), include_external, morgan_bits, morgan_radius)
    if key not in _FEATURES:
        table = ddi_data.build_drug_table(settings, include_external=include_external)
        _FEATURES[key] = (table, ddi_data.featurise(table, morgan_bits=morgan_bits, morgan_radius=morgan_radius))
    return _FEATURES[key]


# ----------------------------------------------------------------------------------------------
# pipeline steps
# ----------------------------------------------------------------------------------------------
@dataclass
class DDIRun:
    """What the steps of one ddi-severity run share (see ``train_ddi``)."""

    settings: Settings
    opts: dict  # resolved options (DEFAULTS, FAST, overrides)
    fast: bool
    started: float  # time.perf_counter() at the start of the run
    pairs: pd.DataFrame  # the labelled pairs used (a seeded subset when ``limit`` is set)
    n_all: int  # labelled pairs before ``limit``
    feats: ddi_data.DrugFeatures
    fz: PairFeaturiser
    ra: np.ndarray  # drug row of each pair's drug_a
    rb: np.ndarray  # drug row of each pair's drug_b
    y: np.ndarray  # class id of each pair (LABELS)
    hgb_opts: dict  # the fit_hgb options
    timings: dict[str, float] = field(default_factory=dict)
    random_train: np.ndarray | None = None  # random split: pair indices
    random_test: np.ndarray | None = None
    cold: dict = field(default_factory=dict)  # drug-disjoint split (ddi_data.drug_disjoint_split)
    scenarios: dict = field(default_factory=dict)  # scenario -> (train indices, {test split: indices})
    metrics: dict[str, dict] = field(default_factory=dict)  # test split -> model -> evaluate()
    curves: dict[str, dict] = field(default_factory=dict)  # test split -> model -> (y, proba), for the plot
    n_iters: dict[str, int] = field(default_factory=dict)  # scenario / "final" -> boosting iterations
    final: object = None  # the served classifier, fitted on every pair
    prior: np.ndarray | None = None  # class shares of every pair
    x_all: np.ndarray | None = None  # the final model's (out-of-fold) training matrix; dropped after export
    n_features: int = 0
    tracking_uri: str = ""
    run_id: str | None = None
    build: Path | None = None  # the run's folder: model/, splits.npz, reliability.png, report.md
    model_dir: Path | None = None  # the served artifact folder
    parity: dict = field(default_factory=dict)
    data_hashes: dict = field(default_factory=dict)
    version: str | None = None
    table: object = None  # ddi_data.DrugTable (names, ATC codes, aliases) the features were built from
    detector: object = None  # ddi_detect.DetectorResult: the served interaction detector
    detector_metrics: dict = field(default_factory=dict)  # ddi_detect.run_detector's figures
    detector_curves: dict = field(default_factory=dict)
    detector_data: object = None
    detector_parity: dict = field(default_factory=dict)


def prepare_data(settings: Settings, opts: dict, fast: bool, started: float) -> DDIRun:
    """Labelled DDInter pairs (a seeded subset when ``limit`` is set), the per-drug features (cached per
    process), each pair as drug rows + class id, and the pair featuriser."""
    seed = opts["seed"]
    pairs = ddi_data.load_pairs(settings)
    n_all = len(pairs)
    if opts["limit"]:
        pairs = pairs.sample(n=min(int(opts["limit"]), len(pairs)), random_state=seed).sort_values(
            ["drug_a", "drug_b"]).reset_index(drop=True)
    table, feats = drug_features(settings, opts["include_external_drugs"], opts["morgan_bits"], opts["morgan_radius"])
    timings = {"data_s": time.perf_counter() - started}
    ra = np.array([table.aliases[n] for n in pairs["drug_a"]], dtype=np.int64)
    rb = np.array([table.aliases[n] for n in pairs["drug_b"]], dtype=np.int64)
    y = pairs["level"].map({label: i for i, label in enumerate(LABELS)}).to_numpy().astype(np.int64)
    fz = PairFeaturiser(feats, opts["knn"])
    hgb_opts = {k: opts[k] for k in ("max_iter", "learning_rate", "max_leaf_nodes", "min_samples_leaf",
                                     "l2_regularization", "max_features", "n_iter_no_change",
                                     "class_weight_power", "seed")}
    return DDIRun(settings, opts, fast, started, pairs, n_all, feats, fz, ra, rb, y, hgb_opts, timings, table=table)


def split_pairs(run: DDIRun) -> None:
    """The random split (pairs at random) and the drug-disjoint split (held-out drugs), as the scenarios the
    evaluation fits: scenario -> (training pairs, {test split: test pairs})."""
    seed = run.opts["seed"]
    run.random_train, run.random_test = ddi_data.random_split(len(run.pairs), seed, run.opts["test_frac"])
    run.cold = ddi_data.drug_disjoint_split(run.pairs, seed, run.opts["test_drug_frac"])
    run.scenarios = {
        "random": (run.random_train, {"random": run.random_test}),
        "drug_disjoint": (run.cold["train"], {"one_unseen": run.cold["one_unseen"],
                                              "both_unseen": run.cold["both_unseen"]}),
    }


def fit_scenario(run: DDIRun, scenario: str, tr: np.ndarray, tests: dict[str, np.ndarray]) -> None:
    """One scenario: the model (on out-of-fold pair features) and both baselines (majority class, logistic
    regression on drug id + ATC) fitted on its training pairs, evaluated on each non-empty test split."""
    ts = time.perf_counter()
    opts, fz, ra, rb, y = run.opts, run.fz, run.ra, run.rb, run.y
    seed = opts["seed"]
    prior = np.bincount(y[tr], minlength=len(LABELS)) / len(tr)
    x_tr = fz.train_matrix(ra[tr], rb[tr], y[tr], prior, seed, opts["profile_mask_rate"])
    model = fit_hgb(x_tr, y[tr], run.hgb_opts)
    run.n_iters[scenario] = int(model.n_iter_)
    del x_tr
    maj = MajorityBaseline().fit(y[tr])
    lr = IdAtcLogReg(run.feats, seed, opts["baseline_class_weight_power"]).fit(ra[tr], rb[tr], y[tr])
    for split_name, te in tests.items():
        if len(te) == 0:
            continue
        x_te = fz.test_matrix(ra[te], rb[te], ra[tr], rb[tr], y[tr], prior)
        probs = {
            "model": model.predict_proba(x_te),
            "majority": maj.predict_proba(len(te)),
            "logreg_id_atc": lr.predict_proba(ra[te], rb[te]),
        }
        run.metrics[split_name] = {name: evaluate(y[te], p) for name, p in probs.items()}
        run.curves[split_name] = {name: (y[te], p) for name, p in probs.items() if name != "majority"}
    run.timings[f"{scenario}_s"] = time.perf_counter() - ts
    log.info("ddi %s done in %.0fs", scenario, run.timings[f"{scenario}_s"])


def evaluate_scenarios(run: DDIRun) -> None:
    """Every scenario of ``split_pairs`` in turn (``fit_scenario``): random, then drug-disjoint (skipped with
    ``evaluate_severity=False``: a run that only needs the served fit and the detector)."""
    if not run.opts["evaluate_severity"]:
        log.info("severity split evaluations skipped (evaluate_severity=False)")
        return
    for scenario, (tr, tests) in run.scenarios.items():
        fit_scenario(run, scenario, tr, tests)


def fit_final(run: DDIRun) -> None:
    """The served model, fitted on every labelled pair (its training matrix is kept for the parity check)."""
    ts = time.perf_counter()
    run.prior = np.bincount(run.y, minlength=len(LABELS)) / len(run.y)
    run.x_all = run.fz.train_matrix(run.ra, run.rb, run.y, run.prior, run.opts["seed"], run.opts["profile_mask_rate"])
    run.final = fit_hgb(run.x_all, run.y, run.hgb_opts)
    run.n_iters["final"] = int(run.final.n_iter_)
    run.timings["final_s"] = time.perf_counter() - ts
    run.n_features = run.x_all.shape[1]


def fit_detector(run: DDIRun) -> None:
    """The interaction detector (``training.ddi_detect``): its scenarios and the served, calibrated model."""
    if not run.opts["detector"]:
        return
    kb_interactions = None
    if run.opts["detector_exclude_kb"]:
        log.info("%s", ensure_kb(run.settings))
        kb_interactions = KnowledgeBase.load(run.settings.resolved_kb_path()).interactions
    ts = time.perf_counter()
    ddi_detect.run_detector(run, {**run.hgb_opts, **{k: run.opts[k] for k in run.opts if k.startswith("detector")},
                                  "profile_mask_rate": run.opts["profile_mask_rate"]}, kb_interactions)
    run.timings["detector_s"] = time.perf_counter() - ts


def export(run: DDIRun) -> None:
    """The artifact folder ``<work_dir>/ddi-builds/<run id>/model``: the ONNX model and its onnxruntime parity on
    up to 2000 training rows, the served arrays and labels.json."""
    run.build = run.settings.work_dir / "ddi-builds" / run.run_id
    run.model_dir = run.build / "model"
    run.model_dir.mkdir(parents=True, exist_ok=True)
    export_onnx(run.final, run.n_features, run.model_dir / "model.onnx")
    rng = np.random.default_rng(run.opts["seed"])
    check_rows = rng.choice(len(run.x_all), size=min(2000, len(run.x_all)), replace=False)
    run.parity = onnx_parity(run.model_dir / "model.onnx", run.final, run.x_all[check_rows])
    run.x_all = None  # the largest array of the run: not needed any more

    # served arrays: static drug features + the labels of ALL pairs (derived features are
    # recomputed from them at load time by the same DrugContext code)
    f, fz = run.feats, run.fz
    keys = sorted(f.aliases)
    np.savez_compressed(
        run.model_dir / "drug_features.npz",
        names=np.array(f.names), binary=f.binary, physchem=f.physchem,
        atc2=f.atc[2], atc3=f.atc[3], atc4=f.atc[4], knn_idx=fz.knn_idx, knn_w=fz.knn_w,
        label_counts=fz.label_counts(run.ra, run.rb, run.y), prior=run.prior,
        alias_keys=np.array(keys), alias_rows=np.array([f.aliases[k] for k in keys], dtype=np.int64),
    )
    (run.model_dir / "labels.json").write_text(json.dumps(LABELS))
    if run.detector is not None:
        path = export_onnx(run.detector.model, run.n_features, run.model_dir / ddi_detect.DETECTOR_FILE)
        run.detector_parity = onnx_parity(path, run.detector.model, ddi_detect.parity_rows(run))
        ddi_detect.write_meta(run, run.model_dir, run.detector_parity)


def write_meta(run: DDIRun) -> None:
    """meta.json (task, features, options, metrics, parity, data hashes, licence, library versions) and
    feature_names.json in the artifact folder."""
    fz, feats = run.fz, run.feats
    final_ctx = fz.context(run.ra, run.rb, run.y, run.prior)
    has = final_ctx.has_profile
    run.data_hashes = hashes_for(ddi_data.data_files())
    meta = {
        "model_name": MODEL_NAME,
        "run_id": run.run_id,
        "labels": LABELS,
        "task": "severity of a DDInter-style interaction given that one exists (major/moderate/minor); "
                "not trained to detect whether a pair interacts",
        "estimator": "sklearn HistGradientBoostingClassifier",
        "n_features": int(run.n_features),
        "feature_names_file": "feature_names.json",
        "pair_features": "sum of binary drug features; fmin/fmax of continuous ones "
                         "(prescription_check.ddi_model.pair_matrix)",
        "drug_features": feats.spec | {"profile_smoothing": 2.0, "knn": int(fz.knn_idx.shape[1])},
        "prior": run.prior.tolist(),
        "n_drugs_in_training_labels": int(has.sum()),
        "n_pairs": int(len(run.pairs)),
        "n_pairs_all_labelled": int(run.n_all),
        "unknown_level": "excluded (DDInter 'Unknown' = interaction listed, severity not given)",
        "negatives": "severity model: none; interaction detector (detector.onnx): pairs of well-documented drugs "
                     "that no source lists, an assumption (noisy negatives)",
        "detector": ({"threshold": run.detector.threshold, "metrics": run.detector_metrics,
                      "parity": run.detector_parity} if run.detector is not None else None),
        "options": run.opts,
        "n_iter": run.n_iters,
        "metrics": run.metrics,
        "parity": run.parity,
        "data_sha256": run.data_hashes,
        "licence": "trained on DDInter (CC BY-NC-SA 4.0) and WHO ATC (non-commercial): non-commercial use only",
        "versions": _versions(),
    }
    (run.model_dir / "meta.json").write_text(json.dumps(meta, indent=1, default=_json_default))
    (run.model_dir / "feature_names.json").write_text(json.dumps(fz.feature_names(final_ctx)))


def write_report(run: DDIRun) -> None:
    """Beside the artifact folder: the splits (splits.npz, held-out drugs included), the reliability plot and
    report.md."""
    pairs, cold, build = run.pairs, run.cold, run.build
    np.savez_compressed(
        build / "splits.npz", drug_a=pairs["drug_a"].to_numpy(dtype=str), drug_b=pairs["drug_b"].to_numpy(dtype=str),
        level=run.y, random_train=run.random_train, random_test=run.random_test, cold_train=cold["train"],
        one_unseen=cold["one_unseen"], both_unseen=cold["both_unseen"], test_drugs=np.array(cold["test_drugs"]),
    )
    if run.curves:
        reliability_plot(run.curves, build / "reliability.png")
    report = render_report(run.metrics, run.parity, run.n_iters, run.opts, run.timings, len(pairs), run.n_all, cold)
    if run.detector is not None:
        ddi_detect.detector_plot(run.detector_curves, build / "detector.png")
        report += detector_report(run.detector_metrics)
    (build / "report.md").write_text(report)


def log_run(run: DDIRun) -> None:
    """Options, sizes, flat metrics (per split and model, parity, timings, iterations), data hashes, the report,
    plot, splits and the artifact folder on the MLflow run."""
    import mlflow

    opts, build = run.opts, run.build
    mlflow.log_params({k: str(v) for k, v in opts.items()})
    mlflow.log_params({"n_features": run.n_features, "n_pairs": len(run.pairs), "n_drug_rows": len(run.feats.names),
                       "tracking_uri": run.tracking_uri})
    flat = {f"{split_name}.{name}.{k}": v for split_name, ms in run.metrics.items() for name, m in ms.items()
            for k, v in m.items() if isinstance(v, float) and np.isfinite(v)}
    flat.update(run.parity)
    flat.update({f"time.{k}": v for k, v in run.timings.items()})
    flat.update({f"n_iter.{k}": float(v) for k, v in run.n_iters.items()})
    mlflow.log_metrics(flat)
    mlflow.set_tags({f"data.{k}": v[:16] for k, v in run.data_hashes.items()} | {"fast": str(run.fast)})
    mlflow.log_dict(run.data_hashes, "data_sha256.json")
    mlflow.log_artifact(str(build / "report.md"))
    if (build / "reliability.png").exists():
        mlflow.log_artifact(str(build / "reliability.png"), "plots")
    if run.detector is not None:
        mlflow.log_metrics({f"detector.{split}.{k}": float(v) for split, m in run.detector_metrics.items()
                            if split in {"random", "one_unseen", "both_unseen"} for k, v in m.items()
                            if isinstance(v, (int, float)) and np.isfinite(v)}
                           | {"detector.threshold": run.detector.threshold}
                           | {f"detector.{k}": v for k, v in run.detector_parity.items()})
        mlflow.log_dict(run.detector_metrics, "detector_metrics.json")
        mlflow.log_artifact(str(build / "detector.png"), "plots")
    mlflow.log_artifact(str(build / "splits.npz"), "splits")
    mlflow.log_artifacts(str(run.model_dir), "model")


def register_version(run: DDIRun, alias: str | None) -> None:
    """The logged artifact as a new version of ``ddi-severity`` (tagged with its unseen-drug macro-F1 and
    parity); ``alias`` moved to it when given."""
    cold_metrics = {s: run.metrics[s]["model"] for s in ("one_unseen", "both_unseen", "random") if s in run.metrics}
    run.version = registry.register_run_artifact(
        MODEL_NAME, run.run_id, "model",
        tags={"one_unseen_macro_f1": f"{cold_metrics.get('one_unseen', {}).get('macro_f1', float('nan')):.4f}",
              "both_unseen_macro_f1": f"{cold_metrics.get('both_unseen', {}).get('macro_f1', float('nan')):.4f}",
              "parity_max_abs_prob_diff": f"{run.parity['parity_max_abs_prob_diff']:.2e}", "fast": run.fast},
    )
    if alias:
        registry.set_alias(MODEL_NAME, alias, run.version)


def result(run: DDIRun) -> DDIResult:
    """The model's metrics per test split, parity and timings (``all``: every model's metrics)."""
    flat_out = {split_name: ms["model"] for split_name, ms in run.metrics.items()}
    flat_out |= {"parity": run.parity, "timings": run.timings}
    return DDIResult(run_id=run.run_id, version=run.version, model_dir=run.model_dir,
                     metrics=flat_out | {"all": run.metrics})


def train_ddi(settings: Settings | None = None, *, fast: bool = False, alias: str | None = None,
              register: bool = True, **overrides) -> DDIResult:
    """The whole run as named steps: prepare data -> split -> fit and evaluate each split's model and baselines ->
    fit the final model -> export (ONNX + parity, served arrays) -> meta -> report -> log -> register
    (``overrides`` are DEFAULTS keys)."""
    import mlflow

    settings = settings or get_settings()
    opts = _resolve_opts(fast, overrides)
    started = time.perf_counter()
    run = prepare_data(settings, opts, fast, started)
    split_pairs(run)
    evaluate_scenarios(run)
    fit_final(run)
    fit_detector(run)
    run.tracking_uri = registry.configure(settings)
    exp_id = registry.experiment_id(EXPERIMENT, settings)
    with mlflow.start_run(experiment_id=exp_id, run_name="ddi-fast" if fast else "ddi") as active:
        run.run_id = active.info.run_id
        export(run)
        write_meta(run)
        write_report(run)
        log_run(run)
        if register:
            register_version(run, alias)
    run.timings["total_s"] = time.perf_counter() - run.started
    return result(run)


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, Path):
        return str(o)
    raise TypeError(type(o))


def _versions() -> dict:
    import onnxruntime
    import skl2onnx
    import sklearn
    from rdkit import __version__ as rdkit_version

    return {"python": platform.python_version(), "sklearn": sklearn.__version__, "skl2onnx": skl2onnx.__version__,
            "onnxruntime": onnxruntime.__version__, "rdkit": rdkit_version, "numpy": np.__version__,
            "pandas": pd.__version__}


def detector_report(m: dict) -> str:
    lines = ["\n## Interaction detector (does a reference list an interaction for the pair?)\n",
             "data: " + json.dumps(m.get("data", {})) + "\n",
             f"served threshold (calibrated p): {m.get('served', {}).get('threshold', float('nan')):.3f}\n",
             "| split | n | positive share | AUPR | AUROC | precision @thr | recall @thr | negatives flagged | "
             "threshold | Brier |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("random", "one_unseen", "both_unseen"):
        if split in m:
            r = m[split]
            lines.append(f"| {split} | {r['n']} | {r['positive_share']:.3f} | {r['aupr']:.3f} | {r['auroc']:.3f} | "
                         f"{r['precision']:.3f} | {r['recall']:.3f} | {r['negatives_flagged_share']:.3f} | "
                         f"{r['threshold']:.3f} | {r['brier']:.3f} |")
    for k, v in m.get("served", {}).items():
        if isinstance(v, dict):
            lines.append(f"\nserved detector, {k}: precision {v['precision']:.3f}, recall {v['recall']:.3f}, "
                         f"AUPR {v['aupr']:.3f}, own threshold {v['own_threshold']:.3f} (n={v['n']})")
    return "\n".join(lines) + "\n"


def render_report(metrics, parity, n_iters, opts, timings, n_pairs, n_all, cold) -> str:
    lines = ["# ddi-severity run report\n", f"pairs used: {n_pairs} of {n_all} labelled (Unknown excluded); "
             f"held-out drugs: {len(cold['test_drugs'])}; trees (iterations): {n_iters}\n",
             "| split | model | n | accuracy | macro-F1 | recall major | recall moderate | recall minor | "
             "major AUROC | major AUPR | ECE |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for split in ("random", "one_unseen", "both_unseen"):
        for name, m in metrics.get(split, {}).items():
            lines.append(
                f"| {split} | {name} | {m['n']} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} | {m['recall_major']:.3f} | "
                f"{m['recall_moderate']:.3f} | {m['recall_minor']:.3f} | {m['major_auroc']:.3f} | "
                f"{m['major_aupr']:.3f} | {m['ece']:.3f} |")
    lines.append(f"\nONNX parity: max |prob diff| {parity['parity_max_abs_prob_diff']:.2e}, argmax agreement "
                 f"{parity['parity_argmax_agreement']:.4f} on {parity['parity_n']} rows\n")
    lines.append("timings (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()))
    lines.append("\noptions: " + json.dumps(opts))
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training ddi", description=__doc__.split("\n\n")[0])
    parser.add_argument("--fast", action="store_true", help="small subset and few trees (smoke test)")
    parser.add_argument("--limit", type=int, help="use at most this many labelled pairs")
    parser.add_argument("--seed", type=int)
    parser.add_argument("--max-iter", type=int, help="boosting iterations (early stopping may stop sooner)")
    parser.add_argument("--class-weight-power", type=float, help="0 unweighted .. 1 balanced")
    parser.add_argument("--skip-severity-eval", action="store_true",
                        help="skip the severity model's random / drug-disjoint evaluations (saves ~2/3 of its time; "
                             "the served model and the interaction detector are trained as always)")
    parser.add_argument("--detector-limit", type=int, help="pairs sampled for the interaction detector")
    parser.add_argument("--alias", help="point this registry alias (e.g. champion) at the new version")
    parser.add_argument("--no-register", action="store_true", help="log the run but register no version")
    parser.add_argument("--threads", type=int, default=1,
                        help="OpenMP threads for training (default 1: on a shared, loaded machine more threads "
                        "made HistGradientBoosting ~10x slower)")
    args = parser.parse_args(argv)
    os.environ.setdefault("OMP_NUM_THREADS", str(args.threads))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)
    except ImportError:  # pragma: no cover
        pass
    result = train_ddi(
        fast=args.fast, alias=args.alias, register=not args.no_register, limit=args.limit, seed=args.seed,
        max_iter=args.max_iter, class_weight_power=args.class_weight_power,
        evaluate_severity=False if args.skip_severity_eval else None, detector_limit=args.detector_limit,
    )
    print((result.model_dir.parent / "report.md").read_text())
    print(f"run {result.run_id}  version {result.version}  model {result.model_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
