"""int8 schemes of the ONNX export (training/onnx_export.py, issue 16) on a real 1-layer MiniLM graph.

Each scheme gives a graph that onnxruntime runs with logits near the fp32 graph's; exclusions keep the named nodes
in fp32; static QDQ with fixed activation scales gives the same logits alone or in a padded batch; bad requests
are refused by name.  Timing and accuracy comparisons are in benchmarks/int8_schemes.py, not here.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest

from training import onnx_export

TEXTS = ["short", "a somewhat longer complaint about a sore throat and fever", "headache since monday",
         "my knee hurts when I climb stairs", "itchy red rash on both arms"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from training.triage_train import load_tokenizer, new_model

    model = new_model(["a", "b", "c"], layers=1).eval()
    tok = load_tokenizer()
    folder = tmp_path_factory.mktemp("int8")
    fp32 = onnx_export.export_onnx(model, tok, folder / "m.onnx", max_length=32)
    return folder, fp32, tok


def run(path, tok, texts):
    return onnx_export.onnx_logits(onnx_export.session(path), tok, texts, 32, batch_size=1)


@pytest.mark.slow  # exports a model
@pytest.mark.parametrize("scheme", sorted(onnx_export.QUANT_SCHEMES))
def test_every_scheme_gives_a_runnable_graph_close_to_fp32(tiny, scheme):
    folder, fp32, tok = tiny
    calib = onnx_export.calibration_feeds(tok, TEXTS, 32) if scheme == "static-qdq" else None
    int8 = onnx_export.quantize_int8(fp32, folder / f"{scheme}.onnx", scheme, calibration=calib)
    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert ("QuantizeLinear" in ops) if scheme == "static-qdq" else ("MatMulInteger" in ops)
    ref, got = run(fp32, tok, TEXTS), run(int8, tok, TEXTS)
    assert got.shape == ref.shape and np.isfinite(got).all()
    assert np.abs(ref - got).max() < 0.5  # int8 error, not a broken graph (fp32 logits span several units)


@pytest.mark.slow  # exports a model
def test_excluded_nodes_stay_fp32_and_a_pattern_matching_nothing_is_refused(tiny):
    folder, fp32, tok = tiny
    names = onnx_export.quantizable_nodes(fp32)
    assert any("word_embeddings" in n for n in names) and any("classifier" in n for n in names)
    assert sum("MatMul" in n for n in names) == 6  # q, k, v, attention output, FFN in, FFN out of one layer
    kept = onnx_export.excluded_nodes(fp32, ["classifier", "layer.0/output/dense"])
    assert len(kept) == 3 and "/classifier/Gemm_MatMul" in kept  # the name the quantiser gives the Gemm's MatMul
    int8 = onnx_export.quantize_int8(fp32, folder / "excl.onnx", "dynamic", exclude=["classifier", "word_embeddings"])
    graph = onnx.load(str(int8)).graph
    head = {n.op_type for n in graph.node if n.name.startswith("/classifier/")}
    assert "MatMulInteger" not in head and head & {"Gemm", "MatMul"}  # the head runs in fp32
    assert not any(n.op_type == "DequantizeLinear" and "word_embeddings" in n.name for n in graph.node)
    plain = onnx.load(str(onnx_export.quantize_int8(fp32, folder / "plain.onnx"))).graph
    assert "MatMulInteger" in {n.op_type for n in plain.node if n.name.startswith("/classifier/")}
    with pytest.raises(ValueError, match="'no_such_layer' matches no quantisable node"):
        onnx_export.quantize_int8(fp32, folder / "bad.onnx", "dynamic", exclude=["no_such_layer"])


@pytest.mark.slow  # exports a model
def test_static_qdq_is_batch_invariant_and_needs_calibration(tiny):
    folder, fp32, tok = tiny
    with pytest.raises(ValueError, match="calibration"):
        onnx_export.quantize_int8(fp32, folder / "s.onnx", "static-qdq")
    with pytest.raises(ValueError, match="unknown int8 scheme 'int4'"):
        onnx_export.quantize_int8(fp32, folder / "s.onnx", "int4")
    static = onnx_export.quantize_int8(fp32, folder / "s.onnx", "static-qdq",
                                       calibration=onnx_export.calibration_feeds(tok, TEXTS, 32))
    alone = run(static, tok, TEXTS)
    padded = onnx_export.onnx_logits(onnx_export.session(static), tok, TEXTS, 32, batch_size=8)
    assert np.abs(alone - padded).max() < 1e-3  # fixed activation scales: the neighbours do not matter
