import pytest

from prescription_check.normalize import (FuzzyIndex, clean, dose_to_mg, frequency_per_day, levenshtein,
                                          split_combination, strip_salts)


def test_clean_and_salts():
    assert clean("  Metformin HCl®  ") == "metformin hcl"
    assert strip_salts("metformin hydrochloride") == "metformin"
    assert strip_salts("amlodipine besylate") == "amlodipine"
    assert strip_salts("potassium chloride") == "potassium chloride"  # the salt is the drug
    assert strip_salts("valproic acid") == "valproic acid"


def test_split_combination():
    assert split_combination("amoxicillin and clavulanic acid") == ["amoxicillin", "clavulanic acid"]
    assert split_combination("abacavir, dolutegravir, and lamivudine") == ["abacavir", "dolutegravir", "lamivudine"]
    assert split_combination("sulfamethoxazole/trimethoprim") == ["sulfamethoxazole", "trimethoprim"]
    assert split_combination("anti-inflammatory agents, non-steroidal") == ["anti-inflammatory agents, non-steroidal"]


@pytest.mark.parametrize("freq,per_day", [
    ("bid", 2), ("b.i.d.", 2), ("TID", 3), ("qid", 4), ("q6h", 4), ("q4-6h", 6), ("every 8 hours", 3), ("qhs", 1),
    ("once weekly", 1 / 7), ("weekly", 1 / 7), ("every other day", 0.5), ("twice a day", 2), ("3 times daily", 3),
    ("q12h", 2), ("daily", 1), ("once a week", 1 / 7), ("q72h", 1 / 3), ("monthly", 1 / 30)])
def test_frequency(freq, per_day):
    assert frequency_per_day(freq) == pytest.approx(per_day)


def test_frequency_unknown_is_none():
    assert frequency_per_day("whenever") is None
    assert frequency_per_day(None) is None


def test_units():
    assert dose_to_mg(1, "g") == 1000
    assert dose_to_mg(1, "gm") == 1000
    assert dose_to_mg(500, "mcg") == pytest.approx(0.5)
    assert dose_to_mg(10, "mL", strength_mg_per_ml=50) == 500
    assert dose_to_mg(10, "mL") is None  # no strength: cannot convert
    assert dose_to_mg(2, "tabs", strength_mg_per_unit=500) == 1000
    assert dose_to_mg(20, "units") is None


def test_levenshtein_and_fuzzy():
    assert levenshtein("amoxicilin", "amoxicillin", 2) == 1
    assert levenshtein("lisinopirl", "lisinopril", 2) == 1  # transposition
    assert levenshtein("abc", "xyzabc", 2) == 3
    idx = FuzzyIndex(["amoxicillin", "ampicillin", "lisinopril"])
    assert idx.lookup("amoxicilin") == "amoxicillin"
    assert idx.lookup("zzzzzzzzz") is None
    assert idx.lookup("amo") is None  # too short for fuzzy matching


@pytest.mark.parametrize("written,ingredients", [
    ("Tylenol", ["acetaminophen"]), ("APAP", ["acetaminophen"]), ("paracetamol", ["acetaminophen"]),
    ("HCTZ", ["hydrochlorothiazide"]), ("ASA", ["aspirin"]), ("Bactrim DS", ["sulfamethoxazole", "trimethoprim"]),
    ("Augmentin", ["amoxicillin", "clavulanic acid"]), ("amoxicilin", ["amoxicillin"]),
    ("Metformin Hydrochloride", ["metformin"]), ("amlodipine besylate", ["amlodipine"]),
    ("amoxicillin/clavulanate", ["amoxicillin", "clavulanic acid"]), ("LASIX", ["furosemide"]),
    ("salbutamol", ["albuterol"]), ("metformin ER 500", ["metformin"]), ("lisinoprill", ["lisinopril"]),
])
def test_normalizer_resolves(rx_checker, written, ingredients):
    res = rx_checker.kb.normalizer.resolve(written)
    assert res.ingredients == ingredients, (written, res)


def test_normalizer_strengths_and_unknown(rx_checker):
    res = rx_checker.kb.normalizer.resolve("Bactrim DS")
    assert res.strengths_mg == {"sulfamethoxazole": 800, "trimethoprim": 160}
    assert not rx_checker.kb.normalizer.resolve("Qwertazine").recognised
    assert rx_checker.kb.atc_codes("acetaminophen") == ["N02BE01"]
