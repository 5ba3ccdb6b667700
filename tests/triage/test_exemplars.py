"""Nearest-exemplar blend (triage.exemplars): hand-worked scores and blends, the sidecar file format, and the
classifier reading it from a real artefact (session fixture) in the same encoder pass."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from triage.classifier import ModelArtifactError, TriageClassifier
from triage.exemplars import (
    EXEMPLAR_FILE,
    ExemplarBlend,
    ExemplarError,
    blend_log_probs,
    center_scores,
    log_softmax,
)

BANK = np.array([[1, 0, 0], [0.8, 0.6, 0], [0, 1, 0], [0, 0, 1]], dtype=np.float32)  # unit rows
BANK_Y = np.array([0, 0, 1, 2])


def test_center_scores_top_k_and_prototype():
    q = np.array([[1, 0, 0], [0, 2, 0]], dtype=np.float32)  # not unit: normalised inside
    s1 = center_scores(q, BANK, BANK_Y, 4, k=1)
    assert s1[0].tolist() == pytest.approx([1.0, 0.0, 0.0, -1.0])  # center 3 has no exemplar: -1
    assert s1[1].tolist() == pytest.approx([0.6, 1.0, 0.0, -1.0])
    s2 = center_scores(q, BANK, BANK_Y, 4, k=2)
    assert s2[0, 0] == pytest.approx(0.9) and s2[1, 0] == pytest.approx(0.3)  # mean of both center-0 cosines
    assert center_scores(q, BANK, BANK_Y, 4, k=50)[0, 0] == pytest.approx(0.9)  # k above the center's count
    proto = center_scores(q, BANK, BANK_Y, 4, k=0)  # cosine to the normalised mean [0.9, 0.3, 0]
    assert proto[0, 0] == pytest.approx(0.9 / np.hypot(0.9, 0.3))


def test_blend_weight_zero_is_the_head_and_one_is_the_neighbours():
    head = log_softmax(np.array([[2.0, 0.0, -1.0]]))
    scores = np.array([[0.1, 0.9, 0.2]])
    assert np.allclose(blend_log_probs(head, scores, 0.0, 0.05), head)
    only_nn = log_softmax(blend_log_probs(head, scores, 1.0, 0.05))
    assert np.allclose(only_nn, log_softmax(scores / 0.05))
    mid = log_softmax(blend_log_probs(head, scores, 0.5, 0.05))
    assert mid.argmax() == 1 and np.isclose(np.exp(mid).sum(), 1.0)
    with pytest.raises(ExemplarError, match="weight"):
        blend_log_probs(head, scores, 1.5, 0.05)
    with pytest.raises(ExemplarError, match="tau"):
        blend_log_probs(head, scores, 0.5, 0.0)


def _blend(labels, dim=3, **kw):
    emb = np.eye(len(labels), dim, dtype=np.float32)
    args = dict(k=1, tau=0.05, weight=0.5, temperature=1.0, threshold=0.3, enabled=True,
                provenance=tuple({"text": f"t{i}", "center": c, "source": "s", "origin": "project"}
                                 for i, c in enumerate(labels)))
    args.update(kw)
    return ExemplarBlend(tuple(labels), emb, np.arange(len(labels)), **args)


def test_sidecar_round_trip_and_clear_errors(tmp_path):
    labels = ["a", "b", "c"]
    _blend(labels).save(tmp_path)
    back = ExemplarBlend.load(tmp_path, labels, dim=3)
    q = np.array([[0.2, 0.9, 0.1], [1.0, 0.0, 0.0]])
    for k in (0, 1, 2):  # the precomputed scores equal the plain function
        bk = _blend(labels, k=k)
        assert np.allclose(bk.scores(q), center_scores(q, bk.embeddings, bk.centers, 3, k))
    assert back.labels == tuple(labels) and back.k == 1 and back.enabled and back.threshold == 0.3
    assert back.provenance[1]["center"] == "b" and back.embeddings.shape == (3, 3)
    with pytest.raises(ExemplarError, match="labels differ"):
        ExemplarBlend.load(tmp_path, ["a", "c", "b"])
    with pytest.raises(ExemplarError, match="dimension 4"):
        ExemplarBlend.load(tmp_path, labels, dim=4)
    data = json.loads((tmp_path / EXEMPLAR_FILE).read_text())
    (tmp_path / EXEMPLAR_FILE).write_text(json.dumps({**data, "weight": 2.0}))
    with pytest.raises(ExemplarError, match="weight must be in"):
        ExemplarBlend.load(tmp_path, labels)
    (tmp_path / EXEMPLAR_FILE).write_text(json.dumps({**data, "centers": ["a", "b", "zzz"]}))
    with pytest.raises(ExemplarError, match="malformed"):
        ExemplarBlend.load(tmp_path, labels)
    (tmp_path / EXEMPLAR_FILE).write_text("{not json")
    with pytest.raises(ExemplarError, match="malformed"):
        ExemplarBlend.load(tmp_path, labels)


# ---------------------------------------------------------------------------- with a real artefact
def _copy(src: Path, dst: Path) -> Path:
    dst.mkdir()
    for item in src.iterdir():
        if item.suffix == ".onnx":
            os.symlink(item, dst / item.name)
        elif item.is_dir():
            shutil.copytree(item, dst / item.name)
        elif not item.name.startswith("center_exemplars"):
            shutil.copy(item, dst / item.name)
    return dst


TEXTS = ["I have had a dry cough and a fever for three days", "my knee hurts when I climb stairs",
         "There is an itchy red rash on my arms", "my gums bleed when I brush my teeth"]


@pytest.mark.slow  # uses the trained fixture model
def test_classifier_blends_in_the_same_pass(triage_model_dir, tmp_path):
    from training.exemplar_blend import build_sidecar

    folder = _copy(triage_model_dir, tmp_path / "m")
    head_clf = TriageClassifier.load(folder)
    assert head_clf.exemplars is None and not head_clf.blend
    with pytest.raises(ModelArtifactError, match="cannot blend"):
        TriageClassifier.load(folder, blend=True)
    labels = head_clf.labels
    # a bank of one exemplar per text, deliberately labelled with a center the head does not rank first
    head_top = [p.centers[0][0] for p in head_clf.predict(TEXTS)]
    bank_y = np.array([(labels.index(c) + 1) % len(labels) for c in head_top])
    prov = [{"text": t, "center": labels[y], "source": "test", "origin": "project"} for t, y in zip(TEXTS, bank_y)]
    sidecar = build_sidecar(head_clf, TEXTS, bank_y, prov, TEXTS, bank_y,
                            {"k": 1, "tau": 0.01, "weight": 1.0, "enabled": True})
    sidecar.save(folder)
    clf = TriageClassifier.load(folder)  # enabled in the sidecar: used by default
    assert clf.blend and clf.threshold == pytest.approx(sidecar.threshold)
    assert clf.info()["exemplar_blend"]["used"] is True
    preds = clf.predict(TEXTS)
    # weight 1 with a sharp tau: each text's nearest exemplar (itself) decides
    assert [p.centers[0][0] for p in preds] == [labels[y] for y in bank_y]
    probs = clf.predict_proba(TEXTS)
    assert np.allclose(probs.sum(1), 1.0)
    assert np.allclose(sorted(probs[0])[::-1], [v for _, v in preds[0].centers])
    off = TriageClassifier.load(folder, blend=False)  # the head alone, its own threshold
    assert not off.blend and off.threshold == pytest.approx(off.head_threshold)
    assert np.allclose(off.predict_proba(TEXTS), head_clf.predict_proba(TEXTS))
    # a disabled sidecar is not used unless asked
    data = json.loads((folder / EXEMPLAR_FILE).read_text())
    (folder / EXEMPLAR_FILE).write_text(json.dumps({**data, "enabled": False}))
    assert not TriageClassifier.load(folder).blend and TriageClassifier.load(folder, blend=True).blend
    (folder / EXEMPLAR_FILE).write_text(json.dumps({**data, "labels": labels[::-1]}))
    with pytest.raises(ModelArtifactError, match="labels differ"):
        TriageClassifier.load(folder)
