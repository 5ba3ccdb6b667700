"""ddi-severity training: real DDInter data, real MLflow store in a temp dir, real ONNX export."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # trains and exports DDI models (the fast tier leaves them out)

from serving.settings import get_settings
from training import ddi_data
from training.ddi_train import (
    LABELS,
    PairFeaturiser,
    _resolve_opts,
    drug_features,
    evaluate,
    export,
    fit_final,
    fit_scenario,
    prepare_data,
    split_pairs,
    train_ddi,
    write_meta,
    write_report,
)


@pytest.fixture(scope="module")
def pairs():
    return ddi_data.load_pairs()


def test_pairs_are_unique_unordered_and_known_severity(pairs):
    assert (pairs["drug_a"] < pairs["drug_b"]).all()
    assert not pairs.duplicated(["drug_a", "drug_b"]).any()
    assert set(pairs["level"]) == set(LABELS)          # Unknown excluded
    # DDInter README: 160,235 unique pairs of which 29,813 Unknown
    assert len(pairs) == 160_235 - 29_813
    with_unknown = ddi_data.load_pairs(include_unknown=True)
    assert len(with_unknown) == 160_235


def test_drug_disjoint_split_really_disjoint_and_reproducible(pairs):
    s = ddi_data.drug_disjoint_split(pairs, seed=3)
    held = set(s["test_drugs"])
    train = pairs.iloc[s["train"]]
    train_drugs = set(train["drug_a"]) | set(train["drug_b"])
    assert held and not (held & train_drugs)
    one = pairs.iloc[s["one_unseen"]]
    assert ((one["drug_a"].isin(held)).astype(int) + one["drug_b"].isin(held).astype(int) == 1).all()
    both = pairs.iloc[s["both_unseen"]]
    assert both["drug_a"].isin(held).all() and both["drug_b"].isin(held).all()
    assert len(s["train"]) + len(s["one_unseen"]) + len(s["both_unseen"]) == len(pairs)
    again = ddi_data.drug_disjoint_split(pairs, seed=3)
    assert again["test_drugs"] == s["test_drugs"]
    assert ddi_data.drug_disjoint_split(pairs, seed=4)["test_drugs"] != s["test_drugs"]


def test_out_of_fold_features_never_see_own_label():
    """A drug with a single labelled pair must look unseen (no own profile) to that pair in training."""
    _, feats = drug_features(get_settings(), False, 256, 2)    # what --fast uses (cached per process)
    fz = PairFeaturiser(feats, k=3)
    ra = np.array([0, 0, 0, 5], dtype=np.int64)   # drug 5 and 6 each have one pair: (5, 6)
    rb = np.array([1, 2, 3, 6], dtype=np.int64)
    y = np.array([0, 1, 1, 2], dtype=np.int64)
    prior = np.array([0.2, 0.7, 0.1])
    x = fz.train_matrix(ra, rb, y, prior, seed=0, mask_rate=0.0, folds=4)
    ctx = fz.context(ra, rb, y, prior)
    names = fz.feature_names(ctx)
    col = names.index("sum:has_profile")
    assert x[3, col] == 0          # out of fold: (5, 6) is its own fold, neither drug has other labels
    full = ctx.pair_features(ra[3:], rb[3:])
    assert full[0, col] == 2       # with its own label in the context both drugs look "seen"


def test_pair_features_symmetric():
    _, feats = drug_features(get_settings(), False, 256, 2)    # what --fast uses (cached per process)
    fz = PairFeaturiser(feats, k=3)
    rng = np.random.default_rng(0)
    ra, rb = rng.integers(0, 500, 200), rng.integers(500, 1000, 200)
    y = rng.integers(0, 3, 200)
    ctx = fz.context(ra, rb, y, np.array([0.2, 0.7, 0.1]))
    ia, ib = rng.integers(0, len(feats.names), 50), rng.integers(0, len(feats.names), 50)
    np.testing.assert_array_equal(ctx.pair_features(ia, ib), ctx.pair_features(ib, ia))


def test_evaluate_metrics():
    y = np.array([0, 1, 1, 2, 0, 1])
    perfect = np.eye(3)[y] * 0.98 + 0.01 / 1
    m = evaluate(y, perfect / perfect.sum(1, keepdims=True))
    assert m["accuracy"] == 1.0 and m["macro_f1"] == 1.0 and m["major_auroc"] == 1.0
    wrong = np.eye(3)[(y + 1) % 3]
    assert evaluate(y, wrong)["accuracy"] == 0.0


def test_unknown_or_bad_options_are_refused(settings):
    with pytest.raises(TypeError, match="max_itre"):
        train_ddi(settings, fast=True, max_itre=3)
    with pytest.raises(ValueError, match="limit"):
        train_ddi(settings, fast=True, limit=10)
    with pytest.raises(ValueError, match="test_drug_frac"):
        train_ddi(settings, fast=True, test_drug_frac=1.5)


def test_train_exports_checks_parity_logs_and_registers(ddi_training):
    """On the session's DDI training (tests/plugins/ddi_model.py: ``train_ddi(fast=True, limit=1500, max_iter=8,
    detector_limit=3000, alias="champion")`` into its own store), not a second full training of the same pipeline."""
    import mlflow
    from mlflow import MlflowClient

    from training import registry

    settings, res = ddi_training
    assert res.version == "1"
    for f in ("model.onnx", "drug_features.npz", "labels.json", "meta.json"):
        assert (res.model_dir / f).is_file(), f
    meta = json.loads((res.model_dir / "meta.json").read_text())
    assert meta["labels"] == LABELS and meta["run_id"] == res.run_id
    assert meta["parity"]["parity_max_abs_prob_diff"] < 1e-4
    assert meta["parity"]["parity_argmax_agreement"] == 1.0
    for split in ("random", "one_unseen", "both_unseen"):
        assert set(meta["metrics"][split]) == {"model", "majority", "logreg_id_atc"}
        assert 0 <= res.metrics[split]["macro_f1"] <= 1
    registry.configure(settings)
    assert registry.get_alias_version("ddi-severity", "champion") == "1"
    run = MlflowClient().get_run(res.run_id)
    assert "one_unseen.model.macro_f1" in run.data.metrics
    assert run.data.params["limit"] == "1500"
    assert any(k.startswith("data.ddinter/") for k in run.data.tags)
    arts = {a.path for a in MlflowClient().list_artifacts(res.run_id)}
    assert {"model", "plots", "splits", "report.md", "data_sha256.json"} <= arts
    hashes = mlflow.artifacts.load_dict(f"runs:/{res.run_id}/data_sha256.json")
    assert hashes["ddinter/ddinter_downloads_code_A.csv"].startswith("5bb75de3")
    folder, version = registry.resolve_model_dir("models:/ddi-severity@champion", settings)
    assert version == "1" and (folder / "model.onnx").is_file()
    # the held-out drugs are saved with the run
    splits = np.load(res.model_dir.parent / "splits.npz")
    assert len(splits["test_drugs"]) > 0
    # the interaction detector: ONNX + calibration + threshold in the artifact, its figures on the run
    assert (res.model_dir / "detector.onnx").is_file()
    det = json.loads((res.model_dir / "detector.json").read_text())
    assert det["target_precision"] == 0.8 and det["max_predicted_severity"] == "moderate"
    assert len(det["calibration_x"]) == len(det["calibration_y"]) >= 2
    assert 0 <= det["threshold"] <= 1.01 and det["parity"]["parity_max_abs_prob_diff"] < 1e-4
    assert {"random", "one_unseen", "both_unseen", "served", "data"} <= set(det["metrics"])
    assert det["metrics"]["data"]["positive_share"] < 0.5  # assumed negatives outnumber listed pairs
    assert meta["detector"]["threshold"] == det["threshold"]
    assert "detector.threshold" in run.data.metrics and "detector.one_unseen.aupr" in run.data.metrics
    assert "plots/detector.png" in {a.path for a in MlflowClient().list_artifacts(res.run_id, "plots")}
    assert "## Interaction detector" in (res.model_dir.parent / "report.md").read_text()


# ------------------------------------------------------------------------------ pipeline steps, one at a time
def _small_run(settings, **overrides):
    """A fast run's data (1500 pairs), split: the state ``train_ddi``'s later steps start from."""
    opts = _resolve_opts(True, {"limit": 1500, "max_iter": 3, **overrides})
    run = prepare_data(settings, opts, True, time.perf_counter())
    split_pairs(run)
    return run


def test_prepare_data_and_split(settings):
    run = _small_run(settings)
    assert len(run.pairs) == 1500 and run.n_all == 160_235 - 29_813
    aliases = run.feats.aliases
    assert [aliases[n] for n in run.pairs["drug_a"]] == run.ra.tolist()
    assert [aliases[n] for n in run.pairs["drug_b"]] == run.rb.tolist()
    assert [LABELS[i] for i in run.y] == run.pairs["level"].tolist()
    assert set(run.timings) == {"data_s"}
    assert sorted(np.concatenate([run.random_train, run.random_test]).tolist()) == list(range(1500))
    assert len(run.random_test) == 300  # test_frac 0.2
    cold = np.concatenate([run.cold["train"], run.cold["one_unseen"], run.cold["both_unseen"]])
    assert sorted(cold.tolist()) == list(range(1500))
    assert {k: set(tests) for k, (_, tests) in run.scenarios.items()} == {
        "random": {"random"}, "drug_disjoint": {"one_unseen", "both_unseen"}}
    again = _small_run(settings)  # seeded: the same subset and splits
    assert again.pairs.equals(run.pairs) and (again.random_test == run.random_test).all()
    assert again.cold["test_drugs"] == run.cold["test_drugs"]


def test_fit_scenario_evaluates_model_and_baselines_on_each_non_empty_split(settings):
    run = _small_run(settings)
    train, tests = run.scenarios["random"]
    fit_scenario(run, "random", train, {**tests, "empty": np.array([], dtype=np.int64)})
    assert set(run.metrics) == set(run.curves) == {"random"}  # the empty split is skipped
    assert set(run.metrics["random"]) == {"model", "majority", "logreg_id_atc"}
    assert set(run.curves["random"]) == {"model", "logreg_id_atc"}  # no majority curve in the plot
    assert run.metrics["random"]["model"]["n"] == len(tests["random"])
    # max_iter=3 and early stopping needs 5 rounds without gain: the fitted model runs all 3, and that is recorded
    assert run.n_iters["random"] == 3 and run.timings["random_s"] > 0


def test_final_fit_export_meta_and_report_without_mlflow(settings):
    run = _small_run(settings)
    for scenario, (train, tests) in run.scenarios.items():
        fit_scenario(run, scenario, train, tests)
    fit_final(run)
    assert run.x_all.shape == (1500, run.n_features) and run.prior.sum() == pytest.approx(1)
    assert run.n_iters["final"] <= 3 and run.final.predict_proba(run.x_all[:4]).shape == (4, len(LABELS))
    run.run_id = "no-mlflow"
    export(run)
    assert run.model_dir == settings.work_dir / "ddi-builds" / "no-mlflow" / "model"
    assert {f.name for f in run.model_dir.iterdir()} == {"model.onnx", "drug_features.npz", "labels.json"}
    assert run.parity["parity_max_abs_prob_diff"] < 1e-4 and run.parity["parity_n"] == 1500
    assert run.x_all is None  # dropped once the parity is checked
    write_meta(run)
    meta = json.loads((run.model_dir / "meta.json").read_text())
    assert meta["run_id"] == "no-mlflow" and meta["n_pairs"] == 1500 and meta["metrics"].keys() == run.metrics.keys()
    assert len(json.loads((run.model_dir / "feature_names.json").read_text())) == run.n_features
    assert "ddinter/ddinter_downloads_code_A.csv" in run.data_hashes
    write_report(run)
    assert "| one_unseen | model |" in (run.build / "report.md").read_text()
    assert {"splits.npz", "reliability.png", "report.md"} <= {f.name for f in run.build.iterdir()}
