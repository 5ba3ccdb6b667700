"""Triage-classifier evaluation: metrics, calibration, abstention, baseline, report and plots.

Everything here works on plain arrays (``y_true`` integer class ids, ``probs`` rows summing to 1)
so it is shared by training (validation, test, cross-source) and by the lifecycle tooling.

* ``classification_metrics``: accuracy, macro-F1, per-center precision/recall/support, top-3.
* ``expected_calibration_error``: equal-width confidence bins, |accuracy - confidence| weighted.
* ``fit_temperature``: the single temperature minimising validation NLL.
* ``choose_threshold`` / ``selective``: abstain below a top-probability threshold; pick the lowest
  threshold reaching the selective-accuracy target on validation (maximum coverage).
* ``tfidf_baseline``: the reference TF-IDF (word 1-2 + char_wb 2-5) + logistic regression.
* ``write_report``: markdown report + confusion-matrix and reliability-diagram PNGs.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from triage.classifier import softmax  # noqa: F401 - one softmax, re-exported for the metrics

SELECTIVE_TARGET = 0.95


def _check(y_true, probs) -> tuple[np.ndarray, np.ndarray]:
    y = np.asarray(y_true, dtype=np.int64)
    p = np.asarray(probs, dtype=np.float64)
    if p.ndim != 2:
        raise ValueError(f"probs must be 2-D (n, classes), got shape {p.shape}")
    if y.ndim != 1 or len(y) != len(p):
        raise ValueError(f"y_true has {len(y)} items but probs has {len(p)} rows")
    if len(y) == 0:
        raise ValueError("cannot evaluate on zero examples")
    if y.min() < 0 or y.max() >= p.shape[1]:
        raise ValueError(f"y_true holds class ids outside 0..{p.shape[1] - 1}")
    return y, p


def top_k_accuracy(y_true, probs, k: int = 3) -> float:
    y, p = _check(y_true, probs)
    k = min(k, p.shape[1])
    top = np.argsort(-p, axis=1, kind="stable")[:, :k]
    return float((top == y[:, None]).any(axis=1).mean())


def classification_metrics(y_true, probs, labels: list[str]) -> dict:
    """Accuracy, macro-F1 over the classes present in y_true or predicted, per-center P/R/F1."""
    from sklearn.metrics import f1_score, precision_recall_fscore_support

    y, p = _check(y_true, probs)
    pred = p.argmax(axis=1)
    present = sorted(set(y.tolist()) | set(pred.tolist()))
    prec, rec, f1, support = precision_recall_fscore_support(
        y, pred, labels=list(range(len(labels))), zero_division=0
    )
    per_center = {
        labels[i]: {
            "precision": float(prec[i]),
            "recall": float(rec[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i in range(len(labels))
        if support[i] > 0 or i in present
    }
    return {
        "n": int(len(y)),
        "accuracy": float((pred == y).mean()),
        "macro_f1": float(f1_score(y, pred, labels=present, average="macro", zero_division=0)),
        "top3_accuracy": top_k_accuracy(y, p, 3),
        "per_center": per_center,
    }


def reliability_bins(y_true, probs, n_bins: int = 15) -> list[dict]:
    y, p = _check(y_true, probs)
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bins = []
    for i in range(n_bins):
        lo, hi = edges[i], edges[i + 1]
        mask = (conf > lo) & (conf <= hi) if i else (conf >= lo) & (conf <= hi)
        if mask.any():
            bins.append(
                {
                    "lo": float(lo),
                    "hi": float(hi),
                    "count": int(mask.sum()),
                    "confidence": float(conf[mask].mean()),
                    "accuracy": float(correct[mask].mean()),
                }
            )
    return bins


def expected_calibration_error(y_true, probs, n_bins: int = 15) -> float:
    """ECE = sum_b (n_b / n) * |acc_b - conf_b| over equal-width top-probability bins."""
    y, _ = _check(y_true, probs)
    n = len(y)
    return float(sum(b["count"] / n * abs(b["accuracy"] - b["confidence"]) for b in reliability_bins(y_true, probs, n_bins)))


def nll(y_true, logits, temperature: float = 1.0) -> float:
    y = np.asarray(y_true, dtype=np.int64)
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(y)), y], 1e-12, None)).mean())


def fit_temperature(y_true, logits) -> float:
    """Temperature T > 0 minimising the NLL of softmax(logits / T) (golden-section on log T)."""
    y = np.asarray(y_true, dtype=np.int64)
    z = np.asarray(logits, dtype=np.float64)
    if len(y) == 0:
        raise ValueError("cannot fit a temperature on zero examples")
    lo, hi = math.log(0.05), math.log(20.0)
    g = (math.sqrt(5) - 1) / 2
    a, b = hi - g * (hi - lo), lo + g * (hi - lo)
    fa, fb = nll(y, z, math.exp(a)), nll(y, z, math.exp(b))
    for _ in range(60):
        if fa < fb:
            hi, b, fb = b, a, fa
            a = hi - g * (hi - lo)
            fa = nll(y, z, math.exp(a))
        else:
            lo, a, fa = a, b, fb
            b = lo + g * (hi - lo)
            fb = nll(y, z, math.exp(b))
    return float(math.exp((lo + hi) / 2))


def selective(y_true, probs, threshold: float) -> dict:
    """Accuracy on the answered items (top probability >= threshold) and their share (coverage)."""
    y, p = _check(y_true, probs)
    answered = p.max(axis=1) >= threshold
    coverage = float(answered.mean())
    acc = float((p.argmax(axis=1)[answered] == y[answered]).mean()) if answered.any() else float("nan")
    return {"threshold": float(threshold), "coverage": coverage, "selective_accuracy": acc, "n": int(len(y))}


def choose_threshold(y_true, probs, target: float = SELECTIVE_TARGET, min_answered: int = 1) -> dict:
    """Lowest top-probability threshold whose selective accuracy on (y_true, probs) >= target.

    Returns the ``selective`` dict plus ``target`` and ``target_met``.  When no threshold reaches
    the target, the one with the highest selective accuracy (ties: highest coverage) is returned
    with ``target_met=False``.
    """
    y, p = _check(y_true, probs)
    conf = p.max(axis=1)
    correct = p.argmax(axis=1) == y
    order = np.argsort(-conf, kind="stable")
    conf_sorted, correct_sorted = conf[order], correct[order]
    cum_acc = np.cumsum(correct_sorted) / np.arange(1, len(y) + 1)
    # candidate cut after position i answers items 0..i; only cut where the confidence changes
    best = None
    for i in range(len(y) - 1, -1, -1):
        if i + 1 < min_answered:
            break
        if i + 1 < len(y) and conf_sorted[i + 1] == conf_sorted[i]:
            continue
        if cum_acc[i] >= target:
            best = i
            break
    met = best is not None
    if best is None:
        candidates = [
            i for i in range(max(min_answered - 1, 0), len(y)) if i + 1 == len(y) or conf_sorted[i + 1] != conf_sorted[i]
        ]
        best = max(candidates, key=lambda i: (round(cum_acc[i], 12), i))
    threshold = float(conf_sorted[best])
    out = selective(y, p, threshold)
    out.update({"target": target, "target_met": bool(met)})
    return out


def confusion(y_true, y_pred, n_classes: int) -> np.ndarray:
    m = np.zeros((n_classes, n_classes), dtype=np.int64)
    for t, q in zip(np.asarray(y_true), np.asarray(y_pred)):
        m[int(t), int(q)] += 1
    return m


# ---------------------------------------------------------------------------- baseline
def tfidf_baseline(train_texts, train_y, test_texts, n_classes: int, seed: int = 0) -> np.ndarray:
    """Probabilities (n_test, n_classes) from the reference TF-IDF + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline, make_union

    vec = make_union(
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, min_df=1),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, min_df=2),
    )
    clf = make_pipeline(vec, LogisticRegression(max_iter=3000, C=10, class_weight="balanced", random_state=seed))
    clf.fit(list(train_texts), list(train_y))
    proba = clf.predict_proba(list(test_texts))
    out = np.zeros((len(proba), n_classes))
    out[:, clf.classes_] = proba
    return out


def restrict(probs, keep: list[int]) -> np.ndarray:
    """Renormalise probabilities onto the classes in ``keep`` (cross-source shared centers)."""
    p = np.asarray(probs, dtype=np.float64)
    mask = np.zeros(p.shape[1], dtype=bool)
    mask[keep] = True
    q = np.where(mask, p, 0.0)
    s = q.sum(axis=1, keepdims=True)
    return np.divide(q, s, out=np.full_like(q, 1.0 / len(keep)) * mask, where=s > 0)


# ---------------------------------------------------------------------------- plots + report
def plot_confusion(y_true, y_pred, labels: list[str], path: str | Path, title: str = "Confusion matrix") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    used = sorted(set(np.asarray(y_true).tolist()) | set(np.asarray(y_pred).tolist()))
    index = {c: i for i, c in enumerate(used)}
    m = confusion([index[int(t)] for t in y_true], [index[int(q)] for q in y_pred], len(used))
    names = [labels[c] for c in used]
    size = max(5.0, 0.45 * len(used) + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
    im = ax.imshow(m, cmap="Blues")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(len(used)):
        for j in range(len(used)):
            if m[i, j]:
                ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7,
                        color="white" if m[i, j] > m.max() / 2 else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_reliability(y_true, probs_before, probs_after, path: str | Path, n_bins: int = 15) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="perfect")
    for probs, name in ((probs_before, "before (T=1)"), (probs_after, "after temperature")):
        bins = reliability_bins(y_true, probs, n_bins)
        ece = expected_calibration_error(y_true, probs, n_bins)
        ax.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], "o-", label=f"{name}, ECE {ece:.3f}")
    ax.set_xlabel("mean top probability in bin")
    ax.set_ylabel("accuracy in bin")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_title("Reliability diagram (test)")
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _pct(x) -> str:
    return "n/a" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def write_report(results: dict, path: str | Path) -> Path:
    """Markdown report from the dict assembled by ``training.triage_train``."""
    r = results
    lines = [
        f"# Triage classifier evaluation (run {r.get('run_id', '-')})",
        "",
        f"Taxonomy {r.get('taxonomy_version')}, {r.get('n_labels')} centers, encoder layers {r.get('layers')}, "
        f"max length {r.get('max_length')}, epochs run {r.get('epochs_run')}, few-shot method {r.get('few_shot')}.",
        "Test sets hold external (public) examples only; project-written seed complaints are never evaluated.",
        "",
        "## In-source test (held-out phrase groups)",
        "",
        "| model | n | accuracy | macro-F1 | top-3 | ECE | selective acc @ thr | coverage |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, m in r.get("test", {}).items():
        sel = m.get("selective") or {}
        lines.append(
            f"| {name} | {m['n']} | {_pct(m['accuracy'])} | {_pct(m['macro_f1'])} | {_pct(m['top3_accuracy'])} "
            f"| {m.get('ece', float('nan')):.3f} | {_pct(sel.get('selective_accuracy'))} | {_pct(sel.get('coverage'))} |"
        )
    cal = r.get("calibration", {})
    lines += [
        "",
        "## Calibration and abstention",
        "",
        f"- temperature (fitted on validation NLL): {cal.get('temperature', float('nan')):.3f}",
        f"- test ECE before: {cal.get('ece_before', float('nan')):.4f}, after: {cal.get('ece_after', float('nan')):.4f}",
        f"- abstention threshold (validation, target {_pct(cal.get('target'))} selective accuracy): "
        f"{cal.get('threshold', float('nan')):.3f} (target met on validation: {cal.get('target_met')})",
        f"- validation selective accuracy {_pct(cal.get('val_selective_accuracy'))} at coverage {_pct(cal.get('val_coverage'))}",
        "",
    ]
    if r.get("cross_source"):
        lines += [
            "## Cross-source (train without one source, test on the centers it shares with the other)",
            "",
            "| direction | shared centers | n test | model acc | model macro-F1 | baseline acc | baseline macro-F1 |",
            "|---|---|---|---|---|---|---|",
        ]
        for name, c in r["cross_source"].items():
            lines.append(
                f"| {name} | {len(c['centers'])} | {c['n_test']} | {_pct(c['model']['accuracy'])} | "
                f"{_pct(c['model']['macro_f1'])} | {_pct(c['baseline']['accuracy'])} | {_pct(c['baseline']['macro_f1'])} |"
            )
        lines.append("")
    if r.get("onnx"):
        o = r["onnx"]
        lines += [
            "## ONNX",
            "",
            f"- parity torch vs onnxruntime fp32 on {o.get('n')} test texts: max |logit diff| {o.get('max_abs_diff', float('nan')):.2e}, "
            f"top-1 agreement {_pct(o.get('top1_agreement'))}",
            f"- int8 (dynamic quantisation) test accuracy {_pct(o.get('int8_accuracy'))} vs fp32 {_pct(o.get('fp32_accuracy'))} "
            f"(drop {100 * o.get('int8_drop', float('nan')):.2f} points); size {o.get('fp32_mb', 0):.1f} MB -> {o.get('int8_mb', 0):.1f} MB",
            "",
        ]
    model_test = r.get("test", {}).get("model")
    if model_test:
        lines += ["## Per-center (test, fine-tuned model)", "", "| center | support | precision | recall | F1 |", "|---|---|---|---|---|"]
        for c, v in sorted(model_test["per_center"].items()):
            lines.append(f"| {c} | {v['support']} | {_pct(v['precision'])} | {_pct(v['recall'])} | {_pct(v['f1'])} |")
        lines.append("")
    if r.get("support"):
        lines += ["## Support per center (examples per split; project = written by the project)", "",
                  "| center | train ext | train project | val | test (external) |", "|---|---|---|---|---|"]
        for c, v in sorted(r["support"].items()):
            lines.append(f"| {c} | {v.get('train_external', 0)} | {v.get('train_project', 0)} | {v.get('val', 0)} | {v.get('test', 0)} |")
        lines.append("")
    if r.get("plots"):
        lines += ["## Plots", ""] + [f"- `{p}`" for p in r["plots"]] + [""]
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
