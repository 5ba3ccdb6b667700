"""Triage training data: public complaint sources + project seed set -> (text, center) rows, leak-free splits.

Sources (see datasets/DATA_CARD.md and docs/triage-data.md):

* ``medical_speech_intent``: short first-person lay utterances (25 prompts), each phrase recorded ~9.5x by
  different speakers; deduplicated by normalised phrase (majority prompt), one group per phrase.
* ``symptom2disease``: first-person symptom descriptions for 24 diseases; deduplicated.
* ``avey_vignettes_400``: 400 physician-written vignettes; the ``presentation`` field is the text; the
  diagnosis is mapped to a center; children under :data:`PEDIATRIC_AGE_CUTOFF` years go to pediatrics.
* ``project_seed``: lay complaints written by this project (``datasets/triage/seed_complaints.csv``) for
  centers the public data misses.  ``origin="project"``: never in a test split, never external evaluation.

Every public file is read through :func:`training.sources.source_file` (sha256-verified).  Label maps are
hand-written tables in ``datasets/triage/label_map_<source>.csv`` (source_label, center, status, reason);
``datasets/triage/label_overrides.csv`` corrects clear phrase-level label noise.  Split groups join exact
and near-duplicate texts (TF-IDF cosine >= 0.8), so no paraphrase straddles train and test.

    >>> from training.triage_data import load_examples, make_splits, coverage
    >>> df = make_splits(load_examples())
    >>> coverage(df)

pandas/numpy (+ scikit-learn/scipy for near-duplicate grouping, imported lazily): no torch import.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from serving.settings import PROJECT_ROOT, Settings
from training.sources import describe, file_sha256, source_file
from triage.taxonomy import EMERGENCY_CENTER, Taxonomy, load_taxonomy

TRIAGE_DATA_DIR = PROJECT_ROOT / "datasets" / "triage"
SEED_PATH = TRIAGE_DATA_DIR / "seed_complaints.csv"
OVERRIDES_PATH = TRIAGE_DATA_DIR / "label_overrides.csv"

SPEECH = "medical_speech_intent"
S2D = "symptom2disease"
AVEY = "avey_vignettes_400"
PROJECT_SEED = "project_seed"

ALL_SOURCES: tuple[str, ...] = (SPEECH, S2D, AVEY, PROJECT_SEED)
EXTERNAL_SOURCES: tuple[str, ...] = (SPEECH, S2D, AVEY)

#: (manifest source, file name) read for each external source.
SOURCE_FILES: dict[str, tuple[tuple[str, str], ...]] = {
    SPEECH: ((SPEECH, "overview-of-recordings.csv"),),
    S2D: ((S2D, "Symptom2Disease.csv"),),
    AVEY: ((AVEY, "avey_vignettes.original.jsonl"),),
    PROJECT_SEED: (),
}

LABEL_MAP_PATHS: dict[str, Path] = {
    SPEECH: TRIAGE_DATA_DIR / "label_map_medical_speech_intent.csv",
    S2D: TRIAGE_DATA_DIR / "label_map_symptom2disease.csv",
    AVEY: TRIAGE_DATA_DIR / "label_map_avey.csv",
}

#: Avey vignettes whose patient is younger than this (years) are routed to pediatrics.
PEDIATRIC_AGE_CUTOFF = 14
PEDIATRICS = "pediatrics"

COLUMNS = ["text", "center", "source", "group", "origin", "source_label"]

#: texts whose word 1-2-gram TF-IDF cosine reaches this share a split group (paraphrase-level leakage guard)
NEAR_DUP_THRESHOLD = 0.8
SPLITS = ("train", "val", "test")
CROSS_SOURCE_PAIRS = {"speech->s2d": (SPEECH, S2D), "s2d->speech": (S2D, SPEECH)}


class TriageDataError(ValueError):
    """Unusable triage data: empty data, an unknown label or center, an empty text, a bad table."""


# --------------------------------------------------------------------------------------------
# text
# --------------------------------------------------------------------------------------------
_WS = re.compile(r"\s+")
_NON_WORD = re.compile(r"[^\w\s]|_", re.UNICODE)


def normalise_text(text: str) -> str:
    """NFKC, drop control characters, collapse whitespace, strip.  Raises if nothing is left."""
    if text is None or (isinstance(text, float) and np.isnan(text)):
        raise TriageDataError("text is missing (None/NaN)")
    if not isinstance(text, str):
        raise TriageDataError(f"text must be a string, got {type(text).__name__}")
    out = unicodedata.normalize("NFKC", text)
    out = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in out)
    out = _WS.sub(" ", out).strip()
    if not out:
        raise TriageDataError(f"text is empty after normalisation (got {text[:40]!r})")
    return out


def group_key(text: str) -> str:
    """Key that identifies near-identical texts: normalised, lower-cased, punctuation removed."""
    key = _NON_WORD.sub(" ", normalise_text(text).lower())
    key = _WS.sub(" ", key).strip()
    return key or normalise_text(text).lower()


def near_duplicate_groups(texts: Iterable[str], keys: Iterable[str], threshold: float | None = NEAR_DUP_THRESHOLD) -> list[str]:
    """Merge split groups whose texts are near-duplicates (word 1-2-gram TF-IDF cosine >= threshold).

    ``keys`` are the exact group keys (rows with equal keys are already one group).  Each connected
    component of the similarity graph gets its alphabetically smallest key, so the result does not depend
    on row order.  ``threshold=None`` returns ``keys`` unchanged.
    """
    keys = list(keys)
    if threshold is None or len(keys) < 2:
        return keys
    from scipy.sparse.csgraph import connected_components
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = list(texts)
    first: dict[str, str] = {}
    for key, text in zip(keys, texts):
        first.setdefault(key, text)
    uniq = sorted(first)
    matrix = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, lowercase=True).fit_transform(
        [first[k] for k in uniq]
    )
    sim = (matrix @ matrix.T).tocsr()
    sim.data = (sim.data >= threshold).astype(np.int8)
    sim.eliminate_zeros()
    _, component = connected_components(sim, directed=False)
    rep: dict[int, str] = {}
    for key, comp in zip(uniq, component):  # uniq is sorted: the first key seen is the smallest
        rep.setdefault(int(comp), key)
    mapping = {key: rep[int(comp)] for key, comp in zip(uniq, component)}
    return [mapping[k] for k in keys]


# --------------------------------------------------------------------------------------------
# label maps
# --------------------------------------------------------------------------------------------
def load_label_map(source: str, path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> pd.DataFrame:
    """Read and validate a label map: columns source_label, center, status (mapped|dropped), reason."""
    taxonomy = taxonomy or load_taxonomy()
    if path is None:
        if source not in LABEL_MAP_PATHS:
            raise TriageDataError(f"no label map for source {source!r}; sources with maps: {sorted(LABEL_MAP_PATHS)}")
        path = LABEL_MAP_PATHS[source]
    path = Path(path)
    if not path.is_file():
        raise TriageDataError(f"label map for {source!r} not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    need = {"source_label", "center", "status", "reason"}
    if missing := need - set(table.columns):
        raise TriageDataError(f"label map {path.name} lacks column(s) {sorted(missing)}")
    table = table.map(str.strip)
    if dup := sorted(table.source_label[table.source_label.duplicated()]):
        raise TriageDataError(f"label map {path.name}: duplicate source_label(s) {dup}")
    routable = set(taxonomy.model_labels())
    for row in table.itertuples():
        if not row.source_label:
            raise TriageDataError(f"label map {path.name}: empty source_label on line {row.Index + 2}")
        if row.status == "mapped":
            if row.center not in routable:
                raise TriageDataError(
                    f"label map {path.name}: {row.source_label!r} maps to unknown or non-routable center "
                    f"{row.center!r} (taxonomy {taxonomy.version}: {', '.join(sorted(routable))})"
                )
        elif row.status == "dropped":
            if not row.reason:
                raise TriageDataError(f"label map {path.name}: dropped label {row.source_label!r} needs a reason")
        else:
            raise TriageDataError(
                f"label map {path.name}: {row.source_label!r} has status {row.status!r}; use 'mapped' or 'dropped'"
            )
    return table


def apply_label_map(labels: Iterable[str], label_map: pd.DataFrame, source: str) -> list[str | None]:
    """Center per label (None where dropped).  A label absent from the map raises TriageDataError."""
    lookup = {
        r.source_label: (r.center if r.status == "mapped" else None) for r in label_map.itertuples()
    }
    labels = list(labels)
    unknown = sorted({str(lab) for lab in labels if lab not in lookup})
    if unknown:
        raise TriageDataError(
            f"source {source!r}: label(s) not in its label map: {unknown}. Add a row (mapped or dropped with "
            f"a reason) to {LABEL_MAP_PATHS.get(source, 'the label map')}"
        )
    return [lookup[lab] for lab in labels]


# --------------------------------------------------------------------------------------------
# per-source readers: each returns rows with text, source_label (+ optional center override)
# --------------------------------------------------------------------------------------------
def _read_speech(settings: Settings | None) -> pd.DataFrame:
    path = source_file(SPEECH, "overview-of-recordings.csv", settings)
    raw = _read_csv(path, ["phrase", "prompt"])
    raw = raw.dropna(subset=["phrase", "prompt"])
    raw = raw[raw.phrase.astype(str).str.strip() != ""]
    raw["key"] = raw.phrase.map(group_key)
    raw["prompt"] = raw.prompt.astype(str).str.strip()
    # one row per normalised phrase; its label is the majority prompt over the recordings (3 phrases
    # carry a second, minority prompt: recording-level label noise).  Ties break alphabetically.
    votes = raw.groupby(["key", "prompt"]).size().reset_index(name="n")
    votes = votes.sort_values(["key", "n", "prompt"], ascending=[True, False, True], kind="mergesort")
    label = votes.drop_duplicates("key").set_index("key").prompt
    first = raw.drop_duplicates("key").set_index("key").phrase.sort_index()
    return pd.DataFrame(
        {"text": first.map(normalise_text).values, "source_label": label.loc[first.index].values, "group": first.index}
    )


def _read_s2d(settings: Settings | None) -> pd.DataFrame:
    path = source_file(S2D, "Symptom2Disease.csv", settings)
    raw = _read_csv(path, ["label", "text"]).dropna(subset=["label", "text"])
    raw["text"] = raw.text.map(normalise_text)
    raw["group"] = raw.text.map(group_key)
    raw = raw.drop_duplicates("group", keep="first")
    return pd.DataFrame({"text": raw.text, "source_label": raw.label.str.strip(), "group": raw.group})


_AGE = re.compile(r"(\d+(?:\.\d+)?)\s*(year|yr|month|week|day)", re.I)


def parse_age_years(demographics: str) -> float | None:
    """'61 year old Male' -> 61.0; '8 month old' -> 0.67; unknown -> None."""
    m = _AGE.search(str(demographics or ""))
    if not m:
        return None
    value, unit = float(m.group(1)), m.group(2).lower()
    return value * {"year": 1, "yr": 1, "month": 1 / 12, "week": 1 / 52, "day": 1 / 365}[unit]


def _read_avey(settings: Settings | None) -> pd.DataFrame:
    path = source_file(AVEY, "avey_vignettes.original.jsonl", settings)
    try:
        raw = pd.read_json(path, lines=True, dtype=False)
    except ValueError as exc:
        raise TriageDataError(f"{path}: not valid JSON lines: {exc}") from exc
    for col in ("correct_diagnosis", "presentation", "demographics"):
        if col not in raw.columns:
            raise TriageDataError(f"{path}: missing field {col!r} (fields: {list(raw.columns)})")
    raw = raw.dropna(subset=["correct_diagnosis", "presentation"])
    out = pd.DataFrame(
        {
            "text": raw.presentation.map(normalise_text),
            "source_label": raw.correct_diagnosis.str.strip(),
            "age": raw.demographics.map(parse_age_years),
        }
    )
    out["group"] = out.text.map(group_key)
    return out.drop_duplicates("group", keep="first")


def _read_seed(path: Path, taxonomy: Taxonomy) -> pd.DataFrame:
    if not path.is_file():
        raise TriageDataError(f"project seed file not found: {path}")
    raw = _read_csv(path, ["text", "center", "author"], dtype=str, keep_default_na=False)
    bad_author = sorted(set(raw.author.str.strip()) - {"project"})
    if bad_author:
        raise TriageDataError(f"{path.name}: author must be 'project' for every row, found {bad_author}")
    routable = set(taxonomy.model_labels())
    rows = []
    for i, row in enumerate(raw.itertuples(), start=2):
        center = row.center.strip()
        if center not in routable:
            raise TriageDataError(
                f"{path.name} line {i}: unknown or non-routable center {center!r}; "
                f"known: {', '.join(taxonomy.model_labels())}"
            )
        try:
            text = normalise_text(row.text)
        except TriageDataError as exc:
            raise TriageDataError(f"{path.name} line {i}: {exc}") from None
        rows.append({"text": text, "source_label": center, "center": center, "group": group_key(text)})
    out = pd.DataFrame(rows, columns=["text", "source_label", "center", "group"])
    return out.drop_duplicates("group", keep="first")


def _read_csv(path: Path, required: list[str], **kw) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, **kw)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise TriageDataError(f"{path}: cannot parse CSV: {exc}") from exc
    if missing := [c for c in required if c not in df.columns]:
        raise TriageDataError(f"{path}: missing column(s) {missing} (columns: {list(df.columns)})")
    return df


def load_overrides(path: str | Path | None = None, taxonomy: Taxonomy | None = None) -> pd.DataFrame:
    """Phrase-level corrections of clear label noise: columns source, text, center, status, reason.

    Matched on :func:`group_key` of the text within its source.  Each row is reviewed by hand and
    documented in datasets/DATA_CARD.md; an override whose text is not found raises (stale table)."""
    taxonomy = taxonomy or load_taxonomy()
    path = Path(path) if path is not None else OVERRIDES_PATH
    if not path.is_file():
        raise TriageDataError(f"label override table not found: {path}")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    if missing := {"source", "text", "center", "status", "reason"} - set(table.columns):
        raise TriageDataError(f"{path.name} lacks column(s) {sorted(missing)}")
    table = table.map(str.strip)
    routable = set(taxonomy.model_labels())
    for i, row in enumerate(table.itertuples(), start=2):
        if row.source not in EXTERNAL_SOURCES:
            raise TriageDataError(f"{path.name} line {i}: unknown source {row.source!r}")
        if row.status == "mapped" and row.center not in routable:
            raise TriageDataError(f"{path.name} line {i}: unknown or non-routable center {row.center!r}")
        if row.status not in {"mapped", "dropped"} or not row.reason:
            raise TriageDataError(f"{path.name} line {i}: status must be mapped|dropped and a reason is required")
    table["group"] = table.text.map(group_key)
    if table.duplicated(["source", "group"]).any():
        raise TriageDataError(f"{path.name}: the same text is overridden twice")
    return table


def _apply_overrides(rows: pd.DataFrame, source: str, overrides: pd.DataFrame) -> pd.DataFrame:
    mine = overrides[overrides.source == source]
    if mine.empty:
        return rows
    missing = sorted(set(mine.group) - set(rows.group))
    if missing:
        raise TriageDataError(f"label override(s) for {source!r} match no text (stale table?): {missing[:5]}")
    center = dict(zip(mine.group, mine.center.where(mine.status == "mapped", None)))
    hit = rows.group.isin(center)
    rows = rows.copy()
    rows.loc[hit, "center"] = rows.loc[hit, "group"].map(center)
    return rows


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------
def load_examples(
    settings: Settings | None = None,
    sources: Iterable[str] = ALL_SOURCES,
    taxonomy: Taxonomy | None = None,
    *,
    label_maps: Mapping[str, str | Path] | None = None,
    seed_path: str | Path | None = None,
    overrides_path: str | Path | None = None,
    use_overrides: bool = True,
    near_dup_threshold: float | None = NEAR_DUP_THRESHOLD,
) -> pd.DataFrame:
    """All mapped examples: columns text, center, source, group, origin, source_label.

    ``label_maps`` / ``seed_path`` / ``overrides_path`` replace the committed tables (tests, experiments);
    ``use_overrides=False`` ignores the phrase-level corrections (pure label-level mapping).
    ``group`` is the normalised text (lower-case, no punctuation); near-duplicate texts across all
    selected sources (TF-IDF cosine >= ``near_dup_threshold``) share one group; ``None`` disables that.
    Rows whose label maps to 'dropped' are removed; a label absent from its map raises.
    """
    taxonomy = taxonomy or load_taxonomy()
    sources = tuple(sources) if not isinstance(sources, str) else (sources,)
    if not sources:
        raise TriageDataError("no sources selected")
    if unknown := [s for s in sources if s not in ALL_SOURCES]:
        raise TriageDataError(f"unknown triage source(s) {unknown}; known: {list(ALL_SOURCES)}")
    label_maps = dict(label_maps or {})
    key = _cache_key(settings, sources, taxonomy, label_maps, seed_path, overrides_path, use_overrides,
                     near_dup_threshold)
    if key is not None and key in _CACHE:
        return _CACHE[key].copy()
    df = _load_examples(settings, sources, taxonomy, label_maps, seed_path, overrides_path, use_overrides,
                        near_dup_threshold)
    if key is not None:
        while len(_CACHE) >= 8:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = df.copy()
    return df


_CACHE: dict[tuple, pd.DataFrame] = {}


def _cache_key(settings, sources, taxonomy, label_maps, seed_path, overrides_path, use_overrides, threshold):
    """Identity of a load: arguments + (path, mtime, size) of every file read.  None = do not cache
    (a file is missing: let the loader raise its error).  Unchanged files were verified when first read."""

    paths = [describe(s, n, settings).path for s, n in dataset_files(sources)]
    paths += [Path(label_maps.get(s, LABEL_MAP_PATHS[s])) for s in sources if s in LABEL_MAP_PATHS]
    if PROJECT_SEED in sources:
        paths.append(Path(seed_path) if seed_path else SEED_PATH)
    if use_overrides:
        paths.append(Path(overrides_path) if overrides_path else OVERRIDES_PATH)
    stats = []
    for path in paths:
        try:
            st = path.stat()
        except OSError:
            return None
        stats.append((str(path.resolve()), st.st_mtime_ns, st.st_size))
    return (sources, taxonomy, use_overrides, threshold, tuple(stats))


def _load_examples(settings, sources, taxonomy, label_maps, seed_path, overrides_path, use_overrides,
                   near_dup_threshold) -> pd.DataFrame:
    overrides = load_overrides(overrides_path, taxonomy) if use_overrides else None
    frames = []
    for source in dict.fromkeys(sources):
        if source == PROJECT_SEED:
            rows = _read_seed(Path(seed_path) if seed_path else SEED_PATH, taxonomy)
            rows["origin"] = "project"
        else:
            reader = {SPEECH: _read_speech, S2D: _read_s2d, AVEY: _read_avey}[source]
            rows = reader(settings)
            table = load_label_map(source, label_maps.get(source), taxonomy)
            rows["center"] = apply_label_map(rows.source_label, table, source)
            if source == AVEY:
                young = rows.center.notna() & rows.age.notna() & (rows.age < PEDIATRIC_AGE_CUTOFF)
                rows.loc[young, "center"] = PEDIATRICS
            if overrides is not None:
                rows = _apply_overrides(rows, source, overrides)
            rows = rows[rows.center.notna()].copy()
            rows["origin"] = "external"
        rows["source"] = source
        frames.append(rows[COLUMNS])
    df = pd.concat(frames, ignore_index=True)
    if df.empty:
        raise TriageDataError(f"no examples left from sources {list(sources)} after label mapping")
    df["group"] = near_duplicate_groups(df.text, df.group, near_dup_threshold)
    if EMERGENCY_CENTER in set(df.center):  # guarded by the map validation; belt and braces
        raise TriageDataError("'emergency' is not a trainable center")
    return df


def _validate_frame(df: pd.DataFrame, need: Iterable[str] = ("text", "center", "group", "origin")) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TriageDataError(f"expected a pandas DataFrame, got {type(df).__name__}")
    if df.empty:
        raise TriageDataError("no examples: the data frame is empty")
    if missing := [c for c in need if c not in df.columns]:
        raise TriageDataError(f"data frame lacks column(s) {missing}; expected {list(need)}")
    for col in need:
        if df[col].isna().any():
            n = int(df[col].isna().sum())
            raise TriageDataError(f"{n} row(s) have no {col!r} (unlabeled or incomplete rows)")
    if "text" in need:
        empty = df.text.astype(str).str.strip() == ""
        if empty.any():
            raise TriageDataError(f"{int(empty.sum())} row(s) have an empty 'text'")
    if "origin" in need and (bad := sorted(set(df.origin) - {"external", "project"})):
        raise TriageDataError(f"unknown origin value(s) {bad}; use 'external' or 'project'")


def _quota(n: int, frac: float, keep: int) -> int:
    """round(n*frac), but at least 1 when the pool is big enough to leave `keep` items for training."""
    if frac <= 0 or n <= keep:
        return 0
    return min(max(1, int(round(n * frac))), n - keep)


def make_splits(df: pd.DataFrame, seed: int = 13, val_frac: float = 0.15, test_frac: float = 0.15) -> pd.DataFrame:
    """Add a 'split' column (train/val/test): group-aware, stratified by center, deterministic per seed.

    No group spans two splits.  Groups holding any project-written row never go to 'test'.
    Per center, external groups are shuffled with a (seed, center)-seeded generator and cut into
    test/val/train quotas; project groups are cut into val/train.  A center with fewer than 3
    external groups gets no test rows (its support is reported by :func:`coverage`).
    """
    _validate_frame(df)
    if not (0 <= val_frac < 1 and 0 <= test_frac < 1 and val_frac + test_frac < 1):
        raise TriageDataError(f"bad split fractions val={val_frac} test={test_frac}")
    # a group's center is its most frequent center (ties: alphabetical); project flag if any row is ours
    pairs = df.groupby(["group", "center"], sort=False).size().reset_index(name="n")
    pairs = pairs.sort_values(["group", "n", "center"], ascending=[True, False, True], kind="mergesort")
    groups = pairs.drop_duplicates("group").set_index("group")[["center"]]
    groups["project"] = df.origin.eq("project").groupby(df.group).any()
    assignment: dict[str, str] = {}
    for center in sorted(groups.center.unique()):
        rng = np.random.default_rng([seed, zlib.crc32(center.encode())])
        sub = groups[groups.center == center]
        ext = list(sub.index[~sub.project])
        proj = list(sub.index[sub.project])
        rng.shuffle(ext)
        rng.shuffle(proj)
        n_test = _quota(len(ext), test_frac, keep=2)
        n_val_e = _quota(len(ext) - n_test, val_frac / (1 - test_frac) if test_frac < 1 else 0, keep=1)
        n_val_p = _quota(len(proj), val_frac, keep=2)
        for i, g in enumerate(ext):
            assignment[g] = "test" if i < n_test else "val" if i < n_test + n_val_e else "train"
        for i, g in enumerate(proj):
            assignment[g] = "val" if i < n_val_p else "train"
    out = df.copy()
    out["split"] = out.group.map(assignment)
    return out


def cross_source_splits(
    df: pd.DataFrame, min_examples: int = 5
) -> dict[str, tuple[pd.DataFrame, pd.DataFrame]]:
    """{"speech->s2d": (train, test), "s2d->speech": (train, test)} on the centers both sources share.

    Train = every example of one source, test = every example of the other: no text is shared
    (different writers and collections), so this measures generalisation to unseen wording.
    A center counts as shared when each source has at least ``min_examples`` rows of it (a phrase-level
    override can put a single Speech phrase into, e.g., urology; one example is no basis for a test).
    """
    _validate_frame(df, ("text", "center", "source"))
    present = set(df.source)
    if missing := [s for s in (SPEECH, S2D) if s not in present]:
        raise TriageDataError(f"cross-source splits need both {SPEECH!r} and {S2D!r}; missing {missing}")
    speech, s2d = df[df.source == SPEECH], df[df.source == S2D]
    shared = shared_centers(df, min_examples)
    if not shared:
        raise TriageDataError("the two sources share no center")
    by = {SPEECH: speech[speech.center.isin(shared)], S2D: s2d[s2d.center.isin(shared)]}
    return {name: (by[a].copy(), by[b].copy()) for name, (a, b) in CROSS_SOURCE_PAIRS.items()}


def shared_centers(df: pd.DataFrame, min_examples: int = 5) -> list[str]:
    """Centers with at least ``min_examples`` rows in both Medical Speech Intent and Symptom2Disease."""
    a = df.center[df.source == SPEECH].value_counts()
    b = df.center[df.source == S2D].value_counts()
    return sorted(set(a.index[a >= min_examples]) & set(b.index[b >= min_examples]))


def coverage(df: pd.DataFrame, taxonomy: Taxonomy | None = None) -> pd.DataFrame:
    """Per routable center: n_external, n_project, n_total, sources ("source:n, ..."), and per-split
    counts (n_train/n_val/n_test, external rows only for n_test) when ``df`` has a 'split' column.
    Centers with no data are listed with zeros, so gaps are visible."""
    _validate_frame(df, ("center", "origin", "source"))
    taxonomy = taxonomy or load_taxonomy()
    order = taxonomy.model_labels() + sorted(set(df.center) - set(taxonomy.model_labels()))
    rows = []
    for center in order:
        sub = df[df.center == center]
        row = {
            "center": center,
            "n_external": int((sub.origin == "external").sum()),
            "n_project": int((sub.origin == "project").sum()),
            "n_total": len(sub),
            "sources": ", ".join(f"{s}:{n}" for s, n in sub.source.value_counts().sort_index().items()),
        }
        if "split" in df.columns:
            for split in SPLITS:
                row[f"n_{split}"] = int((sub.split == split).sum())
        rows.append(row)
    return pd.DataFrame(rows)


def to_markdown(table: pd.DataFrame) -> str:
    """A plain GitHub-markdown table (no tabulate dependency), e.g. for ``coverage(df)`` in reports."""
    cols = [str(c) for c in table.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for row in table.itertuples(index=False):
        lines.append("| " + " | ".join(str(v).replace("|", "/") for v in row) + " |")
    return "\n".join(lines) + "\n"


def dataset_files(sources: Iterable[str] = ALL_SOURCES) -> list[tuple[str, str]]:
    """(manifest source, file) pairs read for ``sources``; feed to training.sources.hashes_for.
    The project's own tables are in git and listed by :func:`project_files`."""
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    if unknown := [s for s in sources if s not in SOURCE_FILES]:
        raise TriageDataError(f"unknown triage source(s) {unknown}; known: {list(SOURCE_FILES)}")
    return [pair for s in dict.fromkeys(sources) for pair in SOURCE_FILES[s]]


def project_files(sources: Iterable[str] = ALL_SOURCES) -> list[Path]:
    """The project's own tables the data depends on (taxonomy, label maps, seed set)."""
    sources = (sources,) if isinstance(sources, str) else tuple(sources)
    files = [TRIAGE_DATA_DIR / "taxonomy.json"]
    files += [LABEL_MAP_PATHS[s] for s in sources if s in LABEL_MAP_PATHS]
    if any(s in EXTERNAL_SOURCES for s in sources):
        files.append(OVERRIDES_PATH)
    if PROJECT_SEED in sources:
        files.append(SEED_PATH)
    return files


def dataset_hashes(sources: Iterable[str] = ALL_SOURCES, settings: Settings | None = None) -> dict[str, str]:
    """{"source/file": sha256} for every file the data depends on, public (verified) and project-owned."""
    out = {f"{s}/{n}": file_sha256(source_file(s, n, settings)) for s, n in dataset_files(sources)}
    for path in project_files(sources):
        out[f"project/{path.relative_to(PROJECT_ROOT)}"] = file_sha256(path)
    return out


def split_fingerprint(df: pd.DataFrame) -> str:
    """sha256 over (group, split) pairs: identical when two runs used the same split."""
    _validate_frame(df, ("group", "split"))
    blob = "\n".join(f"{g}\t{s}" for g, s in sorted(set(zip(df.group, df.split))))
    return hashlib.sha256(blob.encode()).hexdigest()


__all__ = [
    "TriageDataError",
    "normalise_text",
    "group_key",
    "near_duplicate_groups",
    "load_label_map",
    "apply_label_map",
    "load_examples",
    "load_overrides",
    "make_splits",
    "cross_source_splits",
    "shared_centers",
    "coverage",
    "to_markdown",
    "dataset_files",
    "project_files",
    "dataset_hashes",
    "split_fingerprint",
    "parse_age_years",
    "ALL_SOURCES",
    "EXTERNAL_SOURCES",
    "PEDIATRIC_AGE_CUTOFF",
]


def main(argv: list[str] | None = None) -> int:
    """``python -m training.triage_data [--seed N] [--out split.csv]``: coverage table + split summary."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m training.triage_data", description=main.__doc__)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--sources", nargs="+", default=list(ALL_SOURCES), choices=list(ALL_SOURCES))
    parser.add_argument("--out", type=Path, help="write the split (text, center, source, group, origin, split) here")
    args = parser.parse_args(argv)
    df = make_splits(load_examples(sources=args.sources), seed=args.seed)
    tax = load_taxonomy()
    print(f"taxonomy {tax.version}: {len(tax.model_labels())} routable centers; {len(df)} examples "
          f"({int((df.origin == 'external').sum())} external, {int((df.origin == 'project').sum())} project), "
          f"{df.group.nunique()} groups; split {df.split.value_counts().to_dict()}; "
          f"fingerprint {split_fingerprint(df)[:12]}")
    print(to_markdown(coverage(df, tax)))
    if set(args.sources) >= {SPEECH, S2D}:
        print("cross-source centers:", ", ".join(shared_centers(df)))
    if args.out:
        df.to_csv(args.out, index=False)
        print(f"split written to {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
