"""serving.components: settings and registry URIs turned into the domain objects."""

from __future__ import annotations

import pytest

from serving.components import policy_from_settings
from serving.settings import Settings


def test_policy_from_settings():
    pol = policy_from_settings(Settings(api_keys={}))
    assert pol.block == {"contraindicated"} and pol.review == {"major", "moderate"}
    strict = policy_from_settings(Settings(api_keys={}, verdict_block_severities=["contraindicated", "major"],
                                           ddi_review_threshold=0.7))
    assert strict.block == {"contraindicated", "major"} and strict.ddi_review_threshold == 0.7
    with pytest.raises(ValueError, match="verdict_review_severities has unknown severities"):
        policy_from_settings(Settings(api_keys={}, verdict_review_severities=["severe"]))


def test_triage_classifier_from_registry_alias_and_version(triage_registry):
    import numpy as np

    from serving.components import load_triage_classifier

    settings, version = triage_registry
    clf = load_triage_classifier("models:/triage-classifier@champion", settings)
    assert clf.version == version
    by_number = load_triage_classifier(f"models:/triage-classifier/{version}", settings)
    assert by_number.version == version
    text = ["I have had a dry cough and a fever for three days"]
    assert np.allclose(clf.predict_logits(text), by_number.predict_logits(text))


def test_unknown_alias_and_missing_folder_are_named(triage_registry, tmp_path):
    from serving.components import load_triage_classifier
    from serving.registry import ModelNotFoundError

    settings, _ = triage_registry
    with pytest.raises(ModelNotFoundError, match="nosuchalias"):
        load_triage_classifier("models:/triage-classifier@nosuchalias", settings)
    with pytest.raises(ModelNotFoundError, match="does-not-exist"):
        load_triage_classifier(str(tmp_path / "does-not-exist"), settings)
