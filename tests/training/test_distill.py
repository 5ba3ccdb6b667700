"""The distilled triage student (training/distill.py).

Fast: layer choice, the loss, the weight surgery, the transfer-set hygiene, the command line.
Slow (trains the 2-layer fixture teacher once per session): a 1-layer student distilled from it is served by the
unchanged classifier with the teacher's labels and an urgency head, and registered in its own registry with its
lifecycle evaluation; the gate, not the pipeline, decides about champion.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from training import distill
from training.distill import (
    DistillError,
    check_layer_map,
    default_layer_map,
    distillation_loss,
    drop_near_heldout,
    student_state,
    word_dropout,
)


def test_default_layer_map_spreads_layers_keeping_first_and_last():
    assert default_layer_map(6, 3) == (0, 2, 5)
    assert default_layer_map(6, 2) == (0, 5)
    assert default_layer_map(6, 6) == (0, 1, 2, 3, 4, 5)
    assert default_layer_map(2, 1) == (0,)
    with pytest.raises(DistillError, match="1..6"):
        default_layer_map(6, 7)
    with pytest.raises(DistillError):
        default_layer_map(6, 0)


def test_check_layer_map_refuses_wrong_length_range_and_order():
    assert check_layer_map([0, 3, 5], 6, 3) == (0, 3, 5)
    with pytest.raises(DistillError, match="names 2 layers"):
        check_layer_map([0, 5], 6, 3)
    with pytest.raises(DistillError, match="layers 0..5"):
        check_layer_map([0, 2, 6], 6, 3)
    with pytest.raises(DistillError, match="increasing"):
        check_layer_map([2, 0, 5], 6, 3)


def test_distillation_loss_parts():
    import torch

    logits = torch.tensor([[2.0, 0.0, -1.0], [0.5, 1.5, 0.0]])
    same = logits.clone()
    labels = torch.tensor([0, -1])  # the second row has no hard label
    loss, parts = distillation_loss(logits, same, labels, temperature=2.0, alpha=1.0)
    assert parts["soft"] == pytest.approx(0.0, abs=1e-6) and float(loss) == pytest.approx(0.0, abs=1e-6)
    loss, parts = distillation_loss(logits, same, labels, temperature=2.0, alpha=0.0)
    expected = torch.nn.functional.cross_entropy(logits[:1], labels[:1])
    assert float(loss) == pytest.approx(float(expected), rel=1e-6)  # only the labelled row counts
    other = torch.tensor([[0.0, 2.0, 0.0], [3.0, 0.0, 0.0]])
    _, parts = distillation_loss(logits, other, labels, temperature=2.0, alpha=0.5)
    assert parts["soft"] > 0.1
    emb = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    _, parts = distillation_loss(logits, same, labels, 2.0, 0.5, student_embedding=emb, teacher_embedding=emb,
                                 embedding_weight=1.0)
    assert parts["embedding"] == pytest.approx(0.0, abs=1e-6)
    _, parts = distillation_loss(logits, same, labels, 2.0, 0.5, student_embedding=emb,
                                 teacher_embedding=emb.flip(1), embedding_weight=1.0)
    assert parts["embedding"] == pytest.approx(1.0)  # orthogonal: 1 - cos = 1
    _, parts = distillation_loss(logits, same, torch.tensor([-1, -1]), 2.0, 0.0)
    assert parts["hard"] == 0.0  # a batch without labels


def test_student_state_renumbers_the_chosen_layers():
    teacher = {"bert.embeddings.word_embeddings.weight": "E", "classifier.weight": "W",
               **{f"bert.encoder.layer.{i}.output.dense.weight": f"L{i}" for i in range(6)}}
    out = student_state(teacher, (0, 2, 5))
    assert out["bert.encoder.layer.0.output.dense.weight"] == "L0"
    assert out["bert.encoder.layer.1.output.dense.weight"] == "L2"
    assert out["bert.encoder.layer.2.output.dense.weight"] == "L5"
    assert "bert.encoder.layer.3.output.dense.weight" not in out
    assert out["bert.embeddings.word_embeddings.weight"] == "E" and out["classifier.weight"] == "W"


def test_word_dropout_is_seeded_and_keeps_short_texts():
    text = "I have had a sore throat and a fever for three days now"
    a = word_dropout(text, np.random.default_rng(1))
    assert a == word_dropout(text, np.random.default_rng(1))
    assert a != text and set(a.split()) <= set(text.split())
    assert word_dropout("chest pain", np.random.default_rng(1)) == "chest pain"


def test_transfer_candidates_near_a_heldout_text_are_removed():
    held = ["I have had a dry cough and a fever for three days", "my gums bleed when I brush my teeth"]
    candidates = pd.DataFrame({"text": ["I have had a dry cough and a fever for three days!",  # near duplicate
                                        "My gums bleed when I brush my teeth",  # same after normalisation
                                        "sharp pain in my right ankle after running"]})
    kept = drop_near_heldout(candidates, held)
    assert list(kept["text"]) == ["sharp pain in my right ankle after running"]


def test_cli_refuses_a_malformed_layer_map(capsys):
    with pytest.raises(SystemExit):
        distill.main(["--layer-map", "0,x,5"])
    assert "comma-separated" in capsys.readouterr().err


def test_cli_is_dispatched_from_python_m_training():
    from training.__main__ import COMMANDS

    assert COMMANDS["distill"][0] == "training.distill"


def test_a_missing_teacher_is_a_clear_error(tmp_path, capsys):
    from serving.settings import Settings

    with pytest.raises(DistillError, match="teacher .*not found"):
        distill.distil_triage(Settings(work_dir=tmp_path / "var", api_keys={}), teacher=str(tmp_path / "nope"))


@pytest.mark.slow
def test_distilled_student_is_served_unchanged_and_registered_with_its_evaluation(triage_model_dir, tmp_path):
    """2 -> 1 layer on a few texts per center, into a registry of its own (the fixture's stays untouched)."""
    import onnx
    from mlflow import MlflowClient

    from serving.components import load_triage_classifier
    from serving.settings import Settings
    from training import registry
    from triage.taxonomy import URGENCY_LEVELS

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    result = distill.distil_triage(
        settings, teacher=str(triage_model_dir), layers=1, epochs=1, limit_per_center=4, unlabelled_limit=40,
        urgency_per_statement=2, urgency_limit=3, urgency_external=False, cross_source=False, progress=False,
        output_dir=tmp_path / "run")
    assert result.version == "1"
    details = result.metrics["details"]
    assert details["layer_map"] == [0] and details["teacher"]["layers"] == 2
    assert details["teacher_rebuild_parity"]["max_abs_diff"] < 1e-3  # the teacher rebuilt from its ONNX graph
    sources = set(pd.read_csv(tmp_path / "run" / "report" / "transfer.csv")["source"])
    assert {"augmented", "guidance_derived", "taxonomy_description"} <= sources

    # the service's loader, unchanged, serves it: same labels, an urgency head, one encoder layer
    clf = load_triage_classifier(f"models:/triage-classifier/{result.version}", settings)
    teacher_labels = json.loads((triage_model_dir / "labels.json").read_text())
    assert clf.labels == teacher_labels
    assert clf.urgency_head is not None and list(clf.urgency_head.labels) == list(URGENCY_LEVELS)
    [pred] = clf.predict(["I have had a dry cough and a fever for three days"])
    assert len(pred.centers) == len(teacher_labels) and set(pred.urgency) == set(URGENCY_LEVELS)
    assert clf.meta["layers"] == 1 and clf.meta["distillation"]["teacher_layers"] == 2
    graph = onnx.load(str(clf.folder / "model.onnx"))
    assert sum(n.op_type == "Softmax" for n in graph.graph.node) == 1  # one attention block
    teacher_graph = onnx.load(str(triage_model_dir / "model.onnx"))
    assert sum(n.op_type == "Softmax" for n in teacher_graph.graph.node) == 2

    # registered with its evaluation (the lifecycle's evaluator on the same held-out rows), logged to its run
    registry.configure(settings)
    client = MlflowClient()
    mv = client.get_model_version("triage-classifier", result.version)
    assert mv.tags["distilled_from"] == str(triage_model_dir) and mv.tags["layers"] == "1"
    metrics = client.get_run(mv.run_id).data.metrics
    for key in ("registered_eval_accuracy", "registered_eval_macro_f1", "registered_eval_ece",
                "registered_eval_selective_accuracy", "registered_eval_urgency_emergency_recall"):
        assert key in metrics
    assert metrics["registered_eval_n"] > 0
    assert "teacher_test_accuracy" in metrics and "test_top1_agreement" in metrics

    # the gate decides: a 1-layer student trained for one epoch on 4 texts per center fails its minimums, so
    # no champion is set (nothing is forced)
    promotion = result.metrics["promotion"]
    assert promotion["promoted"] is False and promotion["failures"]
    assert registry.get_alias_version("triage-classifier", registry.CHAMPION) is None
    assert client.get_run(mv.run_id).data.tags["promotion"] == "not promoted"
