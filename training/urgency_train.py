"""The urgency head: a cost-sensitive linear model over the triage encoder's pooled embedding.

It runs in the same encoder pass as the centers (the ONNX artifact's ``embedding`` output) and is stored beside
the model as ``urgency_head.json`` (``triage.classifier.UrgencyHead``).  Steps (each a function, each tested):

1. ``embed``: the served int8 ONNX model embeds the urgency training text (``training.urgency_data``: public
   guidance turned into first-person complaints, with provenance), so training and serving see the same vectors;
2. ``fit_head``: multinomial logistic regression, class-balanced and cost-weighted (under-triage costs more than
   over-triage: ``COST``);
3. ``choose_thresholds``: on validation (held-out statement groups), the emergency threshold is the largest that
   keeps emergency recall >= ``EMERGENCY_RECALL`` and the urgent threshold the largest that keeps recall of
   "urgent or worse" >= ``URGENT_RECALL``;
4. ``evaluation_sets`` / ``evaluate``: the full decision (red flags + head + rules) on validation, on the
   blind set ``datasets/triage/blind/urgency_blind_v1.csv`` (written before any model ran on it) and on
   AcuityBench seed100 (evaluation only).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from evaluation.urgency_eval import evaluate_urgency, headline, pipeline
from serving.settings import PROJECT_ROOT
from training.sources import source_file
from training.urgency_data import (
    data_hash,
    load_statements,
    make_examples,
    split_groups,
)
from training.weights import balanced_class_weights
from triage.classifier import (
    encode_bank,
    neighbour_shares,
)
from triage.redflags import RedFlagMatcher
from triage.taxonomy import URGENCY_LEVELS

BLIND_SET = PROJECT_ROOT / "datasets" / "triage" / "blind" / "urgency_blind_v1.csv"
# second blind set (team-written 2026-12-07, before any model or rule ran on it; evaluation only): eval-urgency --sets blind2
BLIND_SET_V2 = BLIND_SET.parent / "urgency_blind_v2.csv"
# third blind set (issue 11: 54 negation / history traps in outside registers, 37 emergencies each beside a denied or
# past mention; written before any model or rule ran on it; evaluation only): eval-urgency --sets blind3
BLIND_SET_V3 = BLIND_SET.parent / "urgency_blind_v3.csv"
# fourth blind set (issue 11, second pass: 34 past / history / denied-after traps, 37 emergencies in lay and atypical
# words; written before any model or rule ran on it; evaluation only): eval-urgency --sets blind4
BLIND_SET_V4 = BLIND_SET.parent / "urgency_blind_v4.csv"
# fifth blind set (issue 11, 2026-12-07 night: 175 rows, 53 clinical and 47 lay vignettes, 27 traps; written before any
# model or rule ran on it, without opening training, rule or earlier blind text; evaluation only): --sets blind5
BLIND_SET_V5 = BLIND_SET.parent / "urgency_blind_v5.csv"
# team-written negation / history traps and emergencies beside a denial, in outside registers (issue 11): for choosing
# and checking the negation / history scopes; validation only, never test or training: eval-urgency --sets valtraps
VALIDATION_TRAPS = PROJECT_ROOT / "datasets" / "triage" / "validation" / "urgency_traps_val.csv"
ACUITY_LEVELS = {"A": "self_care", "B": "routine", "C": "urgent", "D": "emergency"}
COST = {"emergency": 3.0, "urgent": 1.5, "routine": 1.0, "self_care": 1.0}  # weight of a missed example
EMERGENCY_RECALL = 0.99
URGENT_RECALL = 0.95
# A level the model adds beyond the red flags must be right at least this often on validation: the recall targets
# alone, with a head that separates held-out presentations poorly (validation AUROC ~0.8), put the emergency
# threshold near 0 and send most calm complaints to A&E (first blind run, docs/urgency.md).
PRECISION_FLOOR = 0.5
LABELS = tuple(URGENCY_LEVELS)
LEVEL_INDEX = {level: i for i, level in enumerate(LABELS)}


def level_weights(y: np.ndarray) -> np.ndarray:
    """Per-level loss weights: class-balanced times the cost of missing that level (``COST``)."""
    return balanced_class_weights(y, len(LABELS)) * np.array([COST[level] for level in LABELS])


def training_frame(per_statement: int = 6, contrast: int = 600, include_other_sources: bool = False,
                   seed: int = 11, limit: int | None = None) -> pd.DataFrame:
    statements = load_statements(include_other_sources=include_other_sources)
    if limit:
        statements = statements.groupby("urgency", group_keys=False).head(limit)
    df = make_examples(statements, per_statement=per_statement, contrast=contrast if not limit else limit, seed=seed)
    df["split"] = split_groups(df, seed=seed)
    return df


def embed(classifier, texts: list[str]) -> np.ndarray:
    return classifier.embed(list(texts)).astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)


def fit_head(x: np.ndarray, y: np.ndarray, c: float = 2.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(weights (n_levels, dim), bias) of a multinomial logistic regression on L2-normalised embeddings."""
    from sklearn.linear_model import LogisticRegression

    weights = level_weights(y)
    clf = LogisticRegression(C=c, max_iter=2000, random_state=seed)
    clf.fit(_normalise(x), y, sample_weight=weights[y])
    w = np.zeros((len(LABELS), x.shape[1]), dtype=np.float32)
    b = np.full(len(LABELS), -30.0, dtype=np.float32)  # a level absent from training is never predicted
    for row, cls in enumerate(clf.classes_):
        w[int(cls)] = clf.coef_[row] if len(clf.classes_) > 2 else (clf.coef_[0] if row else -clf.coef_[0])
        b[int(cls)] = clf.intercept_[row] if len(clf.classes_) > 2 else (clf.intercept_[0] if row else -clf.intercept_[0])
    return w, b


def probabilities(x: np.ndarray, w: np.ndarray, b: np.ndarray, normalise: bool = True) -> np.ndarray:
    z = (_normalise(x) if normalise else x) @ w.T + b
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _recall_threshold(scores: np.ndarray, positive: np.ndarray, recall: float,
                      already: np.ndarray | None = None) -> float:
    """Largest threshold t such that the positives with score >= t, together with those ``already`` caught (by
    the red flags), make up at least ``recall`` of all positives."""
    n_pos = int(positive.sum())
    if not n_pos:
        return 0.5
    caught = positive & already if already is not None else np.zeros_like(positive)
    need = int(np.ceil(recall * n_pos)) - int(caught.sum())
    rest = np.sort(scores[positive & ~caught])[::-1]
    if need <= 0 or not len(rest):
        return 1.0 if need <= 0 else 1e-4
    return float(max(rest[min(need, len(rest)) - 1] - 1e-6, 1e-4))


def _precision_threshold(scores: np.ndarray, positive: np.ndarray, floor: float,
                         already: np.ndarray | None = None) -> float:
    """Smallest threshold t at which the rows the model adds (score >= t, not ``already`` raised) are positives
    at least ``floor`` of the time (1.0 when no threshold reaches it)."""
    extra = ~already if already is not None else np.ones_like(positive)
    s, pos = scores[extra], positive[extra]
    order = np.argsort(-s)
    hits = np.cumsum(pos[order])
    precision = hits / np.arange(1, len(order) + 1)
    ok = np.nonzero(precision >= floor)[0]
    if not len(ok):
        return 1.0
    return float(max(s[order][ok[-1]] - 1e-6, 1e-4))


def choose_thresholds(p: np.ndarray, y: np.ndarray, flagged: np.ndarray | None = None,
                      flagged_urgent: np.ndarray | None = None) -> dict[str, float]:
    """On validation (one decision policy: the more urgent of red flags and model wins; ``flagged`` /
    ``flagged_urgent`` are the rows an emergency / any red flag already raises):

    - t_emergency: the largest threshold at which red flags + model catch ``EMERGENCY_RECALL`` of the emergencies,
      raised where needed until the emergencies the model adds are right at least ``PRECISION_FLOOR`` of the time;
    - t_urgent: likewise for "urgent or worse" with ``URGENT_RECALL``;
    - t_self_care: maximises exact accuracy between routine and self-care.
    The chosen operating point and the recall it reaches are recorded in the head (``validation``)."""
    e, u, r, s = (LABELS.index(x) for x in ("emergency", "urgent", "routine", "self_care"))
    te_recall = _recall_threshold(p[:, e], y == e, EMERGENCY_RECALL, flagged)
    te = max(te_recall, _precision_threshold(p[:, e], y == e, PRECISION_FLOOR, flagged))
    raised = flagged_urgent if flagged_urgent is not None else flagged
    raised = (p[:, e] >= te) if raised is None else (raised | (p[:, e] >= te))
    urgent_or_worse = (y == e) | (y == u)
    tu_recall = _recall_threshold(p[:, e] + p[:, u], urgent_or_worse, URGENT_RECALL, raised)
    tu = max(tu_recall, _precision_threshold(p[:, e] + p[:, u], urgent_or_worse, PRECISION_FLOOR, raised))
    calm = (y == r) | (y == s)
    best, ts = -1.0, 0.5
    for t in np.linspace(0.2, 0.8, 25):
        pred = np.where((p[calm, s] >= t) & (p[calm, s] >= p[calm, r]), s, r)
        acc = float((pred == y[calm]).mean()) if calm.any() else 0.0
        if acc > best:
            best, ts = acc, float(t)
    return {"emergency": round(te, 6), "urgent": round(min(tu, 1.0), 6), "self_care": round(ts, 6)}


NEIGHBOUR_GRID = tuple((k, a) for k in (5, 10, 20) for a in (0.3, 0.5, 0.7))


def operating_point(p: np.ndarray, y: np.ndarray, thresholds: dict, flagged: np.ndarray, traps: np.ndarray) -> dict:
    """Validation figures of one head at its thresholds, emergencies only (red flags + model): recall, the share of
    urgent and of calm (routine / self-care) rows raised to emergency, the share of negation / history traps."""
    e = LABELS.index("emergency")
    pred = flagged | (p[:, e] >= thresholds["emergency"])
    calm = (y == LEVEL_INDEX["routine"]) | (y == LEVEL_INDEX["self_care"])

    def share(mask):
        return round(float(pred[mask].mean()), 4) if mask.any() else 0.0

    return {"emergency_recall": share(y == e), "urgent_to_emergency": share(y == LEVEL_INDEX["urgent"]),
            "calm_to_emergency": share(calm), "traps_to_emergency": share(traps)}


TRAP_CEILING = 0.10  # issue 11: at most this share of negation / history traps raised to emergency


def recall_at_calm_rate(p: np.ndarray, y: np.ndarray, flagged: np.ndarray, rate: float) -> float:
    """The best emergency recall (red flags + model) of probabilities ``p`` at any emergency threshold that raises
    at most ``rate`` of the calm (routine / self-care) rows to emergency: the head's ROC read at one point."""
    e = LABELS.index("emergency")
    calm = (y == LEVEL_INDEX["routine"]) | (y == LEVEL_INDEX["self_care"])
    if not (y == e).any():
        return 0.0
    best = float((flagged[y == e]).mean())
    for t in np.unique(p[:, e])[::-1]:
        pred = flagged | (p[:, e] >= t)
        if calm.any() and pred[calm].mean() > rate + 1e-9:
            break
        best = max(best, float(pred[y == e].mean()))
    return best


def choose_neighbours(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                      p_head: np.ndarray, flagged: np.ndarray, flagged_any: np.ndarray, traps: np.ndarray,
                      grid=NEIGHBOUR_GRID) -> tuple[dict | None, dict, list[dict]]:
    """Nearest-exemplar blend (issue 11), chosen on validation: ``p = (1 - a) * p_head + a * share of each level
    among the k nearest training examples``. For every (k, a) of ``grid`` the thresholds are chosen as for the head
    alone (``choose_thresholds``: the recall targets and the precision floor). A blend qualifies when, at its
    operating point, (1) it catches more emergencies than the head alone would at any threshold raising no more
    calm rows to emergency (a matched comparison on the ROC, not against the head's own operating point), and
    (2) it raises at most ``TRAP_CEILING`` of the negation / history traps to emergency. The qualifying blend with
    the highest validation emergency recall is kept (ties: fewer calm rows raised), or None. Returns (chosen
    {k, weight} or None, its thresholds, the table of every candidate)."""
    base_t = choose_thresholds(p_head, y_val, flagged, flagged_any)
    base = operating_point(p_head, y_val, base_t, flagged, traps)
    table = [{"k": 0, "weight": 0.0, **base, "thresholds": base_t}]
    best, best_t, best_key = None, base_t, None
    bank = _normalise(x_train)
    for k, a in grid:
        if k > len(bank):
            continue
        shares = neighbour_shares(x_val, bank, y_train, k, len(LABELS))
        p = (1 - a) * p_head + a * shares
        t = choose_thresholds(p, y_val, flagged, flagged_any)
        op = operating_point(p, y_val, t, flagged, traps)
        matched = round(recall_at_calm_rate(p_head, y_val, flagged, op["calm_to_emergency"]), 4)
        ok = op["emergency_recall"] > matched and op["traps_to_emergency"] <= TRAP_CEILING
        table.append({"k": k, "weight": a, **op, "head_recall_at_same_calm_rate": matched, "qualifies": ok,
                      "thresholds": t})
        key = (op["emergency_recall"], -op["calm_to_emergency"])
        if ok and (best_key is None or key > best_key):
            best, best_t, best_key = {"k": k, "weight": a}, t, key
    return best, best_t, table


def red_flag_masks(texts: list[str], matcher: RedFlagMatcher | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(an emergency red flag fires, any red flag fires) per text."""
    matcher = matcher or RedFlagMatcher()
    hits = [matcher.match(t, age_years=None, sex=None, pregnant=None) for t in texts]
    return (np.array([any(f.urgency == "emergency" for f in h) for h in hits], dtype=bool),
            np.array([bool(h) for h in hits], dtype=bool))


def head_document(w: np.ndarray, b: np.ndarray, thresholds: dict, info: dict, exemplars: dict | None = None) -> dict:
    doc = {"labels": list(LABELS), "weights": w.round(7).tolist(), "bias": b.round(7).tolist(),
           "normalise": True, "thresholds": thresholds, **info}
    if exemplars:
        doc["exemplars"] = exemplars
    return doc


def exemplars(classifier, statements: pd.DataFrame) -> dict:
    """The guidance's emergency and urgent presentations (their own words, one row each) with normalised
    embeddings from the served model: the answer names the closest one, with its source."""
    rows = statements[statements["urgency"].isin(["emergency", "urgent"])].drop_duplicates("statement")
    x = _normalise(embed(classifier, list(rows["statement"])))
    return {"text": list(rows["statement"]), "urgency": list(rows["urgency"]), "source": list(rows["source_url"]),
            "embeddings": x.round(4).tolist()}


# --------------------------------------------------------------------------------------- evaluation sets
def blind_rows(path: Path = BLIND_SET) -> list[dict]:
    with Path(path).open(newline="", encoding="utf-8") as fh:
        return [{"id": r["id"], "text": r["text"], "urgency": r["urgency"], "group": r["style"]}
                for r in csv.DictReader(fh)]


def blind_rows_v2() -> list[dict]:
    return blind_rows(BLIND_SET_V2)


def blind_rows_v3() -> list[dict]:
    return blind_rows(BLIND_SET_V3)


def blind_rows_v4() -> list[dict]:
    return blind_rows(BLIND_SET_V4)


def blind_rows_v5() -> list[dict]:
    return blind_rows(BLIND_SET_V5)


def validation_trap_rows() -> list[dict]:
    return blind_rows(VALIDATION_TRAPS)


def acuity_rows(field: str = "vignette_text") -> list[dict]:
    rows = []
    with source_file("acuitybench_seed100", "vignettes.csv").open(newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            level = ACUITY_LEVELS.get((r.get("gold_triage") or "").strip())
            if level is None or not (r.get(field) or "").strip():
                continue
            try:
                age = float(r["age"]) if (r.get("age") or "").strip() else None
            except ValueError:
                age = None
            sex = (r.get("sex") or "").strip().lower() or None
            rows.append({"id": r["id"], "text": r[field], "urgency": level, "age_years": age,
                         "sex": sex if sex in {"female", "male"} else None,
                         "group": (r.get("source_dataset") or "acuitybench").strip()})
    return rows


def validation_rows(seed: int = 11) -> list[dict]:
    """The held-out statement groups of the guidance-derived examples (what the thresholds are chosen on), with the
    negation / history contrasts grouped as traps."""
    df = training_frame(seed=seed)
    held = df[df["split"] != "train"]
    groups = {"negated": "negation_trap", "history": "history_trap"}
    return [{"id": f"val-{i}", "text": r["text"], "urgency": r["urgency"], "group": groups.get(r["kind"], r["kind"])}
            for i, r in enumerate(held.to_dict("records"))]


def evaluate(classifier, sets: dict[str, list[dict]], matcher: RedFlagMatcher | None = None,
             respect_negation: bool = True, scopes: bool = False) -> dict:
    decide = pipeline(matcher or RedFlagMatcher(), classifier, respect_negation=respect_negation, scopes=scopes)
    return {name: evaluate_urgency(rows, decide) for name, rows in sets.items()}


def train_head(classifier, *, per_statement: int = 6, contrast: int = 600, include_other_sources: bool = False,
               seed: int = 11, limit: int | None = None, trained: tuple | None = None,
               frame: pd.DataFrame | None = None, neighbours: bool = True) -> tuple[dict, dict]:
    """Steps 1-3 on the served model: (head document for urgency_head.json, validation details).

    ``trained``: (weights, bias) of a head trained jointly with the encoder (applied to the raw pooled embedding);
    without it a head is fitted on the finished encoder's (normalised) embeddings.  Either way the thresholds are
    chosen on the validation statement groups with the served int8 model."""
    df = frame if frame is not None else training_frame(per_statement, contrast, include_other_sources, seed, limit)
    x = embed(classifier, list(df["text"]))
    y = df["urgency"].map(LEVEL_INDEX).to_numpy()
    train = (df["split"] == "train").to_numpy()
    if trained is None:
        w, b = fit_head(x[train], y[train], seed=seed)
        normalise = True
    else:
        w, b = (np.asarray(a, dtype=np.float32) for a in trained)
        normalise = False
    val_p = probabilities(x[~train], w, b, normalise)
    flagged, flagged_any = red_flag_masks(list(df.loc[~train, "text"]))
    traps = df.loc[~train, "kind"].isin(["negated", "history"]).to_numpy()
    # nearest-exemplar blend over the training examples, kept only when it beats the head alone on validation
    chosen, thresholds, neighbour_table = (None, choose_thresholds(val_p, y[~train], flagged, flagged_any), [])
    if neighbours:
        chosen, thresholds, neighbour_table = choose_neighbours(x[train], y[train], x[~train], y[~train], val_p,
                                                                flagged, flagged_any, traps)
    info = {"version": f"urgency-head:{data_hash()[:12]}", "guidance_sha256": data_hash(),
            "mode": "frozen" if trained is None else "joint",
            "n_train": int(train.sum()), "n_val": int((~train).sum()),
            "train_counts": df[train]["urgency"].value_counts().to_dict(), "cost": COST,
            "emergency_recall_target": EMERGENCY_RECALL, "urgent_recall_target": URGENT_RECALL,
            "thresholds_policy": f"validation: recall of red flags + model combined, precision of what the model adds "
                                 f">= {PRECISION_FLOOR}",
            "include_other_sources": include_other_sources,
            "neighbour_selection": {"rule": "highest validation emergency recall among blends that beat the head "
                                            "alone at the same rate of calm rows raised to emergency and raise at "
                                            f"most {TRAP_CEILING:.0%} of negation / history traps",
                                    "chosen": chosen, "candidates": neighbour_table}}
    val_rows = [{"text": t, "urgency": u, "group": k} for t, u, k in
                zip(df.loc[~train, "text"], df.loc[~train, "urgency"], df.loc[~train, "kind"])]
    cited = exemplars(classifier, load_statements(include_other_sources=include_other_sources))
    doc = head_document(w, b, thresholds, info, cited)
    doc["normalise"] = normalise
    if chosen:
        doc["neighbours"] = {**chosen, "labels": y[train].astype(int).tolist(), **encode_bank(_normalise(x[train])),
                             "examples": "the training run's urgency_training_examples.csv, rows with split == train, in that order"}
    return doc, {"validation_rows": val_rows, "frame": df}


def flat_metrics(reports: dict) -> dict[str, float]:
    out = {}
    for name, report in reports.items():
        for key, value in headline(report).items():
            out[f"urgency_{name}_{key}"] = value
    return out
