import pytest

from prescription_check.sig_parser import parse_sig


@pytest.mark.parametrize("sig,expected", [
    ("Amoxicillin 500 mg PO TID x 7 days",
     dict(drug="amoxicillin", dose=500, unit="mg", route="oral", frequency="tid", duration_days=7, prn=False)),
    ("metformin 1 g bid", dict(drug="metformin", dose=1, unit="g", frequency="bid")),
    ("ibuprofen 400mg q6h prn pain", dict(drug="ibuprofen", dose=400, unit="mg", frequency="q6h", prn=True)),
    ("Tylenol ES 2 tabs q6h prn", dict(drug="tylenol es", dose=2, unit="tab", frequency="q6h", prn=True)),
    ("Augmentin 875 1 tab po q12h 10d", dict(drug="augmentin", dose=875, unit="mg", frequency="q12h",
                                             duration_days=10)),
    ("insulin glargine 20 units sc qhs", dict(drug="insulin glargine", dose=20, unit="units", route="sc",
                                              frequency="qhs")),
    ("amoxicillin 250mg/5ml 10 ml tid", dict(drug="amoxicillin", dose=10, unit="mL", strength_mg_per_ml=50)),
    ("cephalexin 500 mg p.o. q.i.d. for 10 days", dict(route="oral", frequency="qid", duration_days=10)),
    ("methotrexate 7.5 mg once weekly", dict(frequency="once weekly")),
    ("ketorolac 30 mg IM once", dict(route="im")),
    ("Take 1-2 tablets of hydrocodone every 4-6 hours as needed", dict(drug="hydrocodone", dose=2, prn=True)),
])
def test_parse(sig, expected):
    parsed = parse_sig(sig)
    assert parsed.ok, parsed.problems
    got = parsed.item.model_dump()
    for key, value in expected.items():
        assert got[key] == value, (sig, key, got[key])


@pytest.mark.parametrize("sig", ["take as directed", "???", "continue", ""])
def test_unparseable_is_not_a_crash(sig):
    parsed = parse_sig(sig)
    assert not parsed.ok
    assert parsed.problems


@pytest.mark.parametrize("sig,freq", [("MTX 10mg PO qweek", "weekly"), ("alendronate 70 mg once a week", "weekly"),
                                      ("metformin XR 750mg 2 tabs with evening meal", "daily"),
                                      ("insulin lispro 6 units sc with meals", "tid"),
                                      ("lisinopril 10 mg 2x/day", "2 times a day")])
def test_more_frequency_styles(sig, freq):
    assert parse_sig(sig).item.frequency == freq


def test_strength_ratio_is_not_a_dose():
    # "875/125 mg" must never be read as 875 / 125 = 7 mg
    item = parse_sig("Augmentin 875/125 mg one tab twice daily x 7 days").item
    assert (item.dose, item.unit) == (1, "tab") and "875/125" in item.drug
    item = parse_sig("take 1/2 tab of warfarin 5 mg daily").item
    assert item is None or item.dose != 0.5 or item.unit == "tab"


def test_meq_is_a_unit():
    item = parse_sig("KCl 20 mEq po daily").item
    assert (item.drug, item.dose, item.unit) == ("kcl", 20, "mEq")


@pytest.mark.parametrize("sig,per_day", [("ibuprofen 400 mg q4h prn pain, max 3 doses/day", 3),
                                         ("Tylenol ES 2 tabs q4h prn max 6 tabs in 24 hours", 3),
                                         ("oxycodone 5 mg q4h prn", 6)])
def test_prn_maximum_bounds_the_daily_dose(sig, per_day):
    from prescription_check.normalize import frequency_per_day

    assert frequency_per_day(parse_sig(sig).item.frequency) == per_day
