"""Nearest-exemplar blend (issue 12): parameter choice by cross-source validation, and the artefact's sidecar.

``triage.exemplars`` is the serving side (numpy only). This module

- scores a grid of (k, tau, weight) on the cross-source models of ``training.triage_train._cross_source`` (a model
  and an exemplar bank built from one public source, tested on the other: the head and the bank never saw the
  test source), ``grid_rows``;
- chooses the parameters on those directions (``choose``) and estimates the gain honestly by choosing on one
  direction and measuring on the other (``leave_one_direction_out``); ``decide`` applies the adoption rule fixed
  before the first measurement: the blend is enabled by default only if, with parameters chosen on the other
  direction, it is at least as accurate as the head alone in **both** directions and better by >= 1 point on
  their mean;
- builds the sidecar of an artefact (``build_sidecar``): the exemplar bank is the training split's texts (external
  and project-written rows) plus the taxonomy descriptions, embedded by the served model, with provenance; the
  blend's temperature and abstention threshold are refitted on the validation split. The blind sets are never
  read here.
"""

from __future__ import annotations

import itertools

import numpy as np

from evaluation import triage_eval as ev
from triage.exemplars import ExemplarBlend, blend_log_probs, center_scores, log_softmax

GRID = {"k": (0, 1, 3, 5, 10), "tau": (0.02, 0.05, 0.1), "weight": (0.0, 0.2, 0.35, 0.5, 0.65, 0.8, 1.0)}
DEFAULT_PARAMS = {"k": 3, "tau": 0.05, "weight": 0.5}  # used (disabled) when no cross-source run chose any
MIN_GAIN = 0.01  # mean leave-one-direction-out top-1 gain needed to enable the blend by default


def grid_rows(head_log_probs: np.ndarray, emb: np.ndarray, bank: np.ndarray, bank_y: np.ndarray, y: np.ndarray,
              n_classes: int, grid: dict | None = None) -> list[dict]:
    """Top-1, macro-F1, top-3 and NLL of every (k, tau, weight) of ``grid`` on (emb, y)."""
    from sklearn.metrics import f1_score

    grid = grid or GRID
    y = np.asarray(y)
    rows = []
    for k in grid["k"]:
        scores = center_scores(emb, bank, bank_y, n_classes, k)
        for tau, w in itertools.product(grid["tau"], grid["weight"]):
            z = log_softmax(blend_log_probs(head_log_probs, scores, w, tau))
            pred = z.argmax(1)
            rows.append({"k": k, "tau": tau, "weight": w, "accuracy": float((pred == y).mean()),
                         "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
                         "top3_accuracy": ev.top_k_accuracy(y, np.exp(z), 3),
                         "nll": float(-z[np.arange(len(y)), y].mean())})
    return rows


def _key(r: dict) -> tuple:
    return (r["k"], r["tau"], r["weight"])


def choose(grids: dict[str, list[dict]]) -> dict:
    """The (k, tau, weight) with the best mean top-1 over the given directions (ties: lower mean NLL, then the
    smaller weight)."""
    if not grids:
        raise ValueError("no cross-source grid to choose from")
    table: dict[tuple, list[dict]] = {}
    for rows in grids.values():
        for r in rows:
            table.setdefault(_key(r), []).append(r)
    full = {k: v for k, v in table.items() if len(v) == len(grids)}
    best = min(full, key=lambda k: (-np.mean([r["accuracy"] for r in full[k]]),
                                    np.mean([r["nll"] for r in full[k]]), k[2]))
    return {"k": int(best[0]), "tau": float(best[1]), "weight": float(best[2]),
            "mean_accuracy": float(np.mean([r["accuracy"] for r in full[best]]))}


def _lookup(rows: list[dict], params: dict) -> dict:
    return next(r for r in rows if _key(r) == (params["k"], params["tau"], params["weight"]))


def head_row(rows: list[dict]) -> dict:
    """The head alone (weight 0) in a grid."""
    return next(r for r in rows if r["weight"] == 0.0)


def leave_one_direction_out(grids: dict[str, list[dict]]) -> dict:
    """Per direction: parameters chosen on the other direction(s), and their figures here vs the head alone."""
    out = {}
    for name, rows in grids.items():
        others = {n: g for n, g in grids.items() if n != name}
        if not others:
            continue
        params = choose(others)
        blended, head = _lookup(rows, params), head_row(rows)
        out[name] = {"params": {k: params[k] for k in ("k", "tau", "weight")},
                     "head": {m: head[m] for m in ("accuracy", "macro_f1", "top3_accuracy", "nll")},
                     "blend": {m: blended[m] for m in ("accuracy", "macro_f1", "top3_accuracy", "nll")}}
    return out


def decide(grids: dict[str, list[dict]]) -> dict:
    """Chosen parameters (on every direction) and whether the blend is enabled by default (rule above)."""
    if not grids:
        return {**DEFAULT_PARAMS, "enabled": False, "reason": "no cross-source validation was run"}
    params = choose(grids)
    loo = leave_one_direction_out(grids)
    gains = [v["blend"]["accuracy"] - v["head"]["accuracy"] for v in loo.values()]
    enabled = bool(gains) and min(gains) >= 0.0 and float(np.mean(gains)) >= MIN_GAIN
    reason = (f"leave-one-direction-out top-1 gains {', '.join(f'{g:+.3f}' for g in gains)} "
              f"(rule: all >= 0 and mean >= {MIN_GAIN})" if gains else "one direction only: no held-out estimate")
    return {"k": params["k"], "tau": params["tau"], "weight": params["weight"], "enabled": enabled,
            "reason": reason, "leave_one_direction_out": loo, "chosen_mean_accuracy": params["mean_accuracy"]}


def build_sidecar(clf, bank_texts: list[str], bank_y: np.ndarray, provenance: list[dict], val_texts: list[str],
                  val_y: np.ndarray, params: dict, info: dict | None = None) -> ExemplarBlend:
    """The sidecar for ``clf`` (a TriageClassifier): bank embedded by the served model, blend temperature and
    abstention threshold fitted on validation (target selective accuracy ``ev.SELECTIVE_TARGET``)."""
    bank = clf.embed(list(bank_texts))
    logits, emb = clf.predict_outputs(list(val_texts))
    head = log_softmax(np.asarray(logits, dtype=np.float64) / clf.temperature)
    n = len(clf.labels)
    z = blend_log_probs(head, center_scores(emb, bank, bank_y, n, params["k"]), params["weight"], params["tau"])
    temperature = ev.fit_temperature(val_y, z) if params["weight"] else 1.0
    probs = np.exp(log_softmax(z / temperature))
    choice = ev.choose_threshold(val_y, probs)
    head_choice = ev.choose_threshold(val_y, np.exp(head))
    info = {**(info or {}), "validation": {
        "n": int(len(val_y)), "blend_accuracy": float((probs.argmax(1) == val_y).mean()),
        "head_accuracy": float((head.argmax(1) == val_y).mean()),
        "blend_selective": {k: choice[k] for k in ("threshold", "selective_accuracy", "coverage", "target_met")},
        "head_selective": {k: head_choice[k] for k in ("threshold", "selective_accuracy", "coverage",
                                                        "target_met")}}}
    return ExemplarBlend(tuple(clf.labels), bank, np.asarray(bank_y, dtype=np.int64), int(params["k"]),
                         float(params["tau"]), float(params["weight"]), float(temperature),
                         float(choice["threshold"]), bool(params.get("enabled", False)), tuple(provenance), info)


def bank_rows(df, taxonomy, labels: list[str], with_descriptions: bool = True) -> tuple[list[str], np.ndarray,
                                                                                         list[dict]]:
    """The training split's rows (no feedback text: it is not in the split frame) and the center descriptions,
    as (texts, center ids, provenance)."""
    index = {c: i for i, c in enumerate(labels)}
    train = df[df["split"] == "train"]
    texts = list(train["text"])
    ys = list(train["center"].map(index))
    prov = [{"text": t, "center": c, "source": s, "origin": o}
            for t, c, s, o in zip(train["text"], train["center"], train["source"], train["origin"])]
    if with_descriptions:
        for cid in labels:
            c = taxonomy.get(cid)
            for t in (c.description, f"{c.name_en}: {c.description}"):
                texts.append(t)
                ys.append(index[cid])
                prov.append({"text": t, "center": cid, "source": "taxonomy_description", "origin": "project"})
    return texts, np.asarray(ys, dtype=np.int64), prov
