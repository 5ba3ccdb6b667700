"""The specialty-center taxonomy: loads, is consistent, and rejects bad files with a clear error."""

from __future__ import annotations

import json

import pytest

from triage.taxonomy import (
    EMERGENCY_CENTER,
    Center,
    Taxonomy,
    TaxonomyError,
    load_taxonomy,
    parse_taxonomy,
)

REQUIRED = {
    "respiratory", "cardiology", "gastroenterology", "hepatology", "endocrinology", "neurology",
    "orthopedics", "foot_ankle", "dermatology", "ent", "ophthalmology", "oral_care", "psychiatry",
    "urology", "obgyn", "pediatrics", "infectious_disease", "general_medicine",
}


def test_default_taxonomy_loads_with_required_centers():
    tax = load_taxonomy()
    assert isinstance(tax, Taxonomy)
    assert tax.version.strip()
    assert REQUIRED <= set(tax.ids())
    assert EMERGENCY_CENTER in tax.ids()
    assert len(tax.ids()) == len(set(tax.ids())), "center ids must be unique"


def test_names_and_descriptions_present():
    for c in load_taxonomy().centers:
        assert isinstance(c, Center)
        assert c.name_en.strip() and c.description.strip()
        assert any("\u4e00" <= ch <= "\u9fff" for ch in c.name_zh), f"{c.id}: name_zh should be Chinese"


def test_emergency_is_not_routable_and_model_labels_are_routable_in_file_order():
    tax = load_taxonomy()
    assert tax.get(EMERGENCY_CENTER).routable is False
    labels = tax.model_labels()
    assert EMERGENCY_CENTER not in labels
    assert labels == [c.id for c in tax.centers if c.routable]
    assert labels == load_taxonomy().model_labels()  # stable order = classifier label order


def test_get_unknown_center_names_it():
    tax = load_taxonomy()
    assert tax.get("ent").name_zh == "耳鼻喉科"
    with pytest.raises(KeyError) as err:
        tax.get("cardiologyy")
    assert "cardiologyy" in str(err.value)
    assert "cardiology" in str(err.value)  # lists the known ids


def _write(tmp_path, data):
    path = tmp_path / "tax.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def _center(cid, **kw):
    return {"id": cid, "name_en": cid.title(), "name_zh": "科", "description": "d", **kw}


def test_custom_file_loads(tmp_path):
    tax = load_taxonomy(_write(tmp_path, {"version": "t-1", "centers": [_center("a"), _center("emergency", routable=False)]}))
    assert tax.version == "t-1" and tax.model_labels() == ["a"]


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"centers": [_center("a")]}, "version"),
        ({"version": "1", "centers": []}, "non-empty"),
        ({"version": "1", "centers": [_center("a"), _center("a")]}, "duplicate center id 'a'"),
        ({"version": "1", "centers": [_center("a", name_zh="")]}, "name_zh"),
        ({"version": "1", "centers": [_center("a"), _center("emergency")]}, "routable=false"),
        ({"version": "1", "centers": [_center("Bad Id")]}, "lower_snake_case"),
    ],
)
def test_bad_taxonomy_is_rejected_with_reason(tmp_path, data, message):
    with pytest.raises(TaxonomyError, match=message):
        load_taxonomy(_write(tmp_path, data))


def test_missing_or_invalid_file(tmp_path):
    with pytest.raises(TaxonomyError, match="not found"):
        load_taxonomy(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json", encoding="utf-8")
    with pytest.raises(TaxonomyError, match="not valid JSON"):
        load_taxonomy(bad)


def test_parse_roundtrip():
    tax = load_taxonomy()
    assert parse_taxonomy(tax.to_dict()) == tax
