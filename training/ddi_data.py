"""DDInter severity pairs, drug features and drug-disjoint splits for the ``ddi-severity`` model.

Labels
    DDInter 1.0 (8 per-ATC-letter CSV exports).  A pair appears once per ATC letter of either drug,
    so rows are de-duplicated on the unordered pair of DDInter ids (no pair has conflicting levels;
    a conflict would raise).  ``Unknown`` (29,813 pairs) means DDInter lists the interaction but gives
    no severity: it is *excluded* from training and evaluation (it is not a fourth severity and not
    "no interaction").  No "no known interaction" negatives are made: a pair of DDInter drugs that
    DDInter does not list is absence of evidence (DDInter covers the literature it curated), not
    evidence of no interaction, and labelling it "none" would teach the model to call unstudied
    pairs safe.  So the model answers "if these two interact, how severe is it likely to be".

Drug features (one row per drug, pre-computed so serving needs neither rdkit nor sklearn)
    * WHO ATC hierarchy, levels 1-4, multi-hot (a drug may have several ATC codes), matched by name:
      DDInter names and WHO level-5 names are both mapped through drug_ner_synonyms'
      variant -> canonical table (WHO says "paracetamol", DDInter "acetaminophen").
    * Morgan fingerprint (radius 2, ECFP4-like) and MACCS keys of the largest fragment of the
      SMILES (drug_ner_synonyms canonical_drugs.tsv, else drugbank_smiles drug_smiles.csv by
      DrugBank id); salts and counter-ions are dropped by keeping the largest fragment.
    * RDKit physico-chemical descriptors (NaN where no structure).
    * Availability flags (has ATC / has structure).
    The per-drug "interaction profile" (share of a drug's known interactions at each severity) is
    computed from the *training* labels in ``training.ddi_train`` (out-of-fold) and appended there.

Splits (seeded, reproducible, saved with each run)
    * random: pairs split at random (drug identity leaks: both drugs were seen in training).
    * drug-disjoint: a seeded ``test_drug_frac`` of the labelled drugs is held out; pairs with both
      drugs in the training drugs train, pairs with exactly one held-out drug form the
      "one-unseen" test, pairs with both held-out form "both-unseen".
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from serving.settings import Settings, get_settings
from training.sources import source_file

log = logging.getLogger(__name__)

LABELS: tuple[str, ...] = ("major", "moderate", "minor")
DDINTER_FILES: tuple[tuple[str, str], ...] = tuple(
    ("ddinter", f"ddinter_downloads_code_{c}.csv") for c in "ABDHLPRV"
)
FEATURE_FILES: tuple[tuple[str, str], ...] = (
    ("who_atc_ddd", "WHO_ATC-DDD_2026-04-25.csv"),
    ("drug_ner_synonyms", "variant_to_canonical.tsv"),
    ("drug_ner_synonyms", "canonical_drugs.tsv"),
    ("drugbank_smiles", "drug_smiles.csv"),
)
PHYSCHEM: tuple[str, ...] = (
    "MolWt", "MolLogP", "TPSA", "NumHDonors", "NumHAcceptors", "NumRotatableBonds",
    "RingCount", "NumAromaticRings", "HeavyAtomCount", "FractionCSP3", "NumHeteroatoms", "formal_charge",
)
ATC_LEVEL_LEN = {1: 1, 2: 3, 3: 4, 4: 5}


def data_files() -> list[tuple[str, str]]:
    """Every public file a training run reads (for ``training.sources.hashes_for``)."""
    return list(DDINTER_FILES) + list(FEATURE_FILES)


def normalise_name(name: str) -> str:
    """Canonical key: lowercase, single spaces."""
    return re.sub(r"\s+", " ", str(name).strip().lower())


def base_name(name: str) -> str:
    """``"morphine (liposomal)"`` -> ``"morphine"`` (DDInter marks formulations in brackets)."""
    return normalise_name(re.sub(r"\([^)]*\)", " ", name))


# ----------------------------------------------------------------------------------------------
# labels
# ----------------------------------------------------------------------------------------------
def load_pairs(settings: Settings | None = None, include_unknown: bool = False) -> pd.DataFrame:
    """Unique unordered DDInter pairs: columns ``drug_a, drug_b`` (lowercase, a < b), ``level``.

    ``level`` is one of LABELS (lowercase); ``unknown`` rows are dropped unless asked for.
    """
    settings = settings or get_settings()
    frames = [pd.read_csv(source_file(s, n, settings)) for s, n in DDINTER_FILES]
    df = pd.concat(frames, ignore_index=True)
    expected = {"DDInterID_A", "Drug_A", "DDInterID_B", "Drug_B", "Level"}
    if not expected <= set(df.columns):
        raise ValueError(f"DDInter file lacks columns {sorted(expected - set(df.columns))}")
    a = df["Drug_A"].map(normalise_name)
    b = df["Drug_B"].map(normalise_name)
    out = pd.DataFrame(
        {
            "drug_a": np.where(a <= b, a, b),
            "drug_b": np.where(a <= b, b, a),
            "level": df["Level"].str.strip().str.lower(),
        }
    )
    out = out[out["drug_a"] != out["drug_b"]]
    bad = set(out["level"]) - set(LABELS) - {"unknown"}
    if bad:
        raise ValueError(f"unexpected DDInter levels: {sorted(bad)}")
    out = out.drop_duplicates()
    conflicts = out.duplicated(["drug_a", "drug_b"], keep=False)
    if conflicts.any():
        raise ValueError(f"{int(conflicts.sum())} DDInter rows give one pair two different levels")
    if not include_unknown:
        out = out[out["level"] != "unknown"]
    return out.sort_values(["drug_a", "drug_b"]).reset_index(drop=True)


def ddinter_drugs(settings: Settings | None = None) -> list[str]:
    """All DDInter drug names (lowercase), including those only in Unknown pairs."""
    settings = settings or get_settings()
    names: set[str] = set()
    for s, n in DDINTER_FILES:
        df = pd.read_csv(source_file(s, n, settings), usecols=["Drug_A", "Drug_B"])
        names.update(df["Drug_A"].map(normalise_name))
        names.update(df["Drug_B"].map(normalise_name))
    return sorted(names)


# ----------------------------------------------------------------------------------------------
# drug table: ATC codes + SMILES per drug name
# ----------------------------------------------------------------------------------------------
@dataclass
class DrugTable:
    names: list[str]                       # feature rows, one per drug
    atc: list[list[str]]                   # level-5 ATC codes per row
    smiles: list[str | None]
    in_ddinter: np.ndarray                 # bool per row
    aliases: dict[str, int] = field(default_factory=dict)   # every lookup key -> row


def _variant_map(settings: Settings) -> dict[str, str]:
    v = pd.read_csv(
        source_file("drug_ner_synonyms", "variant_to_canonical.tsv", settings), sep="\t",
        keep_default_na=False, dtype=str,
    )
    return dict(zip(v["variant"].map(normalise_name), v["canonical"].map(normalise_name)))


def build_drug_table(settings: Settings | None = None, include_external: bool = True) -> DrugTable:
    """Drugs to featurise: every DDInter drug, plus (``include_external``) every other drug with a
    WHO ATC level-5 code or a structure, so the served model can also score drugs DDInter lacks
    (the "both unseen" regime)."""
    settings = settings or get_settings()
    vmap = _variant_map(settings)

    def canon(name: str) -> str:
        n = normalise_name(name)
        return vmap.get(n) or vmap.get(base_name(n)) or base_name(n)

    who = pd.read_csv(source_file(*FEATURE_FILES[0], settings), keep_default_na=False, dtype=str)
    who5 = who[who["atc_code"].str.len() == 7].drop_duplicates(["atc_code", "atc_name"])
    atc_by_canon: dict[str, set[str]] = {}
    for code, name in zip(who5["atc_code"], who5["atc_name"]):
        n = normalise_name(name)
        if "combination" in n or " and " in n:
            continue  # combination products are not single ingredients
        atc_by_canon.setdefault(canon(n), set()).add(code)
        atc_by_canon.setdefault(n, set()).add(code)

    cd = pd.read_csv(
        source_file("drug_ner_synonyms", "canonical_drugs.tsv", settings), sep="\t",
        keep_default_na=False, dtype=str,
    )
    db = pd.read_csv(source_file("drugbank_smiles", "drug_smiles.csv", settings), dtype=str)
    smiles_by_db = dict(zip(db["drug_id"], db["smiles"]))
    smiles_by_canon: dict[str, str] = {}
    for c, dbid, smi in zip(cd["canonical"].map(normalise_name), cd["drugbank_id"], cd["smiles"]):
        s = smi or smiles_by_db.get(dbid)
        if s:
            smiles_by_canon[c] = s

    names: list[str] = []
    atc: list[list[str]] = []
    smiles: list[str | None] = []
    in_dd: list[bool] = []
    aliases: dict[str, int] = {}

    def add(name: str, keys: list[str], ddinter: bool) -> None:
        c = canon(name)
        codes = sorted(atc_by_canon.get(normalise_name(name), set()) | atc_by_canon.get(c, set())
                       | atc_by_canon.get(base_name(name), set()))
        smi = smiles_by_canon.get(normalise_name(name)) or smiles_by_canon.get(c) \
            or smiles_by_canon.get(base_name(name))
        if not ddinter and not codes and not smi:
            return
        row = len(names)
        names.append(normalise_name(name))
        atc.append(codes)
        smiles.append(smi)
        in_dd.append(ddinter)
        for k in keys:
            aliases.setdefault(k, row)

    dd = ddinter_drugs(settings)
    for n in dd:  # exact DDInter names first: they own their key
        aliases[n] = len(names)
        add(n, [n], True)
    for n in dd:  # then canonical / base-name aliases that no DDInter name owns
        row = aliases[n]
        for k in (canon(n), base_name(n)):
            aliases.setdefault(k, row)
    if include_external:
        for c in sorted(set(smiles_by_canon) | {k for k in atc_by_canon if k == canon(k)}):
            if c not in aliases:
                add(c, [c], False)
    # WHO INN names (and other known variants) as aliases of a row (e.g. "paracetamol" -> acetaminophen)
    for n in sorted(atc_by_canon):
        if n not in aliases and canon(n) in aliases:
            aliases[n] = aliases[canon(n)]
    return DrugTable(names, atc, smiles, np.array(in_dd, dtype=bool), aliases)


# ----------------------------------------------------------------------------------------------
# featurisation
# ----------------------------------------------------------------------------------------------
@dataclass
class DrugFeatures:
    names: list[str]
    binary: np.ndarray          # uint8 [n, n_binary]: ATC level 1-2 multi-hot + has_atc + has_structure
    binary_names: list[str]
    atc: dict[int, np.ndarray]  # level -> uint8 [n, n_codes] membership (levels 2, 3, 4)
    atc_vocab: dict[int, list[str]]
    morgan: np.ndarray          # uint8 [n, morgan_bits] (zeros where no structure)
    physchem: np.ndarray        # float32 [n, len(PHYSCHEM)] (NaN where no structure)
    has_structure: np.ndarray   # bool [n]
    in_ddinter: np.ndarray      # bool [n]; DDInter drugs are the first rows
    aliases: dict[str, int]
    spec: dict


def _mol(smiles: str):
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")
    mol = Chem.MolFromSmiles(smiles)
    if mol is None:
        return None
    frags = Chem.GetMolFrags(mol, asMols=True)
    return max(frags, key=lambda m: m.GetNumHeavyAtoms()) if frags else None


def featurise(table: DrugTable, morgan_bits: int = 1024, morgan_radius: int = 2, atc_min_drugs: int = 2) -> DrugFeatures:
    """Per-drug feature rows for ``table`` (RDKit runs here, once, at training time)."""
    from rdkit import DataStructs
    from rdkit.Chem import Descriptors, rdFingerprintGenerator

    n = len(table.names)
    if table.in_ddinter.any() and not table.in_ddinter[: int(table.in_ddinter.sum())].all():
        raise ValueError("DDInter drugs must be the first rows of the drug table")
    atc: dict[int, np.ndarray] = {}
    vocab: dict[int, list[str]] = {}
    for level, ln in ATC_LEVEL_LEN.items():
        sets = [{c[:ln] for c in codes} for codes in table.atc]
        counts: dict[str, int] = {}
        for p, dd in zip(sets, table.in_ddinter):
            if dd:
                for x in p:
                    counts[x] = counts.get(x, 0) + 1
        vocab[level] = sorted(k for k, c in counts.items() if c >= atc_min_drugs)
        index = {k: i for i, k in enumerate(vocab[level])}
        m = np.zeros((n, len(vocab[level])), dtype=np.uint8)
        for i, p in enumerate(sets):
            for x in p:
                if x in index:
                    m[i, index[x]] = 1
        atc[level] = m

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=morgan_radius, fpSize=morgan_bits)
    morgan = np.zeros((n, morgan_bits), dtype=np.uint8)
    phys = np.full((n, len(PHYSCHEM)), np.nan, dtype=np.float32)
    has_struct = np.zeros(n, dtype=bool)
    for i, smi in enumerate(table.smiles):
        mol = _mol(smi) if smi else None
        if mol is None:
            continue
        has_struct[i] = True
        arr = np.zeros((morgan_bits,), dtype=np.uint8)
        DataStructs.ConvertToNumpyArray(gen.GetFingerprint(mol), arr)
        morgan[i] = arr
        phys[i] = np.asarray(
            [sum(a.GetFormalCharge() for a in mol.GetAtoms()) if d == "formal_charge" else getattr(Descriptors, d)(mol)
             for d in PHYSCHEM], dtype=np.float32)
    has_atc = np.array([bool(c) for c in table.atc])
    binary = np.hstack([atc[1], atc[2], has_atc[:, None], has_struct[:, None]]).astype(np.uint8)
    binary_names = [f"atc:{k}" for k in vocab[1] + vocab[2]] + ["has_atc", "has_structure"]
    spec = {
        "binary": "ATC level 1 and 2 multi-hot, has_atc, has_structure",
        "atc_levels_membership": [2, 3, 4],
        "atc_min_drugs": atc_min_drugs,
        "n_atc": {str(k): len(v) for k, v in vocab.items()},
        "morgan_bits": morgan_bits,
        "morgan_radius": morgan_radius,
        "physchem": list(PHYSCHEM),
        "n_drugs": n,
        "n_ddinter_drugs": int(table.in_ddinter.sum()),
        "ddinter_with_atc": int(has_atc[table.in_ddinter].sum()),
        "ddinter_with_structure": int(has_struct[table.in_ddinter].sum()),
    }
    return DrugFeatures(table.names, binary, binary_names, {k: atc[k] for k in (2, 3, 4)},
                        vocab, morgan, phys, has_struct, table.in_ddinter, dict(table.aliases), spec)


def structural_neighbours(morgan: np.ndarray, n_labelled: int, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """For every drug, its ``k`` most Tanimoto-similar drugs among the first ``n_labelled`` rows
    (never itself): (indices [n, k], weights = similarity [n, k], 0 where no structure)."""
    fp = morgan.astype(np.float32)
    bits = fp.sum(axis=1)
    ref = fp[:n_labelled]
    idx = np.zeros((len(fp), k), dtype=np.int64)
    w = np.zeros((len(fp), k), dtype=np.float32)
    for start in range(0, len(fp), 2048):
        block = fp[start : start + 2048]
        inter = block @ ref.T
        union = bits[start : start + 2048, None] + bits[None, :n_labelled] - inter
        sim = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        rows = np.arange(start, start + len(block))
        self_cols = rows[rows < n_labelled]
        sim[self_cols - start, self_cols] = -1.0          # never your own neighbour
        top = np.argpartition(-sim, kth=min(k, n_labelled - 1) - 1, axis=1)[:, :k]
        top_sim = np.take_along_axis(sim, top, axis=1)
        idx[start : start + len(block)] = top
        w[start : start + len(block)] = np.clip(top_sim, 0, 1)
    return idx, w


# ----------------------------------------------------------------------------------------------
# splits
# ----------------------------------------------------------------------------------------------
def random_split(n_pairs: int, seed: int, test_frac: float = 0.2) -> tuple[np.ndarray, np.ndarray]:
    """Row indices (train, test) of a seeded random pair split."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(n_pairs)
    n_test = int(round(test_frac * n_pairs))
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def drug_disjoint_split(pairs: pd.DataFrame, seed: int, test_drug_frac: float = 0.2) -> dict:
    """Hold out a seeded fraction of drugs; returns row indices for train / one_unseen / both_unseen
    and the sorted held-out drug list."""
    drugs = np.array(sorted(set(pairs["drug_a"]) | set(pairs["drug_b"])))
    rng = np.random.default_rng(seed + 1)
    held = set(rng.choice(drugs, size=int(round(test_drug_frac * len(drugs))), replace=False).tolist())
    a_out = pairs["drug_a"].isin(held).to_numpy()
    b_out = pairs["drug_b"].isin(held).to_numpy()
    n_out = a_out.astype(int) + b_out.astype(int)
    return {
        "train": np.flatnonzero(n_out == 0),
        "one_unseen": np.flatnonzero(n_out == 1),
        "both_unseen": np.flatnonzero(n_out == 2),
        "test_drugs": sorted(held),
    }
