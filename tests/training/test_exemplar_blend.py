"""Choice of the nearest-exemplar blend by cross-source validation (training.exemplar_blend) on hand-made grids
and embeddings, and the sidecar the training pipeline writes into the fixture artefact."""

from __future__ import annotations

import json

import numpy as np
import pytest

from training import exemplar_blend as eb
from triage.exemplars import EXEMPLAR_FILE, log_softmax


def _grid(acc: dict) -> list[dict]:
    rows = []
    for (k, tau, w), a in acc.items():
        rows.append({"k": k, "tau": tau, "weight": w, "accuracy": a, "macro_f1": a, "top3_accuracy": 1.0,
                     "nll": 1.0 - a})
    return rows


def test_grid_rows_scores_every_setting_and_the_head():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 8))
    y = np.repeat(np.arange(3), 10)
    emb = centers[y] + 0.1 * rng.normal(size=(30, 8))
    bank_y = np.repeat(np.arange(3), 5)
    bank = centers[bank_y] + 0.1 * rng.normal(size=(15, 8))
    head = log_softmax(np.zeros((30, 3)) + np.eye(3)[(y + 1) % 3] * 3)  # a head that is always wrong
    grid = {"k": (0, 1), "tau": (0.05,), "weight": (0.0, 0.5, 1.0)}
    rows = eb.grid_rows(head, emb, bank, bank_y, y, 3, grid)
    assert len(rows) == 6
    assert eb.head_row(rows)["accuracy"] == 0.0
    assert all(r["accuracy"] == 1.0 for r in rows if r["weight"] == 1.0)  # the neighbours are right


def test_choice_and_the_leave_one_direction_out_rule():
    win = {"a": _grid({(1, 0.05, 0.0): 0.60, (1, 0.05, 0.5): 0.66, (3, 0.05, 0.5): 0.62}),
           "b": _grid({(1, 0.05, 0.0): 0.50, (1, 0.05, 0.5): 0.55, (3, 0.05, 0.5): 0.56})}
    d = eb.decide(win)
    assert (d["k"], d["weight"]) == (1, 0.5)  # best mean top-1 over both directions
    assert d["leave_one_direction_out"]["a"]["params"]["k"] == 3  # chosen on b alone
    assert d["enabled"]  # +0.02 and +0.05 held out
    lose = {"a": _grid({(1, 0.05, 0.0): 0.60, (1, 0.05, 0.5): 0.70}),
            "b": _grid({(1, 0.05, 0.0): 0.50, (1, 0.05, 0.5): 0.45})}
    d = eb.decide(lose)
    assert not d["enabled"] and "-0.050" in d["reason"]  # worse in one direction: off by default
    tie = {"a": _grid({(1, 0.05, 0.0): 0.60, (1, 0.05, 0.5): 0.60}),
           "b": _grid({(1, 0.05, 0.0): 0.50, (1, 0.05, 0.5): 0.50})}
    assert eb.decide(tie)["weight"] == 0.0 and not eb.decide(tie)["enabled"]  # ties go to the smaller weight
    none = eb.decide({})
    assert not none["enabled"] and none["weight"] == eb.DEFAULT_PARAMS["weight"]
    with pytest.raises(ValueError, match="no cross-source grid"):
        eb.choose({})


@pytest.mark.slow  # the fixture run
def test_training_writes_a_disabled_sidecar_without_cross_source(triage_model_dir):
    from triage.classifier import TriageClassifier

    data = json.loads((triage_model_dir / EXEMPLAR_FILE).read_text())
    assert data["enabled"] is False  # the fixture runs no cross-source validation
    assert data["info"]["decision"]["reason"] == "no cross-source validation was run"
    sources = {p["source"] for p in data["provenance"]}
    assert "taxonomy_description" in sources and len(data["provenance"]) == len(data["centers"])
    assert set(data["info"]["validation"]) >= {"blend_accuracy", "head_accuracy", "blend_selective"}
    clf = TriageClassifier.load(triage_model_dir)
    assert clf.exemplars is not None and not clf.blend
    assert clf.exemplars.embeddings.shape[0] == len(data["centers"])


@pytest.mark.slow
def test_bank_never_holds_validation_or_test_text(settings):
    from training.triage_data import load_examples, make_splits
    from triage.taxonomy import load_taxonomy

    tax = load_taxonomy()
    df = make_splits(load_examples(settings), 13)
    texts, ys, prov = eb.bank_rows(df, tax, tax.model_labels())
    held = set(df[df["split"] != "train"]["text"])
    assert not held & set(texts)
    assert len(texts) == len(ys) == len(prov) == (df["split"] == "train").sum() + 2 * len(tax.model_labels())
