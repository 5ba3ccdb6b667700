"""Fixtures for the ddi-severity model (owned by the risk-model area).

``ddi_training`` trains a small real model once per session (a subset of DDInter, few trees) into its own
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
    result = train_ddi(settings, fast=True, limit=3000, max_iter=20, alias="champion")
    return settings, result


@pytest.fixture(scope="session")
def ddi_model_dir(ddi_training):
    return ddi_training[1].model_dir


@pytest.fixture(scope="session")
def ddi_settings(ddi_training):
    return ddi_training[0]
