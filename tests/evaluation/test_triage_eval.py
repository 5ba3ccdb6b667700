"""Evaluation maths on hand-made arrays (values worked out by hand), baseline, report and plots."""

from __future__ import annotations

import math

import numpy as np
import pytest

from evaluation import triage_eval as ev

LABELS = ["a", "b", "c"]


def test_ece_by_hand():
    # two bins: conf 0.9 (2 items, 1 correct -> acc 0.5), conf 0.6 (2 items, both correct -> acc 1.0)
    probs = np.array([[0.9, 0.05, 0.05], [0.9, 0.05, 0.05], [0.2, 0.6, 0.2], [0.2, 0.6, 0.2]])
    y = np.array([0, 1, 1, 1])
    # ECE = 2/4*|0.5-0.9| + 2/4*|1.0-0.6| = 0.2 + 0.2
    assert ev.expected_calibration_error(y, probs, n_bins=10) == pytest.approx(0.4)
    perfect = np.array([[1.0, 0, 0], [0, 1.0, 0]])
    assert ev.expected_calibration_error([0, 1], perfect) == pytest.approx(0.0)


def test_classification_metrics_by_hand():
    probs = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.3, 0.2], [0.3, 0.3, 0.4]])
    y = np.array([0, 1, 1, 2])
    m = ev.classification_metrics(y, probs, LABELS)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["per_center"]["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert m["per_center"]["b"]["recall"] == pytest.approx(0.5)
    assert m["macro_f1"] == pytest.approx((2 / 3 + 2 / 3 + 1.0) / 3)
    # third item: true b ranked 2nd -> counted by top-3 (and top-2)
    assert m["top3_accuracy"] == 1.0
    assert ev.top_k_accuracy(y, probs, 1) == pytest.approx(0.75)


def test_selective_accuracy_and_threshold_choice():
    probs = np.array([[0.95, 0.05, 0], [0.9, 0.1, 0], [0.8, 0.2, 0], [0.6, 0.4, 0], [0.5, 0.5, 0]])
    y = np.array([0, 0, 0, 1, 0])  # sorted by confidence: right, right, right, wrong, right
    sel = ev.selective(y, probs, 0.8)
    assert sel["coverage"] == pytest.approx(0.6)
    assert sel["selective_accuracy"] == pytest.approx(1.0)
    choice = ev.choose_threshold(y, probs, target=0.95)
    assert choice["threshold"] == pytest.approx(0.8) and choice["target_met"]
    # 0.75 is reached by answering 4 items (3/4) -- lowest threshold with max coverage: all 5 = 4/5
    assert ev.choose_threshold(y, probs, target=0.75)["threshold"] == pytest.approx(0.5)
    # unreachable target: best selective accuracy reported, flagged
    never = ev.choose_threshold(np.array([1, 1]), np.array([[0.9, 0.1, 0], [0.8, 0.2, 0]]), target=0.95)
    assert not never["target_met"] and never["selective_accuracy"] == 0.0
    assert math.isnan(ev.selective(y, probs, 1.5)["selective_accuracy"])


def test_temperature_fit_recovers_known_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(size=(4000, 5)) * 2
    y = np.array([rng.choice(5, p=p) for p in ev.softmax(true_logits)])
    # an over-confident model: logits scaled by 3 -> fitted temperature ~3
    t = ev.fit_temperature(y, true_logits * 3)
    assert t == pytest.approx(3.0, rel=0.1)
    assert ev.nll(y, true_logits * 3, t) < ev.nll(y, true_logits * 3, 1.0)
    assert ev.expected_calibration_error(y, ev.softmax(true_logits * 3, t)) < ev.expected_calibration_error(
        y, ev.softmax(true_logits * 3)
    )


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="zero examples"):
        ev.classification_metrics([], np.zeros((0, 3)), LABELS)
    with pytest.raises(ValueError, match="3 items but probs has 2 rows"):
        ev.expected_calibration_error([0, 1, 2], np.eye(3)[:2])
    with pytest.raises(ValueError, match="outside 0..2"):
        ev.top_k_accuracy([5], np.eye(3)[:1])


def test_restrict_renormalises_onto_shared_classes():
    p = ev.restrict(np.array([[0.5, 0.3, 0.2], [0.0, 0.0, 1.0]]), [0, 1])
    assert p[0] == pytest.approx([0.625, 0.375, 0.0])
    assert p[1] == pytest.approx([0.5, 0.5, 0.0])


def test_baseline_report_and_plots(tmp_path):
    train = ["cough and fever", "dry cough at night", "itchy rash", "red itchy skin", "knee pain", "sore knee joint"]
    y = np.array([0, 0, 1, 1, 2, 2])
    probs = ev.tfidf_baseline(train, y, ["my cough is bad", "rash on my arm"], 3)
    assert probs.shape == (2, 3) and probs.argmax(1).tolist() == [0, 1]
    cm = ev.confusion([0, 1, 1], [0, 1, 0], 2)
    assert cm.tolist() == [[1, 0], [1, 1]]
    png1 = ev.plot_confusion([0, 1, 2], [0, 1, 1], LABELS, tmp_path / "cm.png")
    png2 = ev.plot_reliability([0, 1], np.eye(3)[:2] * 0.9 + 0.03, np.eye(3)[:2] * 0.6 + 0.13, tmp_path / "rel.png")
    for png in (png1, png2):
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = ev.classification_metrics([0, 1], probs, LABELS)
    m["ece"] = 0.1
    m["selective"] = ev.selective([0, 1], probs, 0.4)
    report = ev.write_report(
        {"run_id": "r1", "test": {"model": m}, "calibration": {"temperature": 1.5},
         "cross_source": {"speech->s2d": {"centers": ["a", "b"], "n_test": 2, "model": m, "baseline": m}}},
        tmp_path / "r.md",
    ).read_text()
    assert "| model | 2 | 100.0%" in report and "speech->s2d" in report and "temperature" in report
