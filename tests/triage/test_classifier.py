"""TriageClassifier against a real trained artifact (session fixture) and broken copies of it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from triage.classifier import (
    ModelArtifactError,
    ModelFolderNotFoundError,
    Prediction,
    TriageClassifier,
)
from triage.taxonomy import load_taxonomy

TEXTS = [
    "I have had a dry cough and a fever for three days",
    "my knee hurts when I climb stairs",
    "There is an itchy red rash on my arms",
]


def _copy(src: Path, dst: Path) -> Path:
    """Artifact copy with the big ONNX files symlinked (cheap) and the small files copied."""
    dst.mkdir()
    for item in src.iterdir():
        if item.suffix == ".onnx":
            os.symlink(item, dst / item.name)
        elif item.is_dir():
            shutil.copytree(item, dst / item.name)
        else:
            shutil.copy(item, dst / item.name)
    return dst


def _set_meta(folder: Path, **changes) -> None:
    meta = json.loads((folder / "meta.json").read_text())
    meta.update(changes)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_artifact_layout(triage_model_dir):
    for name in ("model.onnx", "model.int8.onnx", "labels.json", "meta.json", "tokenizer/tokenizer.json"):
        assert (triage_model_dir / name).is_file(), name
    meta = json.loads((triage_model_dir / "meta.json").read_text())
    assert meta["taxonomy_version"] == load_taxonomy().version
    assert meta["temperature"] > 0 and 0 <= meta["threshold"] <= 1
    assert meta["parity_max_abs_diff"] < 1e-3


@pytest.mark.parametrize("variant", ["int8", "fp32"])
def test_predict_ranks_all_labels_with_probabilities(triage_model_dir, variant):
    clf = TriageClassifier.load(str(triage_model_dir), variant=variant)
    assert clf.variant == variant
    assert clf.labels == load_taxonomy().model_labels()
    preds = clf.predict(TEXTS)
    assert len(preds) == len(TEXTS)
    for pred in preds:
        assert isinstance(pred, Prediction)
        assert sorted(c for c, _ in pred.centers) == sorted(clf.labels)
        probs = [p for _, p in pred.centers]
        assert probs == sorted(probs, reverse=True)
        assert abs(sum(probs) - 1.0) < 1e-6
        assert pred.abstained == (probs[0] < clf.threshold)
        assert (pred.abstain_reason is None) == (not pred.abstained)


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_batched_equals_single(triage_model_dir, variant):
    """A text's result never depends on what else is in the call (int8 runs texts one by one)."""
    clf = TriageClassifier.load(str(triage_model_dir), variant=variant)
    batch = clf.predict_logits(TEXTS)
    single = np.concatenate([clf.predict_logits([t]) for t in TEXTS])
    assert batch.shape == (len(TEXTS), len(clf.labels))
    assert np.abs(batch - single).max() < 1e-4


def test_int8_parallel_sessions_give_the_sequential_logits(triage_model_dir):
    """With two threads the int8 per-text mode spreads a call over two single-threaded sessions; every text is
    still run alone, so the logits equal a one-session run exactly, in the caller's order."""
    texts = TEXTS * 5 + ["my child has a temperature and will not eat"]
    parallel = TriageClassifier.load(str(triage_model_dir), variant="int8", intra_op_threads=2)
    sequential = TriageClassifier.load(str(triage_model_dir), variant="int8", intra_op_threads=1)
    assert parallel.info()["parallel_sessions"] == 2 and sequential.info()["parallel_sessions"] == 1
    np.testing.assert_array_equal(parallel.predict_logits(texts), sequential.predict_logits(texts))
    assert parallel.predict_logits(texts[:1]).shape == (1, len(parallel.labels))
    with pytest.raises(ValueError, match="intra_op_threads"):
        TriageClassifier.load(str(triage_model_dir), variant="int8", intra_op_threads=0)


def test_int8_batched_mode_runs_one_call(triage_model_dir):
    clf = TriageClassifier.load(str(triage_model_dir), variant="int8", deterministic=False)
    ref = TriageClassifier.load(str(triage_model_dir), variant="int8")
    logits = clf.predict_logits(TEXTS)
    assert logits.shape == (len(TEXTS), len(clf.labels))
    # same model, only activation-quantisation ranges differ: rankings stay close
    assert np.abs(logits - ref.predict_logits(TEXTS)).max() < 2.0


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(ModelFolderNotFoundError, match="does-not-exist"):
        TriageClassifier.load(tmp_path / "does-not-exist")


def test_abstention_follows_threshold(triage_model_dir, tmp_path):
    folder = _copy(triage_model_dir, tmp_path / "m")
    _set_meta(folder, threshold=1.01)
    preds = TriageClassifier.load(str(folder)).predict(TEXTS)
    assert all(p.abstained for p in preds)
    assert "below threshold 1.01" in preds[0].abstain_reason
    _set_meta(folder, threshold=0.0)
    assert not any(p.abstained for p in TriageClassifier.load(str(folder)).predict(TEXTS))


def test_temperature_changes_sharpness_not_ranking(triage_model_dir, tmp_path):
    folder = _copy(triage_model_dir, tmp_path / "m")
    _set_meta(folder, temperature=1.0)
    sharp = TriageClassifier.load(str(folder), variant="fp32").predict(TEXTS[:1])[0]
    _set_meta(folder, temperature=5.0)
    flat = TriageClassifier.load(str(folder), variant="fp32").predict(TEXTS[:1])[0]
    assert [c for c, _ in sharp.centers] == [c for c, _ in flat.centers]
    assert flat.centers[0][1] < sharp.centers[0][1]


def test_bad_inputs(triage_model_dir):
    clf = TriageClassifier.load(str(triage_model_dir))
    assert clf.predict([]) == []
    assert clf.predict_logits([]).shape == (0, len(clf.labels))
    with pytest.raises(ValueError, match=r"texts\[1\] is empty"):
        clf.predict(["headache", "  \n\t "])
    with pytest.raises(TypeError, match="list of strings"):
        clf.predict("headache")
    with pytest.raises(TypeError, match=r"texts\[0\]"):
        clf.predict([None])
    with pytest.raises(ValueError, match="unknown model variant"):
        TriageClassifier.load(str(triage_model_dir), variant="fp16")


def test_corrupt_onnx_is_a_clear_error(triage_model_dir, tmp_path):
    folder = _copy(triage_model_dir, tmp_path / "m")
    (folder / "model.int8.onnx").unlink()
    (folder / "model.int8.onnx").write_bytes(b"this is not an onnx model")
    with pytest.raises(ModelArtifactError, match="cannot load ONNX model .*model.int8.onnx"):
        TriageClassifier.load(str(folder))
    (folder / "model.int8.onnx").unlink()
    with pytest.raises(ModelArtifactError, match="lacks model.int8.onnx"):
        TriageClassifier.load(str(folder))


def test_broken_metadata_is_a_clear_error(triage_model_dir, tmp_path):
    folder = _copy(triage_model_dir, tmp_path / "m")
    labels = json.loads((folder / "labels.json").read_text())
    (folder / "labels.json").write_text(json.dumps(labels[:-1]))
    with pytest.raises(ModelArtifactError, match="incompatible with 18 labels"):
        TriageClassifier.load(str(folder), variant="fp32")
    (folder / "labels.json").write_text("{not json")
    with pytest.raises(ModelArtifactError, match="cannot parse .*labels.json"):
        TriageClassifier.load(str(folder))
    (folder / "labels.json").write_text(json.dumps(labels))
    _set_meta(folder, temperature="hot")
    with pytest.raises(ModelArtifactError, match="temperature"):
        TriageClassifier.load(str(folder))
    (folder / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(ModelArtifactError, match="lacks tokenizer/tokenizer.json"):
        TriageClassifier.load(str(folder))


def test_serving_path_imports_no_torch(triage_model_dir):
    code = (
        "import sys\n"
        "from triage.classifier import TriageClassifier\n"
        f"clf = TriageClassifier.load({str(triage_model_dir)!r})\n"
        "clf.predict(['my ear hurts'])\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers was imported'\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_serving_normalisation_matches_training():
    from training.triage_data import normalise_text
    from triage.classifier import clean_text

    for text in ["a\u200bb  c", "\uff46\uff55\uff4c\uff4c width\x00x", " cough\n\tand fever ", "头痛 三天"]:
        assert clean_text(text) == normalise_text(text)
    with pytest.raises(ValueError, match="empty after normalisation"):
        TriageClassifier._check(None, ["\u200b\x00"])  # noqa: SLF001 - input check without a model
