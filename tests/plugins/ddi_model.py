"""Fixtures for the ddi-severity model (owned by the risk-model area).

``ddi_training`` trains a small real model once per session (1,500 DDInter pairs, 8 boosting rounds) into its own
temp MLflow store, exports it to ONNX and registers it as version 1 of ``ddi-severity`` with alias
``champion``.  ``ddi_model_dir`` is that artifact folder (what ``DDIPredictor.load(path)`` takes);
``ddi_settings`` are the Settings whose registry holds it (``DDIPredictor.load("models:/ddi-severity@champion",
ddi_settings)``).
"""

from __future__ import annotations

import pytest

from serving.settings import Settings


@pytest.fixture(scope="session")
def ddi_training(tmp_path_factory):
    from training.ddi_train import train_ddi

    settings = Settings(work_dir=tmp_path_factory.mktemp("ddi") / "var", api_keys={})
    # small on purpose (the tests check the pipeline's artefacts and plumbing, not the model's quality): half the
    # pairs, few boosting rounds and half the detector's sample of the --fast run (~125 s CPU at 3000/20/6000)
    result = train_ddi(settings, fast=True, limit=1500, max_iter=8, detector_limit=3000, alias="champion")
    return settings, result


@pytest.fixture(scope="session")
def ddi_model_dir(ddi_training):
    return ddi_training[1].model_dir


@pytest.fixture(scope="session")
def ddi_settings(ddi_training):
    return ddi_training[0]
