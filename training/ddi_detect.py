"""The interaction *detector* of the ``ddi-severity`` artifact: "does a reference list an interaction for this pair?"

The severity model (``training.ddi_train``) answers "if these two interact, how severe is it likely to be"; on its own
it cannot say whether a pair interacts.  This module trains a second, binary classifier on the same pair features
(``prescription_check.ddi_model.DrugContext``), calibrates it and picks the threshold the checker uses.

Data (``detector_pairs``)
    * Drugs: DDInter drugs with at least ``detector_min_degree`` listed interactions ("well documented").
    * Positives: every DDInter pair between them (any level, ``Unknown`` included: listed means interacting).
    * Negatives: pairs between them that **no source we have lists** - not DDInter, not the cited seed rows, not our
      curated pairs, not the class rules (the KB artefact's interactions) - and that DDInter *could* have listed: the
      shared DDInter copy holds only its files for ATC letters A, B, D, H, L, P, R, V, so a pair counts only when one
      of its drugs has a WHO ATC code in those letters (a pair of two C/J/M/N drugs may be listed in a file we lack).
      **This is an assumption and the negatives are noisy**: absence from these references is not proof of no
      interaction (DDInter covers the literature it curated).
    * A seeded uniform sample of ``detector_limit`` candidate pairs, so positives keep their natural share among
      well-documented, observable pairs.

Splits (as the severity model): random (80/20 over pairs); drug-disjoint with the severity run's held-out drugs
(one unseen / both unseen).  Each scenario holds out a validation part of its training side (random: 15 % of pairs;
drug-disjoint: pairs with one of 15 % further held-out drugs) on which an isotonic calibration is fitted and the
threshold chosen (the lowest calibrated probability at which precision >= ``detector_precision``); test figures use
that threshold.  The served detector is fitted the same way on all pairs (validation = 15 % random pairs + pairs with
one of 15 % held-out drugs); its threshold is the higher of the two validation thresholds, so it meets the precision
target on seen-drug and on unseen-drug validation pairs.

Pair features of a training pair never include its own label (out-of-fold, as the severity model); test and
validation positives are removed from the evidence their features are computed from.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from training import ddi_data

log = logging.getLogger(__name__)

COVERED_ATC_LETTERS = frozenset("ABDHLPRV")  # the DDInter per-letter files the shared copy holds
DETECTOR_FILE = "detector.onnx"
DETECTOR_META = "detector.json"


@dataclass
class DetectorData:
    pairs: pd.DataFrame  # drug_a, drug_b (DDInter names), y (1 listed, 0 unlisted), level ('' for negatives)
    da: np.ndarray  # feature rows
    db: np.ndarray
    y: np.ndarray
    drugs: list[str]  # the well-documented drugs
    stats: dict = field(default_factory=dict)


def _letters(table: ddi_data.DrugTable) -> dict[int, set[str]]:
    return {i: {c[0] for c in codes} for i, codes in enumerate(table.atc)}


def kb_listed_pairs(kb_interactions: dict, aliases: dict[str, int]) -> set[tuple[int, int]]:
    """Feature-row pairs of every pair the KB lists (seed, curated, class rules), through the drug table's aliases."""
    out = set()
    for key in kb_interactions:
        a, _, b = key.partition("|")
        ra, rb = aliases.get(a), aliases.get(b)
        if ra is not None and rb is not None and ra != rb:
            out.add((min(ra, rb), max(ra, rb)))
    return out


def detector_pairs(all_pairs: pd.DataFrame, table: ddi_data.DrugTable, min_degree: int, limit: int | None,
                   seed: int, exclude_rows: set[tuple[int, int]] | None = None) -> DetectorData:
    """Positives and assumed negatives among well-documented drugs (see the module docstring).  ``all_pairs``:
    ``ddi_data.load_pairs(include_unknown=True)``; ``exclude_rows``: feature-row pairs other sources list."""
    deg = pd.concat([all_pairs["drug_a"], all_pairs["drug_b"]]).value_counts()
    drugs = sorted(deg[deg >= min_degree].index)
    rows = np.array([table.aliases[d] for d in drugs], dtype=np.int64)
    letters = _letters(table)
    covered = np.array([bool(letters[r] & COVERED_ATC_LETTERS) for r in rows])
    i, j = np.triu_indices(len(drugs), 1)
    observable = covered[i] | covered[j]
    listed_idx = {}
    pos_index = {d: k for k, d in enumerate(drugs)}
    for a, b, lvl in zip(all_pairs["drug_a"], all_pairs["drug_b"], all_pairs["level"]):
        ka, kb_ = pos_index.get(a), pos_index.get(b)
        if ka is not None and kb_ is not None:
            listed_idx[(min(ka, kb_), max(ka, kb_))] = lvl
    n = len(drugs)
    flat = i * n + j
    listed_flat = np.array([a * n + b for a, b in listed_idx], dtype=np.int64)
    is_pos = np.isin(flat, listed_flat)
    keep = is_pos | observable  # a listed pair is a positive wherever it was found
    excluded = 0
    if exclude_rows:
        ra_all, rb_all = rows[i], rows[j]
        lo, hi = np.minimum(ra_all, rb_all), np.maximum(ra_all, rb_all)
        ex_flat = np.array([a * 10_000_000 + b for a, b in exclude_rows], dtype=np.int64)
        other = np.isin(lo * 10_000_000 + hi, ex_flat) & ~is_pos
        excluded = int((other & keep).sum())
        keep &= ~other
    cand = np.flatnonzero(keep)
    rng = np.random.default_rng(seed + 11)
    if limit and len(cand) > limit:
        cand = np.sort(rng.choice(cand, size=int(limit), replace=False))
    ii, jj = i[cand], j[cand]
    y = is_pos[cand].astype(np.int64)
    names = np.array(drugs)
    levels = [listed_idx.get((a, b), "") for a, b in zip(ii.tolist(), jj.tolist())]
    df = pd.DataFrame({"drug_a": names[ii], "drug_b": names[jj], "y": y, "level": levels})
    stats = {"drugs": len(drugs), "candidate_pairs": int(len(flat)), "observable_pairs": int(observable.sum()),
             "listed_pairs": int(is_pos.sum()), "excluded_other_sources": excluded,
             "kept_pairs": int(keep.sum()), "sampled_pairs": int(len(cand)), "positive_share": float(y.mean())}
    return DetectorData(df, rows[ii], rows[jj], y, drugs, stats)


# ----------------------------------------------------------------------------------------------------- fitting
def _fit(x, y, opts: dict):
    from sklearn.ensemble import HistGradientBoostingClassifier

    clf = HistGradientBoostingClassifier(
        max_iter=opts["max_iter"], learning_rate=opts["learning_rate"], max_leaf_nodes=opts["max_leaf_nodes"],
        min_samples_leaf=opts["min_samples_leaf"], l2_regularization=opts["l2_regularization"],
        early_stopping=True, validation_fraction=0.1, n_iter_no_change=opts["n_iter_no_change"],
        random_state=opts["seed"])
    clf.fit(x, y)
    return clf


def _pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    return lo.astype(np.int64) * 10_000_000 + hi


class DetectorFeatures:
    """Pair features for detector pairs, with the graded pairs of the severity run as evidence; held-out
    positives and held-out drugs are removed from the evidence."""

    def __init__(self, run):
        self.run = run
        self.gkey = _pair_keys(run.ra, run.rb)

    def context_mask(self, hide_keys: np.ndarray, hide_drugs: set[int] = frozenset()) -> np.ndarray:
        run = self.run
        mask = ~np.isin(self.gkey, hide_keys)
        if hide_drugs:
            hd = np.array(sorted(hide_drugs), dtype=np.int64)
            mask &= ~(np.isin(run.ra, hd) | np.isin(run.rb, hd))
        return mask

    def matrix(self, da, db, ctx_mask) -> np.ndarray:
        run = self.run
        prior = np.bincount(run.y[ctx_mask], minlength=3) / max(int(ctx_mask.sum()), 1)
        return run.fz.context(run.ra[ctx_mask], run.rb[ctx_mask], run.y[ctx_mask], prior).pair_features(da, db)

    def train_matrix(self, da, db, y, ctx_mask, seed: int, mask_rate: float, folds: int = 5) -> np.ndarray:
        """Out-of-fold: a training positive's own label is never in the evidence of its features."""
        run = self.run
        rng = np.random.default_rng(seed + 13)
        fold = rng.integers(0, folds, size=len(y))
        ua = rng.random(len(y)) < mask_rate
        ub = rng.random(len(y)) < mask_rate
        keys = _pair_keys(da, db)
        pos_fold = pd.Series(fold[y == 1], index=keys[y == 1])
        pos_fold = pos_fold[~pos_fold.index.duplicated()]
        gfold = pd.Series(self.gkey).map(pos_fold).fillna(-1).to_numpy().astype(np.int64)
        x = None
        for k in range(folds):
            inside = np.flatnonzero(fold == k)
            ctx = ctx_mask & (gfold != k)
            prior = np.bincount(run.y[ctx], minlength=3) / max(int(ctx.sum()), 1)
            part = run.fz.context(run.ra[ctx], run.rb[ctx], run.y[ctx], prior).pair_features(
                da[inside], db[inside], ua[inside], ub[inside])
            if x is None:
                x = np.empty((len(y), part.shape[1]), dtype=np.float32)
            x[inside] = part
        return x


def isotonic(raw: np.ndarray, y: np.ndarray):
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0)
    iso.fit(raw, y)
    return np.asarray(iso.X_thresholds_, dtype=np.float64), np.asarray(iso.y_thresholds_, dtype=np.float64)


def calibrate(raw: np.ndarray, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    return np.interp(raw, xs, ys)


def choose_threshold(p: np.ndarray, y: np.ndarray, target: float, min_flagged: int = 20) -> float:
    """The lowest calibrated probability t with precision(p >= t) >= target over at least ``min_flagged``
    pairs; 1.01 (never) when no t reaches it."""
    order = np.argsort(-p, kind="stable")
    ps, ys = p[order], y[order]
    tp = np.cumsum(ys)
    k = np.arange(1, len(ys) + 1)
    prec = tp / k
    best = 1.01
    # candidate cut points: the last index of each distinct probability (ties are flagged together)
    last = np.r_[np.flatnonzero(np.diff(ps) != 0), len(ps) - 1]
    for idx in last:
        if k[idx] >= min_flagged and prec[idx] >= target:
            best = float(ps[idx])
    return best


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import average_precision_score, brier_score_loss, roc_auc_score

    flag = p >= threshold
    tp = int((flag & (y == 1)).sum())
    out = {"n": int(len(y)), "positives": int(y.sum()), "positive_share": float(y.mean()) if len(y) else 0.0,
           "threshold": float(threshold), "flagged": int(flag.sum()),
           "precision": tp / int(flag.sum()) if flag.any() else float("nan"),
           "recall": tp / int(y.sum()) if y.any() else float("nan"),
           "negatives_flagged_share": float(flag[y == 0].mean()) if (y == 0).any() else float("nan"),
           "brier": float(brier_score_loss(y, p)) if len(y) else float("nan")}
    if 0 < y.sum() < len(y):
        out["aupr"] = float(average_precision_score(y, p))
        out["auroc"] = float(roc_auc_score(y, p))
    else:
        out["aupr"] = out["auroc"] = float("nan")
    return out


@dataclass
class DetectorResult:
    model: object
    calib_x: np.ndarray
    calib_y: np.ndarray
    threshold: float
    val: dict  # validation split -> metrics (calibrated, at the threshold)


def fit_calibrated(feat: DetectorFeatures, d: DetectorData, train: np.ndarray, vals: dict[str, np.ndarray],
                   hide_drugs: set[int], opts: dict, hide_pairs: np.ndarray | None = None) -> DetectorResult:
    """Fit on ``train`` (out-of-fold evidence; validation positives, ``hide_pairs``' positives and ``hide_drugs``
    hidden from the evidence), calibrate on the union of ``vals`` (isotonic) and take the highest
    per-validation-set threshold."""
    val_all = np.concatenate([*vals.values(), *([hide_pairs] if hide_pairs is not None else [])])
    hide = _pair_keys(d.da[val_all], d.db[val_all])[d.y[val_all] == 1]
    ctx = feat.context_mask(hide, hide_drugs)
    x_tr = feat.train_matrix(d.da[train], d.db[train], d.y[train], ctx, opts["seed"], opts["profile_mask_rate"])
    model = _fit(x_tr, d.y[train], opts)
    del x_tr
    raw = {k: model.predict_proba(feat.matrix(d.da[v], d.db[v], ctx))[:, 1] for k, v in vals.items()}
    xs, ys = isotonic(np.concatenate([raw[k] for k in vals]), np.concatenate([d.y[v] for v in vals.values()]))
    thresholds, val_metrics = {}, {}
    for k, v in vals.items():
        p = calibrate(raw[k], xs, ys)
        thresholds[k] = choose_threshold(p, d.y[v], opts["detector_precision"])
    threshold = max(thresholds.values())
    for k, v in vals.items():
        val_metrics[k] = binary_metrics(d.y[v], calibrate(raw[k], xs, ys), threshold) | {
            "own_threshold": thresholds[k]}
    return DetectorResult(model, xs, ys, threshold, val_metrics)


def run_detector(run, opts: dict, kb_interactions: dict | None) -> dict:
    """Scenarios (random, drug-disjoint) and the served detector; fills ``run.detector`` and returns metrics."""
    t0 = time.perf_counter()
    table = run.table
    all_pairs = ddi_data.load_pairs(run.settings, include_unknown=True)
    exclude = kb_listed_pairs(kb_interactions, table.aliases) if kb_interactions else None
    d = detector_pairs(all_pairs, table, opts["detector_min_degree"], opts["detector_limit"], opts["seed"], exclude)
    feat = DetectorFeatures(run)
    rng = np.random.default_rng(opts["seed"] + 17)
    metrics: dict = {"data": d.stats}
    curves: dict = {}
    n = len(d.y)
    # random scenario
    perm = rng.permutation(n)
    n_test = int(0.2 * n)
    test, rest = perm[:n_test], perm[n_test:]
    n_val = int(0.15 * len(rest))
    val, train = rest[:n_val], rest[n_val:]
    res = fit_calibrated(feat, d, train, {"random_val": val}, set(), opts, hide_pairs=test)
    hide = _pair_keys(d.da[np.r_[test, val]], d.db[np.r_[test, val]])[d.y[np.r_[test, val]] == 1]
    p = calibrate(res.model.predict_proba(feat.matrix(d.da[test], d.db[test], feat.context_mask(hide)))[:, 1],
                  res.calib_x, res.calib_y)
    metrics["random"] = binary_metrics(d.y[test], p, res.threshold) | {"val": res.val["random_val"]}
    curves["random"] = (d.y[test], p, res.threshold)
    # drug-disjoint scenario: the severity run's held-out drugs, then validation drugs among the rest
    held = {int(table.aliases[x]) for x in run.cold.get("test_drugs", []) if x in table.aliases}
    drug_rows = sorted(set(d.da.tolist()) | set(d.db.tolist()))
    rest_drugs = [r for r in drug_rows if r not in held]
    val_drugs = set(rng.choice(rest_drugs, size=int(0.15 * len(rest_drugs)), replace=False).tolist())
    in_held = np.isin(d.da, list(held)).astype(int) + np.isin(d.db, list(held)).astype(int)
    in_val = np.isin(d.da, list(val_drugs)).astype(int) + np.isin(d.db, list(val_drugs)).astype(int)
    train = np.flatnonzero((in_held == 0) & (in_val == 0))
    val = np.flatnonzero((in_held == 0) & (in_val == 1))
    res = fit_calibrated(feat, d, train, {"cold_val": val}, val_drugs | held, opts)
    ctx = feat.context_mask(np.zeros(0, dtype=np.int64), held | val_drugs)
    for name, k in (("one_unseen", 1), ("both_unseen", 2)):
        te = np.flatnonzero(in_held == k)
        if len(te) == 0:
            continue
        p = calibrate(res.model.predict_proba(feat.matrix(d.da[te], d.db[te], ctx))[:, 1], res.calib_x, res.calib_y)
        metrics[name] = binary_metrics(d.y[te], p, res.threshold) | {"val": res.val["cold_val"]}
        curves[name] = (d.y[te], p, res.threshold)
    # the served detector: all pairs; validation = random pairs + pairs with one held-out drug
    all_drugs = sorted(set(d.da.tolist()) | set(d.db.tolist()))
    vdrugs = set(rng.choice(all_drugs, size=int(0.15 * len(all_drugs)), replace=False).tolist())
    nv = np.isin(d.da, list(vdrugs)).astype(int) + np.isin(d.db, list(vdrugs)).astype(int)
    cold_val = np.flatnonzero(nv == 1)
    seen = np.flatnonzero(nv == 0)
    seen = rng.permutation(seen)
    k = int(0.15 * len(seen))
    rand_val, train = np.sort(seen[:k]), np.sort(seen[k:])
    final = fit_calibrated(feat, d, train, {"random_val": rand_val, "cold_val": cold_val}, vdrugs, opts)
    metrics["served"] = {"threshold": final.threshold, **{f"val_{k}": v for k, v in final.val.items()}}
    metrics["seconds"] = time.perf_counter() - t0
    run.detector = final
    run.detector_metrics = metrics
    run.detector_curves = curves
    run.detector_data = d
    return metrics


def parity_rows(run) -> np.ndarray:
    """Up to 2000 detector pairs' features as served (evidence = every graded pair), for the ONNX parity check."""
    d = run.detector_data
    rng = np.random.default_rng(run.opts["seed"])
    rows = rng.choice(len(d.y), size=min(2000, len(d.y)), replace=False)
    prior = np.bincount(run.y, minlength=3) / len(run.y)
    return run.fz.context(run.ra, run.rb, run.y, prior).pair_features(d.da[rows], d.db[rows])


def write_meta(run, model_dir: Path, parity: dict) -> None:
    """``detector.json``: calibration, threshold, figures; read by ``prescription_check.ddi_model``."""
    final = run.detector
    meta = {
        "task": "probability that a reference (DDInter, cited seed rows, curated pairs, class rules) lists an "
                "interaction for the pair; negatives are pairs of well-documented drugs no source lists (assumption: "
                "noisy negatives)",
        "calibration": "isotonic on validation pairs (random + one held-out drug); np.interp(raw, x, y)",
        "calibration_x": final.calib_x.tolist(), "calibration_y": final.calib_y.tolist(),
        "threshold": final.threshold, "target_precision": run.opts["detector_precision"],
        "max_predicted_severity": "moderate",
        "metrics": run.detector_metrics, "parity": parity,
    }
    (model_dir / DETECTOR_META).write_text(json.dumps(meta, indent=1, default=float))


def detector_plot(curves: dict, path: Path) -> Path:
    """Precision-recall per test split with the chosen threshold marked, and calibration (reliability) per split."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.5))
    for split, (y, p, thr) in curves.items():
        prec, rec, th = precision_recall_curve(y, p)
        axes[0].plot(rec, prec, label=split)
        flag = p >= thr
        if flag.any():
            axes[0].plot([y[flag].sum() / max(y.sum(), 1)], [y[flag].mean()], "o", color=axes[0].lines[-1].get_color())
        edges = np.linspace(0, 1, 11)
        idx = np.clip(np.digitize(p, edges[1:-1]), 0, 9)
        xs = [p[idx == b].mean() for b in range(10) if (idx == b).sum() >= 20]
        ys = [y[idx == b].mean() for b in range(10) if (idx == b).sum() >= 20]
        axes[1].plot(xs, ys, "o-", label=split)
    axes[0].axhline(0.8, color="k", ls=":", lw=1)
    axes[0].set_xlabel("recall")
    axes[0].set_ylabel("precision")
    axes[0].set_title("interaction detector: precision-recall (dot = served threshold)")
    axes[0].legend(fontsize=8)
    axes[1].plot([0, 1], [0, 1], "k:", lw=1)
    axes[1].set_xlabel("calibrated probability")
    axes[1].set_ylabel("observed share listed")
    axes[1].set_title("calibration on test pairs")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
