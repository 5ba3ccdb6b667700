"""The fused int8 export (training/onnx_export.py ``fuse_transformer`` / ``fused_int8``, issue 16) on a real 2-layer
MiniLM graph: the eager-attention export fuses (one Attention per layer, EmbedLayerNormalization), keeps the
``logits`` and ``embedding`` outputs, matches torch in fp32 and stays near fp32 in int8 (QAttention), and the
serving classifier runs it with its urgency head.  An SDPA export (nothing to fuse) and static-qdq are refused.
Speed and accuracy comparisons are in benchmarks/fused_int8.py, not here.
"""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from training import onnx_export
from triage.classifier import TriageClassifier

TEXTS = ["short", "a somewhat longer complaint about a sore throat and fever", "headache since monday",
         "my knee hurts when I climb stairs", "itchy red rash on both arms"]
LABELS = ["a", "b", "c"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from training.triage_train import load_tokenizer, new_model

    model = new_model(LABELS, layers=2).eval()
    tok = load_tokenizer()
    folder = tmp_path_factory.mktemp("fused")
    return folder, model, tok


def signature(path):
    graph = onnx.load(str(path)).graph
    return ([i.name for i in graph.input],
            [(o.name, [d.dim_param or d.dim_value for d in o.type.tensor_type.shape.dim]) for o in graph.output])


def run(path, tok, texts, batch_size=1):
    return onnx_export.onnx_logits(onnx_export.session(path), tok, texts, 32, batch_size=batch_size)


@pytest.mark.slow  # exports a model
def test_eager_export_fuses_and_keeps_outputs_and_parity(tiny):
    folder, model, tok = tiny
    before = model.config._attn_implementation
    fp32 = onnx_export.export_onnx(model, tok, folder / "eager.onnx", max_length=32, eager=True)
    assert model.config._attn_implementation == model.bert.config._attn_implementation == before  # restored
    stats = onnx_export.fuse_transformer(fp32, folder / "fused.onnx", model.config.num_attention_heads,
                                         model.config.hidden_size)
    assert stats["Attention"] == 2 and stats["EmbedLayerNormalization"] == 1 and stats["SkipLayerNormalization"] == 4
    assert signature(folder / "fused.onnx") == signature(fp32)
    assert signature(fp32)[1] == [("logits", ["batch", 3]), ("embedding", ["batch", 384])]
    ref = onnx_export.torch_logits(model, tok, TEXTS, 32)
    for batch in (1, 8):  # alone and in a padded batch (the fused attention reads the mask as lengths)
        assert np.abs(run(folder / "fused.onnx", tok, TEXTS, batch) - ref).max() < 1e-4
    par = onnx_export.parity(model, tok, fp32, TEXTS, 32)
    assert par["max_abs_diff"] < 1e-4 and par["top1_agreement"] == 1.0

    stats8 = onnx_export.fused_int8(fp32, folder / "fused.int8.onnx", "dynamic-per-channel",
                                    model.config.num_attention_heads, model.config.hidden_size)
    assert stats8 == stats
    ops = {n.op_type for n in onnx.load(str(folder / "fused.int8.onnx")).graph.node}
    assert {"QAttention", "QEmbedLayerNormalization", "MatMulInteger"} <= ops and "Attention" not in ops
    assert signature(folder / "fused.int8.onnx") == signature(fp32)
    got = run(folder / "fused.int8.onnx", tok, TEXTS)
    plain = run(onnx_export.quantize_int8(fp32, folder / "plain.int8.onnx", "dynamic-per-channel"), tok, TEXTS)
    assert np.isfinite(got).all() and np.abs(got - ref).max() < 0.5  # int8 error, not a broken graph
    assert np.abs(got - ref).max() < 3 * np.abs(plain - ref).max() + 0.05  # of the order of today's int8 error


@pytest.mark.slow  # exports a model
def test_the_classifier_serves_a_fused_int8_graph_with_its_embedding(tiny):
    folder, model, tok = tiny
    art = folder / "artefact"
    art.mkdir()
    fp32 = onnx_export.export_onnx(model, tok, art / "model.onnx", max_length=32, eager=True)
    onnx_export.fused_int8(fp32, art / "model.int8.onnx", "dynamic-per-channel", 12, 384)
    tok.save_pretrained(str(art / "tokenizer"))
    (art / "labels.json").write_text(json.dumps(LABELS))
    (art / "meta.json").write_text(json.dumps({"temperature": 1.0, "threshold": 0.0, "max_length": 32}))
    (art / "urgency_head.json").write_text(json.dumps({"labels": ["routine", "urgent"], "weights": [[0.0] * 384,
                                                       [0.01] * 384], "bias": [0.0, 0.0], "thresholds": {}}))
    _, ref_emb = TriageClassifier.from_folder(art, variant="fp32").predict_outputs(TEXTS)
    for threads in (1, 2):
        clf = TriageClassifier.from_folder(art, variant="int8", intra_op_threads=threads)
        logits, emb = clf.predict_outputs(TEXTS)
        assert logits.shape == (5, 3) and emb.shape == (5, 384)
        cos = (emb * ref_emb).sum(1) / (np.linalg.norm(emb, axis=1) * np.linalg.norm(ref_emb, axis=1))
        assert cos.min() > 0.95
        preds = clf.predict(TEXTS)
        assert all(p.urgency is not None and set(p.urgency) == {"routine", "urgent"} for p in preds)


@pytest.mark.slow  # exports a model
def test_nothing_to_fuse_and_static_qdq_are_refused(tiny):
    folder, model, tok = tiny
    sdpa = onnx_export.export_onnx(model, tok, folder / "sdpa.onnx", max_length=32)
    with pytest.raises(ValueError, match="no attention fused"):
        onnx_export.fuse_transformer(sdpa, folder / "x.onnx", 12, 384)
    with pytest.raises(ValueError, match="dynamic int8 schemes"):
        onnx_export.fused_int8(sdpa, folder / "x.int8.onnx", "static-qdq", 12, 384)
    assert not (folder / "x.onnx").exists() and not (folder / "x.int8.onnx").exists()


def test_fuse_is_an_export_option_off_by_default_and_refused_with_static_qdq(tmp_path):
    from serving.settings import Settings
    from training import distill, triage_train
    from training.distill import DistillError, DistillOptions
    from training.triage_train import TrainOptions

    assert TrainOptions().fuse is False and DistillOptions().fuse is False  # benchmarks/fused_int8.py: no faster
    assert triage_train.build_parser().parse_args(["--fuse"]).fuse is True
    assert triage_train.build_parser().parse_args([]).fuse is False
    assert distill.build_parser().parse_args(["--fuse"]).fuse is True
    assert distill.build_parser().parse_args(["--no-fuse"]).fuse is False
    with pytest.raises(DistillError, match="--fuse is for the dynamic int8 schemes"):
        distill.distil_triage(Settings(work_dir=tmp_path / "var", api_keys={}), teacher=str(tmp_path / "nope"),
                              fuse=True, int8_scheme="static-qdq")
