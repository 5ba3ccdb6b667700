"""Drift and quality monitoring of live triage traffic (issue 15).

    python -m training monitor --since 2026-12-01 [--until 2026-12-08] [--window 1D] --out var/monitor/2026-w49
        [--reference FILE | --reference-version N] [--fail-on-drift]

Reads the answers the service recorded (``triage_records``: never the text unless it was kept, only what the
service derived from it) in ``[since, until)``, cuts them into windows (pandas frequency, default one day) and
writes ``report.json`` and ``report.md``: per window the number of answers, the distribution of predicted
centers and urgency levels, mean and quantiles of the top-center confidence, the hand-off rate, text length,
the share of texts mostly not in Latin script and the declared languages, red-flag rate, the outcome accuracy
where outcomes arrived; and drift against the training reference of the model that answered.

The reference is ``reference.json`` of that model's artefact (written by training: the same statistics and a
sample of embedding sketches over its validation texts); ``--reference FILE`` names another one,
``--reference-version N`` takes version N's.

Drift tests per window (each flags when past its threshold, ``THRESHOLDS``; docs/lifecycle.md explains them):
- ``confidence``, ``text_chars``, ``latin_share``: two-sample Kolmogorov-Smirnov (scipy) against the reference
  sample, flagged at p < 0.01 *and* a statistic >= 0.2 (large samples make tiny shifts significant);
- ``predicted_center``: Jensen-Shannon distance (base 2) between the window's and the reference's center
  shares, flagged at >= 0.3 *and* a chi-square test of homogeneity of the counts at p < 0.01 (with 19 centers
  and a window of 80 answers, sampling noise alone gives a distance near 0.3-0.4);
- ``handoff_rate``: flagged when it moved by >= 0.15 (absolute) from the reference's *and* a 2x2 chi-square test
  says p < 0.01;
- ``nonlatin_share``: flagged when it rose by >= 0.10 from the reference's *and* p < 0.01 (same test);
- ``embedding``: a domain classifier (logistic regression on the 16-number embedding sketches, 5-fold
  cross-validated ROC AUC: can it tell the window from the reference?) flagged at AUC >= 0.75, plus the mean
  shift (mean |window mean - reference mean| / reference std; also the service's
  ``rxt_triage_live_embedding_shift`` gauge) flagged at >= 0.5.
A window with fewer than ``MIN_WINDOW`` answers is reported but not tested.  Every test needs an effect size
*and* significance: the first runs of the synthetic-shift test (tests/training/test_feedback_loop.py) flagged
its unshifted English day on the center mix and then on the hand-off rate with effect-size thresholds alone
(sampling noise at 80 answers against a reference sample of ~95); the chi-square requirements were added then,
the effect-size thresholds were not changed.

Why not Evidently: the library the issue suggests was tried first.  evidently 0.7.23 (the newest release pip
finds here) installs beside our pins but fails at import under pandas 3.1: it imports
``pandas.core.dtypes.common.infer_dtype_from_object``, which pandas 3 removed.  The tests above are the ones
Evidently itself applies by default (K-S for numeric columns, Jensen-Shannon for categories, a domain classifier
for embeddings), computed with scipy and scikit-learn, which the ``train`` extra already has.
"""

from __future__ import annotations

import argparse
import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from sqlalchemy import select

from serving.db.models import TriageOutcome, TriageRecord
from serving.db.session import session_scope
from serving.feedback import NON_LATIN, embedding_shift, load_reference
from serving.settings import Settings, get_settings
from training import registry

MODEL_NAME = "triage-classifier"
MIN_WINDOW = 30
THRESHOLDS = {
    "ks_p": 0.01,
    "ks_statistic": 0.2,
    "center_js": 0.3,
    "center_chi2_p": 0.01,
    "handoff_delta": 0.15,
    "proportion_p": 0.01,
    "nonlatin_delta": 0.10,
    "embedding_auc": 0.75,
    "embedding_shift": 0.5,
}


class MonitorError(ValueError):
    pass


def _when(value: str | None) -> datetime | None:
    if not value:
        return None
    when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def load_records(settings: Settings, since: datetime, until: datetime | None = None) -> pd.DataFrame:
    q = select(TriageRecord, TriageOutcome.actual_center).outerjoin(
        TriageOutcome, TriageOutcome.request_id == TriageRecord.request_id).where(TriageRecord.created_at >= since)
    if until is not None:
        q = q.where(TriageRecord.created_at < until)
    with session_scope(settings) as session:
        rows = [{"created_at": r.created_at, "model_version": r.model_version, "center": r.predicted_center,
                 "answered_center": r.answered_center, "urgency": r.urgency, "confidence": r.confidence,
                 "abstained": bool(r.abstained), "text_chars": r.text_chars, "latin_share": r.latin_share,
                 "language": r.language or "unsaid", "red_flags": r.red_flags, "sketch": r.sketch,
                 "actual_center": actual}
                for r, actual in session.execute(q.order_by(TriageRecord.created_at))]
    frame = pd.DataFrame(rows)
    if not frame.empty:
        frame["created_at"] = pd.to_datetime(frame["created_at"], utc=True)
    return frame


def reference_for(settings: Settings, version: str | None = None, path: str | Path | None = None) -> dict:
    if path is not None:
        try:
            return json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise MonitorError(f"cannot read reference {path}: {exc}") from exc
    if version is None or version.startswith("local:"):
        raise MonitorError(f"no registered model version to take the reference from ({version!r}); pass --reference")
    folder, _ = registry.resolve_model_dir(f"models:/{MODEL_NAME}/{version}", settings)
    ref = load_reference(folder)
    if ref is None:
        raise MonitorError(f"{MODEL_NAME} version {version} has no reference.json (trained before issue 15); retrain "
                           f"it or pass --reference FILE")
    return ref


def _shares(values) -> dict[str, float]:
    s = pd.Series(list(values))
    return {str(k): round(float(v), 4) for k, v in s.value_counts(normalize=True).sort_index().items()}


def _ks(a, b) -> dict:
    from scipy.stats import ks_2samp

    result = ks_2samp(np.asarray(a, float), np.asarray(b, float))
    statistic, p = float(result.statistic), float(result.pvalue)
    return {"statistic": round(statistic, 4), "p_value": p,
            "drift": bool(p < THRESHOLDS["ks_p"] and statistic >= THRESHOLDS["ks_statistic"])}


def _js(window: dict[str, float], reference: dict[str, float]) -> float:
    from scipy.spatial.distance import jensenshannon

    keys = sorted(set(window) | set(reference))
    return float(jensenshannon([window.get(k, 0.0) for k in keys], [reference.get(k, 0.0) for k in keys], base=2))


def _chi2_p(window, reference) -> float | None:
    """Chi-square test of homogeneity of the window's and the reference sample's center counts."""
    from scipy.stats import chi2_contingency

    w, r = pd.Series(list(window)).value_counts(), pd.Series(list(reference)).value_counts()
    keys = sorted(set(w.index) | set(r.index))
    if len(keys) < 2 or not len(r):
        return None
    return float(chi2_contingency([[int(w.get(k, 0)) for k in keys], [int(r.get(k, 0)) for k in keys]]).pvalue)


def _proportion_p(window, reference) -> float | None:
    """Chi-square test (2x2) that a yes/no share is the same in the window and the reference sample."""
    from scipy.stats import chi2_contingency

    if reference is None or not len(reference):
        return None
    w, r = [bool(x) for x in window], [bool(x) for x in reference]
    table = [[sum(w), len(w) - sum(w)], [sum(r), len(r) - sum(r)]]
    if min(sum(col) for col in zip(*table)) == 0:  # a column of zeros: no difference to test
        return 1.0
    return float(chi2_contingency(table).pvalue)


def _domain_auc(live: np.ndarray, ref: np.ndarray, seed: int = 15) -> float | None:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    if len(live) < 10 or len(ref) < 10:
        return None
    x = np.vstack([live, ref])
    y = np.r_[np.ones(len(live)), np.zeros(len(ref))]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = cross_val_predict(LogisticRegression(max_iter=1000, class_weight="balanced"), x, y, cv=folds,
                               method="predict_proba")[:, 1]
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, scores))


def window_report(part: pd.DataFrame, ref: dict) -> dict:
    """Statistics of one window and its drift tests against ``ref``."""
    sample = ref.get("sample", {})
    out = {
        "n": int(len(part)),
        "model_versions": {str(k): int(v) for k, v in part["model_version"].value_counts().items()},
        "center_share": _shares(part["center"]),
        "urgency_share": _shares(part["urgency"]),
        "confidence": {"mean": round(float(part["confidence"].mean()), 4),
                       "p10": round(float(part["confidence"].quantile(0.1)), 4),
                       "p50": round(float(part["confidence"].median()), 4)},
        "handoff_rate": round(float(part["abstained"].mean()), 4),
        "text_chars": {"mean": round(float(part["text_chars"].mean()), 1), "p50": float(part["text_chars"].median()),
                       "p90": float(part["text_chars"].quantile(0.9))},
        "nonlatin_share": round(float((part["latin_share"] < NON_LATIN).mean()), 4),
        "language_share": _shares(part["language"]),
        "red_flag_rate": round(float((part["red_flags"] > 0).mean()), 4),
    }
    judged = part[part["actual_center"].notna()]
    out["outcomes"] = {"n": int(len(judged)),
                       "top1_accuracy": None if judged.empty else round(float(
                           (judged["center"] == judged["actual_center"]).mean()), 4)}
    drift: dict[str, dict] = {}
    if len(part) >= MIN_WINDOW:
        for column, key in (("confidence", "confidence"), ("text_chars", "text_chars"), ("latin_share", "latin_share")):
            if sample.get(key):
                drift[column] = _ks(part[column], sample[key])
        if ref.get("center_share"):
            js = _js(out["center_share"], ref["center_share"])
            p = _chi2_p(part["center"], sample.get("center") or [])
            drift["predicted_center"] = {"js_distance": round(js, 4), "chi2_p_value": p,
                                         "drift": bool(js >= THRESHOLDS["center_js"]
                                                       and (p is None or p < THRESHOLDS["center_chi2_p"]))}
        if ref.get("handoff_rate") is not None:
            delta = out["handoff_rate"] - ref["handoff_rate"]
            p = _proportion_p(part["abstained"], sample.get("abstained"))
            drift["handoff_rate"] = {"delta": round(delta, 4), "p_value": p,
                                     "drift": bool(abs(delta) >= THRESHOLDS["handoff_delta"]
                                                   and (p is None or p < THRESHOLDS["proportion_p"]))}
        if ref.get("nonlatin_share") is not None:
            delta = out["nonlatin_share"] - ref["nonlatin_share"]
            ref_nonlatin = None if not sample.get("latin_share") else [x < NON_LATIN for x in sample["latin_share"]]
            p = _proportion_p(part["latin_share"] < NON_LATIN, ref_nonlatin)
            drift["nonlatin_share"] = {"delta": round(delta, 4), "p_value": p,
                                       "drift": bool(delta >= THRESHOLDS["nonlatin_delta"]
                                                     and (p is None or p < THRESHOLDS["proportion_p"]))}
        sketches = np.asarray([s for s in part["sketch"] if s is not None], dtype=float)
        ref_sketch = np.asarray(sample.get("sketch") or [], dtype=float)
        if len(sketches) >= MIN_WINDOW and len(ref_sketch):
            auc = _domain_auc(sketches, ref_sketch)
            shift = embedding_shift(sketches, ref)
            drift["embedding"] = {"domain_auc": None if auc is None else round(auc, 4),
                                  "mean_shift": None if shift is None else round(shift, 4), "n": int(len(sketches)),
                                  "drift": bool((auc is not None and auc >= THRESHOLDS["embedding_auc"])
                                                or (shift is not None and shift >= THRESHOLDS["embedding_shift"]))}
    out["drift"] = drift
    out["flagged"] = sorted(k for k, v in drift.items() if v.get("drift"))
    return out


def monitor(settings: Settings, since: str, until: str | None = None, window: str = "1D",
            reference: str | Path | None = None, reference_version: str | None = None) -> dict:
    start, end = _when(since), _when(until)
    if start is None:
        raise MonitorError("--since is required")
    frame = load_records(settings, start, end)
    report: dict = {"since": start.isoformat(), "until": None if end is None else end.isoformat(), "window": window,
                    "thresholds": THRESHOLDS, "min_window": MIN_WINDOW, "n": int(len(frame)), "windows": []}
    if frame.empty:
        report["note"] = "no recorded answers in this range"
        return report
    version = reference_version or str(frame["model_version"].value_counts().idxmax())
    ref = reference_for(settings, version, reference)
    report["reference"] = {"model_version": ref.get("model_version") or version, "n": ref.get("n"),
                           "source": ref.get("source", str(reference) if reference else f"version {version}"),
                           "confidence_mean": ref.get("confidence_mean"), "handoff_rate": ref.get("handoff_rate"),
                           "nonlatin_share": ref.get("nonlatin_share"), "text_chars_mean": ref.get("text_chars_mean")}
    try:
        buckets = frame.groupby(frame["created_at"].dt.floor(window), sort=True)
    except ValueError as exc:
        raise MonitorError(f"--window {window!r} is not a pandas frequency (1D, 6h, 1W ...): {exc}") from exc
    for start_at, part in buckets:
        report["windows"].append({"start": start_at.isoformat(), **window_report(part, ref)})
    report["flagged_windows"] = [w["start"] for w in report["windows"] if w["flagged"]]
    return report


def markdown(report: dict) -> str:
    lines = [f"# Triage monitoring {report['since']} .. {report['until'] or 'now'}", "",
             f"{report['n']} answers, windows of {report['window']}; reference: {report.get('reference')}", "",
             "| window | n | conf. mean | hand-off | non-Latin | chars mean | outcome acc. | flagged |",
             "|---|---|---|---|---|---|---|---|"]
    for w in report["windows"]:
        acc = w["outcomes"]["top1_accuracy"]
        lines.append(f"| {w['start']} | {w['n']} | {w['confidence']['mean']:.3f} | {w['handoff_rate']:.3f} | "
                     f"{w['nonlatin_share']:.3f} | {w['text_chars']['mean']:.0f} | "
                     f"{'-' if acc is None else f'{acc:.3f}'} | {', '.join(w['flagged']) or '-'} |")
    lines += ["", "Thresholds: " + ", ".join(f"{k} {v}" for k, v in report["thresholds"].items()),
              f"(windows under {report['min_window']} answers are not tested). Details per window in report.json.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m training monitor", description=__doc__.split("\n\n")[0])
    p.add_argument("--since", required=True, help="ISO time (UTC unless it says otherwise)")
    p.add_argument("--until")
    p.add_argument("--window", default="1D", help="pandas frequency of the windows (1D, 6h, 1W ...)")
    p.add_argument("--out", type=Path, required=True, help="folder for report.json and report.md")
    p.add_argument("--reference", type=Path, help="a reference.json to compare with")
    p.add_argument("--reference-version", help="take the reference of this registered version")
    p.add_argument("--fail-on-drift", action="store_true", help="exit 4 when a window is flagged")
    args = p.parse_args(argv)
    settings = get_settings()
    registry.configure(settings)
    try:
        report = monitor(settings, args.since, args.until, args.window, args.reference, args.reference_version)
    except (MonitorError, registry.ModelNotFoundError) as exc:
        print(f"error: {exc}")
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (args.out / "report.md").write_text(markdown(report))
    print(markdown(report))
    return 4 if args.fail_on_drift and report.get("flagged_windows") else 0
