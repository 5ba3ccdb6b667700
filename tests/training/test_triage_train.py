"""Triage training pipeline: what a run logs and registers, export parity, bad input."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pandas as pd
import pytest

from training import exemplar_blend, registry, wise_ft
from training.triage_train import (
    TRIAGE_MODEL_NAME,
    TrainOptions,
    _cross_source,
    build_parser,
    class_weights,
    train_triage,
)


def _run(settings, version):
    from mlflow import MlflowClient

    registry.configure(settings)
    client = MlflowClient()
    mv = client.get_model_version(TRIAGE_MODEL_NAME, version)
    return client, client.get_run(mv.run_id)


def test_run_logs_params_metrics_data_hashes_and_report(triage_registry):
    settings, version = triage_registry
    client, run = _run(settings, version)
    assert run.data.params["layers"] == "2"
    assert run.data.params["few_shot"] == "prototypes"
    tags = run.data.tags
    assert tags["taxonomy_version"] and tags["git_commit"]
    assert any(k.startswith("data.medical_speech_intent/") for k in tags)
    assert any(k.startswith("data.symptom2disease/") for k in tags)
    m = run.data.metrics
    for key in ("test_accuracy", "test_macro_f1", "test_top3_accuracy", "test_ece_before", "test_ece_after",
                "temperature", "threshold", "baseline_test_accuracy", "onnx_int8_accuracy", "val_macro_f1"):
        assert key in m, key
    assert m["onnx_max_abs_diff"] < 1e-3
    assert len(client.get_metric_history(run.info.run_id, "val_macro_f1")) >= 1  # per-epoch
    arts = {a.path for top in ("report", "model", "data") for a in client.list_artifacts(run.info.run_id, top)}
    for name in ("report/triage_report.md", "report/confusion_matrix.png", "report/reliability.png",
                 "report/metrics.json", "data/split.csv", "data/dataset_sha256.json", "model/model.onnx",
                 "model/model.int8.onnx", "model/meta.json", "model/labels.json"):
        assert name in arts, name
    assert registry.get_alias_version(TRIAGE_MODEL_NAME, registry.CHAMPION) == version


def test_saved_split_keeps_project_rows_out_of_test(triage_registry, tmp_path):
    import mlflow

    settings, version = triage_registry
    _, run = _run(settings, version)
    path = mlflow.artifacts.download_artifacts(run_id=run.info.run_id, artifact_path="data/split.csv", dst_path=str(tmp_path))
    split = pd.read_csv(path)
    assert set(split["split"]) == {"train", "val", "test"}
    assert not ((split["split"] == "test") & (split["origin"] == "project")).any()
    # no phrase group on both sides of the split
    sides = split.groupby("group")["split"].nunique()
    assert (sides == 1).all()


def test_bootstrap_reuses_the_existing_champion(triage_registry):
    from training.bootstrap import ensure_model

    settings, version = triage_registry
    assert f"-> version {version} (" in ensure_model(settings, train=True)  # no second training run


def test_class_weights_balance_and_skip_absent_classes():
    w = class_weights(np.array([0, 0, 0, 1]), 3)
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0])
    assert (w[:2] * np.array([3, 1])).sum() == pytest.approx(4)


def test_bad_training_input_is_named(settings):
    from training.triage_data import TriageDataError

    frame = pd.DataFrame({"text": ["tooth ache"], "center": ["astrology"], "source": ["x"], "group": ["g"],
                          "origin": ["project"], "source_label": ["x"]})
    with pytest.raises(TriageDataError, match="astrology"):
        train_triage(settings, examples=frame, progress=False)
    with pytest.raises(TriageDataError, match="no triage training examples"):
        train_triage(settings, examples=frame.iloc[:0], progress=False)
    with pytest.raises(ValueError, match="unknown few-shot method 'magic'"):
        train_triage(settings, few_shot="magic")
    with pytest.raises(ValueError, match="epochs"):
        train_triage(settings, epochs=0)
    from training.triage_train import TrainOptions

    assert TrainOptions().int8_scheme == "dynamic-per-channel"  # chosen on validation fidelity (issue 16)
    with pytest.raises(ValueError, match="int8 scheme 'int4'"):
        train_triage(settings, int8_scheme="int4")
    with pytest.raises(ValueError, match="static-qdq: distill only"):
        train_triage(settings, int8_scheme="static-qdq")


@pytest.mark.slow  # trains or exports a model
def test_onnx_export_parity_and_int8(tmp_path):
    from training import onnx_export
    from training.triage_train import load_tokenizer, new_model

    model = new_model(["a", "b", "c"], layers=1).eval()
    tok = load_tokenizer()
    texts = ["short", "a somewhat longer complaint about a sore throat and fever", "headache"]
    fp32 = onnx_export.export_onnx(model, tok, tmp_path / "m.onnx", max_length=32)
    par = onnx_export.parity(model, tok, fp32, texts, 32)
    assert par["max_abs_diff"] < 1e-4 and par["top1_agreement"] == 1.0
    # dynamic axes: a batch of 5 with a longer sequence than traced runs
    logits = onnx_export.onnx_logits(onnx_export.session(fp32), tok, texts + ["x " * 30, "y"], 64)
    assert logits.shape == (5, 3)
    int8 = onnx_export.quantize_int8(fp32, tmp_path / "m.int8.onnx")
    assert int8.stat().st_size < fp32.stat().st_size / 2
    with pytest.raises(ValueError, match="at least one text"):
        onnx_export.parity(model, tok, fp32, [], 32)


@pytest.mark.slow  # trains or exports a model
def test_cross_source_runs_both_directions_with_baseline(settings):
    from training.triage_data import load_examples
    from triage.taxonomy import load_taxonomy

    df = load_examples(settings)
    # "both" also exercises the SetFit-style pair stage and the prototype head
    opts = TrainOptions(layers=1, epochs=1, limit_per_center=3, max_length=32, progress=False, few_shot="both",
                        wise_ft=True)
    results = _cross_source(df, opts, load_taxonomy())
    assert set(results) == {"speech->s2d", "s2d->speech"}
    for res in results.values():
        assert len(res["centers"]) >= 2
        for who in ("model", "baseline"):
            assert 0.0 <= res[who]["accuracy"] <= 1.0 and 0.0 <= res[who]["macro_f1"] <= 1.0
        # the nearest-exemplar grid (issue 12), scored on the held-out source; weight 0 is the model itself
        grid = res["blend_grid"]
        assert len(grid) == np.prod([len(v) for v in exemplar_blend.GRID.values()])
        assert [r["accuracy"] for r in grid if r["weight"] == 0.0][0] == pytest.approx(res["model"]["accuracy"])
    assert "leave_one_direction_out" in exemplar_blend.decide({n: r["blend_grid"] for n, r in results.items()})
    # the WiSE-FT grid (issue 12): alpha 1 is the fine-tuned model itself, alpha 0 its zero-shot start
    for res in results.values():
        by_alpha = {r["alpha"]: r["heldout"] for r in res["wise_ft_grid"]}
        assert set(by_alpha) == set(wise_ft.ALPHAS)
        assert by_alpha[1.0]["accuracy"] == pytest.approx(res["model"]["accuracy"])
    assert "leave_one_direction_out" in wise_ft.decide({n: r["wise_ft_grid"] for n, r in results.items()})


def test_cli_options():
    args = build_parser().parse_args(
        ["--epochs", "2", "--layers", "2", "--limit-per-center", "5", "--no-register", "--alias", "challenger",
         "--no-cross-source", "--few-shot", "both", "--max-length", "64"]
    )
    opts = TrainOptions(**vars(args))
    assert dataclasses.asdict(opts)["layers"] == 2 and not opts.register and not opts.cross_source
    assert opts.alias == "challenger" and opts.few_shot == "both" and opts.limit_per_center == 5
    assert opts.exemplars and not TrainOptions(**vars(build_parser().parse_args(["--no-exemplars"]))).exemplars
    assert not opts.wise_ft and TrainOptions(**vars(build_parser().parse_args(["--wise-ft"]))).wise_ft
    assert not opts.center_statements  # issue 12: opt-in until a full retrain is measured
    assert TrainOptions(**vars(build_parser().parse_args(["--center-statements"]))).center_statements
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--few-shot", "magic"])
    with pytest.raises(SystemExit):
        import contextlib

        with contextlib.redirect_stderr(io.StringIO()):
            build_parser().parse_args(["--epochs", "many"])


@pytest.mark.slow  # trains three small models
def test_training_applies_the_cross_source_chosen_weight_ensemble(settings, tmp_path):
    import json

    from training.triage_train import train_triage

    result = train_triage(settings, layers=1, epochs=1, limit_per_center=3, max_length=32, progress=False,
                          register=False, urgency=False, exemplars=False, cross_source=True, wise_ft=True,
                          output_dir=tmp_path / "run")
    details = result.metrics["details"]
    decision = details["wise_ft"]["decision"]
    assert set(decision["leave_one_direction_out"]) == {"speech->s2d", "s2d->speech"}
    assert decision["alpha"] in wise_ft.ALPHAS and decision["enabled"] == (decision["alpha"] != 1.0)
    grid = details["wise_ft"]["main_model_grid"]
    # only alphas that keep the main model's validation top-1 (within MAX_VALIDATION_DROP) were candidates
    assert decision["candidates"] == sorted(wise_ft.allowed_alphas(grid)) and decision["alpha"] in decision["candidates"]
    assert [r["alpha"] for r in grid] == list(wise_ft.ALPHAS)
    assert {"validation", "test", "blind_v1", "blind_v2"} <= set(grid[0])
    # the artefact is the chosen ensemble: its in-source test accuracy is the grid's at the chosen alpha
    chosen = next(r for r in grid if r["alpha"] == decision["alpha"])
    assert details["test"]["model"]["accuracy"] == pytest.approx(chosen["test"]["accuracy"])
    assert json.loads((result.model_dir / "meta.json").read_text())["wise_ft_alpha"] == decision["alpha"]
    assert "decision: alpha" in (result.model_dir.parent / "report" / "wise_ft.md").read_text()
