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
    DistillOptions,
    Distillation,
    attention_loss,
    check_hidden_map,
    check_layer_map,
    default_hidden_map,
    default_layer_map,
    distillation_loss,
    drop_near_heldout,
    hidden_state_loss,
    student_state,
    variant_options,
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


def test_default_hidden_map_targets_what_the_next_student_layer_reads():
    # student layer j holds teacher layer layer_map[j]; its output should be what teacher layer layer_map[j + 1]
    # reads in the teacher (the output of layer layer_map[j + 1] - 1); the last matches the teacher's last layer
    assert default_hidden_map((0, 5), 6) == (4, 5)
    assert default_hidden_map((0, 2, 5), 6) == (1, 4, 5)
    assert default_hidden_map((0,), 2) == (1,)
    assert default_hidden_map((0, 1, 2, 3, 4, 5), 6) == (0, 1, 2, 3, 4, 5)
    assert check_hidden_map([2, 5], 6, 2) == (2, 5)
    with pytest.raises(DistillError, match="names 1 layers"):
        check_hidden_map([5], 6, 2)
    with pytest.raises(DistillError, match="layers 0..5"):
        check_hidden_map([2, 6], 6, 2)


def test_hidden_state_loss_counts_real_tokens_only():
    import torch

    teacher = torch.zeros(2, 1, 3, 4)  # batch 2, one matched layer, 3 tokens, hidden 4
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    student = torch.zeros(2, 3, 4)
    student[0, 2] = 5.0  # a padded position: ignored
    student[1, 1:] = 7.0  # padded positions: ignored
    assert float(hidden_state_loss([student], teacher, mask)) == 0.0
    student[0, 0] = 1.0  # one real token off by 1 in each of 4 dims: squared error 4 over 3 real tokens x 4 dims
    assert float(hidden_state_loss([student], teacher, mask)) == pytest.approx(4 / 12)
    # two matched layers: the mean of the layers' losses
    two = torch.zeros(2, 2, 3, 4)
    assert float(hidden_state_loss([student, torch.zeros(2, 3, 4)], two, mask)) == pytest.approx(2 / 12)


def test_attention_loss_is_a_kl_over_real_query_rows():
    import torch

    mask = torch.tensor([[1, 1, 0]])
    peaked = torch.tensor([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.3, 0.3, 0.4]]]])  # [1, 1 head, 3, 3]
    assert float(attention_loss(peaked, peaked, mask)) == pytest.approx(0.0, abs=1e-6)
    flat = torch.tensor([[[[0.5, 0.5, 0.0], [0.5, 0.5, 0.0], [1.0, 0.0, 0.0]]]])  # padded query row differs: ignored
    assert float(attention_loss(flat, peaked, mask)) == pytest.approx(np.log(2), rel=1e-4)  # KL(peaked || flat)


def test_variant_options_are_typed_like_their_defaults():
    base = DistillOptions(hidden_weight=1.0)
    label, v = variant_options(base, "hidden_weight=0,augment=2,unlabelled=false")
    assert label == "hidden_weight=0,augment=2,unlabelled=false"
    assert v.hidden_weight == 0.0 and v.augment == 2 and v.unlabelled is False and base.hidden_weight == 1.0
    with pytest.raises(DistillError, match="not option=value"):
        variant_options(base, "nonsense=1")
    with pytest.raises(DistillError, match="not option=value"):
        variant_options(base, "alpha")


def _recipe_run(tmp_path, **opts) -> Distillation:
    from serving.settings import Settings

    run = Distillation(Settings(work_dir=tmp_path / "var", api_keys={}), DistillOptions(**opts), tmp_path, None,
                       {"cross_source_epochs": 2, "few_shot": "prototypes"}, [], 13, 80, (0, 5), pd.DataFrame(),
                       tmp_path, tmp_path / "model", tmp_path / "report")
    run.results = {"teacher": {"layers": 6}}
    run.hidden_map = default_hidden_map(run.layer_map, 6)
    return run


def test_cross_source_figures_are_reused_only_for_the_same_recipe(tmp_path):
    from training.distill import cross_source_recipe, reuse_cross_source

    earlier = _recipe_run(tmp_path, hidden_weight=1.0, cross_source_epochs=3)
    variant = _recipe_run(tmp_path, hidden_weight=0.0, cross_source_epochs=3)
    figures = {"speech->s2d": {"n_test": 10, "teacher": {"accuracy": 0.5, "macro_f1": 0.4},
                               "student": {"accuracy": 0.45, "macro_f1": 0.35},
                               "variants": {"hidden_weight=0": {"accuracy": 0.4, "macro_f1": 0.3}}}}
    path = tmp_path / "cross_source.json"
    path.write_text(json.dumps({"recipe": cross_source_recipe(earlier), "run_id": "abc", "results": figures,
                                "variant_recipes": {"hidden_weight=0": cross_source_recipe(variant)}}))

    same = _recipe_run(tmp_path, hidden_weight=1.0, cross_source_epochs=3)
    reuse_cross_source(same, path)
    assert same.results["cross_source"]["speech->s2d"]["student"]["accuracy"] == 0.45
    assert same.results["cross_source_measured_in"]["run_id"] == "abc"

    # this run's recipe is the earlier run's variant: that student's figures are reported
    as_variant = _recipe_run(tmp_path, hidden_weight=0.0, cross_source_epochs=3)
    reuse_cross_source(as_variant, path)
    c = as_variant.results["cross_source"]["speech->s2d"]
    assert c["student"]["accuracy"] == 0.4 and c["variants"]["recipe"]["accuracy"] == 0.45
    assert as_variant.results["cross_source_measured_in"]["student"] == "hidden_weight=0"

    other = _recipe_run(tmp_path, hidden_weight=1.0, cross_source_epochs=2)
    with pytest.raises(DistillError, match=r"differs from this run's in epochs \(3 there, 2 here\)"):
        reuse_cross_source(other, path)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(DistillError, match="not a cross_source.json"):
        reuse_cross_source(same, tmp_path / "bad.json")


@pytest.mark.slow  # loads the encoder
def test_teacher_internals_line_up_with_a_padded_student_batch():
    """Per-text teacher states padded into a batch equal the states of the same model run on that padded batch (the
    hidden and attention losses of a model against itself are ~0), and matching without them is refused."""
    import torch

    from training.distill import (
        padded_attention,
        padded_hidden,
        teacher_internals,
        train_student,
        use_eager_attention,
    )
    from training.triage_train import load_tokenizer, new_model

    tok = load_tokenizer()
    model = new_model(["a", "b", "c"], layers=2).eval()
    texts = ["short", "a much longer complaint about a sore throat and a fever for three days", "headache again"]
    hidden, attn = teacher_internals(model, tok, texts, 32, (0, 1), attention=True)
    enc = tok(texts, padding=True, truncation=True, max_length=32, return_tensors="pt")
    lengths = enc["attention_mask"].sum(1).tolist()
    assert [h.shape for h in hidden] == [(2, n, 384) for n in lengths]
    assert [a.shape for a in attn] == [(12, n, n) for n in lengths]
    use_eager_attention(model)
    with torch.no_grad():
        out = model.bert(**enc, output_hidden_states=True, output_attentions=True)
    length = enc["input_ids"].shape[1]
    h = hidden_state_loss(list(out.hidden_states[1:]), padded_hidden(hidden, length), enc["attention_mask"])
    a = attention_loss(out.attentions[-1], padded_attention(attn, length), enc["attention_mask"])
    assert float(h) < 1e-4 and float(a) < 1e-3  # float16 storage
    with pytest.raises(DistillError, match="needs the teacher's internals"):
        train_student(model, tok, ["a", "b", "c"], (0,), texts, np.array([0, 1, 2]), np.zeros((3, 3)),
                      np.zeros((3, 384)), None, None, DistillOptions(hidden_weight=1.0, progress=False), 32, 13)


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


def test_int8_options_are_parsed_and_checked_before_the_teacher_is_read(tmp_path, capsys):
    from serving.settings import Settings

    args = distill.build_parser().parse_args(["--int8-scheme", "static-qdq", "--int8-exclude", " classifier, layer.0/output",
                                              "--int8-calibration", "50", "--center-statements"])
    assert args.int8_scheme == "static-qdq" and args.int8_calibration == 50 and args.center_statements
    assert DistillOptions().int8_scheme == "dynamic-per-channel" and DistillOptions().int8_exclude == ()
    with pytest.raises(SystemExit):
        distill.build_parser().parse_args(["--int8-scheme", "int4"])
    assert "invalid choice" in capsys.readouterr().err
    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    with pytest.raises(DistillError, match="unknown int8 scheme 'int4'"):
        distill.distil_triage(settings, teacher=str(tmp_path / "nope"), int8_scheme="int4")
    with pytest.raises(DistillError, match="int8-calibration"):
        distill.distil_triage(settings, teacher=str(tmp_path / "nope"), int8_scheme="static-qdq", int8_calibration=0)


@pytest.mark.slow
def test_center_statement_rows_join_the_training_split_only(triage_model_dir, tmp_path):
    from serving.settings import Settings

    settings = Settings(work_dir=tmp_path / "var", api_keys={})
    plain = distill.prepare(settings, DistillOptions(teacher=str(triage_model_dir), output_dir=tmp_path / "a"))
    run = distill.prepare(settings, DistillOptions(teacher=str(triage_model_dir), center_statements=True,
                                                   output_dir=tmp_path / "b"))
    added = run.df[run.df["source"] == "center_guidance"]
    assert len(added) > 0 and set(added["split"]) == {"train"}
    assert run.texts["val"] == plain.texts["val"] and run.texts["test"] == plain.texts["test"]  # same held-out rows
    assert len(run.texts["train"]) == len(plain.texts["train"]) + len(added)


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
        int8_scheme="static-qdq", int8_calibration=20, output_dir=tmp_path / "run")
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
    # the int8 graph is the chosen scheme's: static QDQ calibrated on 20 training texts
    assert clf.meta["quantization"] == {"scheme": "static-qdq", "exclude": [], "calibration_texts": 20}
    assert "QuantizeLinear" in {n.op_type for n in onnx.load(str(clf.folder / "model.int8.onnx")).graph.node}
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
