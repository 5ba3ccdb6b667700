"""Serve the ``ddi-severity`` model: predicted interaction severity for a pair of drugs.

Only numpy and onnxruntime are imported (no torch, rdkit or sklearn): the artifact folder holds the
pre-computed feature row of every known drug (``drug_features.npz``), the classifier
(``model.onnx``), the class order (``labels.json``) and ``meta.json``.  Pair features are built
here by :class:`DrugContext`, which training uses too, so training and serving cannot drift.

The model answers "if these two drugs interact, how severe is it likely to be" (it was trained on
DDInter pairs with a known severity only; see docs/ddi-model.md).  Its output is a *prediction*,
never a documented interaction.

    >>> p = DDIPredictor.load("/path/to/artifact-folder")   # serving.components resolves models:/ URIs
    >>> p.predict_pairs([("sertraline", "tramadol")])      # a pair DDInter does not list
    [{'major': 0.82, 'moderate': 0.18, 'minor': 0.0}]        # (champion v1, rounded)
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np

MODEL_FILE = "model.onnx"
FEATURES_FILE = "drug_features.npz"
LABELS_FILE = "labels.json"
META_FILE = "meta.json"
DETECTOR_FILE = "detector.onnx"   # optional: the calibrated interaction detector (artifacts from 2026-12-07 on)
DETECTOR_META = "detector.json"


class DDIModelNotFoundError(FileNotFoundError):
    """The ddi-severity artifact folder, or a file in it, does not exist."""


def normalise_name(name: str) -> str:
    return re.sub(r"\s+", " ", str(name).strip().lower())


PROFILE_NAMES = ("log_n", "major", "moderate", "minor")


def profile(counts: np.ndarray, prior: np.ndarray, smoothing: float = 2.0) -> np.ndarray:
    """[n, 3] class counts -> [n, 4] (log1p total, smoothed class shares); NaN rows where total is 0."""
    n = counts.sum(axis=1)
    frac = (counts + smoothing * prior[None, :]) / (n[:, None] + smoothing)
    out = np.hstack([np.log1p(n)[:, None], frac]).astype(np.float32)
    out[n <= 0] = np.nan
    return out


class DrugContext:
    """Everything pair features are computed from.

    Static per-drug arrays (``binary``: ATC level 1-2 multi-hot + availability flags; ``physchem``;
    ``atc3``/``atc4`` memberships; ``knn_idx``/``knn_w``: the most structurally similar labelled
    drugs) and the evidence: ``label_counts[i, j, c]`` = 1 when labelled pair (i, j) has class c
    (indices < ``n_labelled`` are the drugs that can carry labels).  Derived here, identically at
    training and serving time: each drug's own profile, the profile of its ATC level 2/3/4 classes
    (other members only), of its structural neighbours, and ATC level-3 class-pair counts.
    """

    def __init__(self, binary, physchem, atc2, atc3, atc4, knn_idx, knn_w, label_counts, prior):
        self.binary = np.asarray(binary, dtype=np.uint8)
        self.physchem = np.asarray(physchem, dtype=np.float32)
        self.knn_idx = np.asarray(knn_idx, dtype=np.int64)
        self.knn_w = np.asarray(knn_w, dtype=np.float32)
        self.L = np.asarray(label_counts, dtype=np.float32)
        self.prior = np.asarray(prior, dtype=np.float64)
        self.n_labelled = self.L.shape[0]
        n = self.binary.shape[0]
        own = np.zeros((n, self.L.shape[2]), dtype=np.float32)
        own[: self.n_labelled] = self.L.sum(axis=1)
        self.own = own
        self.has_profile = (own.sum(axis=1) > 0).astype(np.uint8)
        parts = [profile(own, self.prior)]
        for m in (atc2, atc3, atc4):
            m = np.asarray(m, dtype=np.float32)
            class_counts = m.T @ own
            others = m @ class_counts - m.sum(axis=1, keepdims=True) * own   # leave the drug itself out
            parts.append(profile(np.maximum(others, 0), self.prior))
        nb = (self.knn_w[:, :, None] * own[self.knn_idx]).sum(axis=1)
        parts.append(profile(nb, self.prior))
        self.continuous = np.hstack([self.physchem] + parts).astype(np.float32)
        m3 = np.asarray(atc3, dtype=np.float32)
        self.atc3 = m3
        m3l = m3[: self.n_labelled]
        self.class_pair3 = np.ascontiguousarray(np.einsum("ia,ijc,jb->abc", m3l, self.L, m3l, optimize=True))
        self._class_pair_flat = self.class_pair3.reshape(m3.shape[1], -1)

    @property
    def n_features(self) -> int:
        return self.binary.shape[1] + 1 + 2 * self.continuous.shape[1] + 8

    def pair_features(self, ia, ib, unseen_a=None, unseen_b=None) -> np.ndarray:
        """Order-free features of pairs (ia[k], ib[k]): binary drug features summed (0/1/2),
        continuous ones as (min, max) ignoring a missing side (NaN only when both are missing), and
        pair evidence: labels of (a's structural neighbours, b) + (b's neighbours, a), and of
        (a's ATC-3 classes x b's ATC-3 classes).  ``unseen_*`` (training only) hide a drug's own
        labels to imitate a drug the labels never mention."""
        ia = np.asarray(ia, dtype=np.int64)
        ib = np.asarray(ib, dtype=np.int64)
        n = len(ia)
        ua = np.zeros(n, bool) if unseen_a is None else np.asarray(unseen_a, bool)
        ub = np.zeros(n, bool) if unseen_b is None else np.asarray(unseen_b, bool)
        has_a = np.where(ua, 0, self.has_profile[ia])
        has_b = np.where(ub, 0, self.has_profile[ib])
        binary = (self.binary[ia].astype(np.float32) + self.binary[ib].astype(np.float32))
        ca = self.continuous[ia].copy()
        cb = self.continuous[ib].copy()
        p = self.physchem.shape[1]
        ca[ua, p : p + len(PROFILE_NAMES)] = np.nan
        cb[ub, p : p + len(PROFILE_NAMES)] = np.nan
        with np.errstate(invalid="ignore"):
            lo = np.fmin(ca, cb)
            hi = np.fmax(ca, cb)
        # neighbours of a paired with b, and of b with a (only labelled drugs carry labels)
        ev = np.zeros((n, self.L.shape[2]), dtype=np.float32)
        for x, y, hide in ((ia, ib, ub), (ib, ia, ua)):
            ok = (y < self.n_labelled) & ~hide
            if ok.any():
                idx = self.knn_idx[x[ok]]
                ev[ok] += (self.knn_w[x[ok]][:, :, None] * self.L[idx, y[ok][:, None]]).sum(axis=1)
        cls = self._class_pair_counts(ia, ib)
        own_pair = np.zeros_like(cls)
        both = (ia < self.n_labelled) & (ib < self.n_labelled)
        own_pair[both] = self.L[ia[both], ib[both]]      # a listed pair's own label never feeds its class count
        cls = np.maximum(cls - own_pair, 0)
        return np.hstack([
            binary, (has_a + has_b)[:, None].astype(np.float32), lo, hi,
            profile(ev, self.prior), profile(cls, self.prior),
        ]).astype(np.float32)

    def _class_pair_counts(self, ia: np.ndarray, ib: np.ndarray, chunk: int = 8192) -> np.ndarray:
        """sum over a's ATC-3 classes x and b's classes y of class_pair3[x, y] (the labels of all pairs
        between those classes), as two small matrix products."""
        n3, _, c = self.class_pair3.shape
        flat = self._class_pair_flat
        out = np.empty((len(ia), c), dtype=np.float32)
        for s in range(0, len(ia), chunk):
            t = (self.atc3[ia[s : s + chunk]] @ flat).reshape(-1, n3, c)
            out[s : s + chunk] = (t * self.atc3[ib[s : s + chunk]][:, :, None]).sum(axis=1)
        return out

    def feature_names(self, binary_names: list[str], physchem_names: list[str]) -> list[str]:
        cont = list(physchem_names) + [f"{g}_{p}" for g in ("own", "atc2", "atc3", "atc4", "knn")
                                       for p in PROFILE_NAMES]
        return ([f"sum:{b}" for b in binary_names] + ["sum:has_profile"] + [f"min:{c}" for c in cont]
                + [f"max:{c}" for c in cont] + [f"knn_pair_{p}" for p in PROFILE_NAMES]
                + [f"atc3_pair_{p}" for p in PROFILE_NAMES])


class DDIPredictor:
    """Predicted severity of drug pairs from a registered ``ddi-severity`` artifact folder."""

    def __init__(self, model_dir: str | Path, version: str | None = None, threads: int = 1):
        import onnxruntime as ort

        model_dir = Path(model_dir)
        missing = [f for f in (MODEL_FILE, FEATURES_FILE, LABELS_FILE, META_FILE) if not (model_dir / f).is_file()]
        if not model_dir.is_dir():
            raise DDIModelNotFoundError(f"model folder not found: {model_dir}")
        if missing:
            raise DDIModelNotFoundError(f"ddi-severity artifact {model_dir} lacks {missing}")
        self.model_dir = model_dir
        self.version = version
        self.meta = json.loads((model_dir / META_FILE).read_text())
        self.labels: list[str] = json.loads((model_dir / LABELS_FILE).read_text())
        with np.load(model_dir / FEATURES_FILE, allow_pickle=False) as z:
            names = [str(n) for n in z["names"]]
            keys = [str(k) for k in z["alias_keys"]]
            rows = z["alias_rows"].astype(np.int64)
            self.context = DrugContext(z["binary"], z["physchem"], z["atc2"], z["atc3"], z["atc4"], z["knn_idx"],
                                       z["knn_w"], z["label_counts"], z["prior"])
        self.names = names
        self._index: dict[str, int] = {k: int(r) for k, r in zip(keys, rows)}
        for i, n in enumerate(names):
            self._index.setdefault(n, i)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        self._session = ort.InferenceSession(str(model_dir / MODEL_FILE), opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        outputs = [o.name for o in self._session.get_outputs()]
        self._prob_output = "probabilities" if "probabilities" in outputs else outputs[-1]
        # the interaction detector: "does a reference list an interaction for this pair?" (calibrated), optional
        self.detector_threshold: float | None = None
        self.detector_meta: dict = {}
        self._detector = None
        if (model_dir / DETECTOR_FILE).is_file() and (model_dir / DETECTOR_META).is_file():
            self.detector_meta = json.loads((model_dir / DETECTOR_META).read_text())
            self._calib_x = np.asarray(self.detector_meta["calibration_x"], dtype=np.float64)
            self._calib_y = np.asarray(self.detector_meta["calibration_y"], dtype=np.float64)
            self.detector_threshold = float(self.detector_meta["threshold"])
            self._detector = ort.InferenceSession(str(model_dir / DETECTOR_FILE), opts,
                                                  providers=["CPUExecutionProvider"])
            outs = [o.name for o in self._detector.get_outputs()]
            self._detector_output = "probabilities" if "probabilities" in outs else outs[-1]
            self._detector_input = self._detector.get_inputs()[0].name
        expected = self.meta.get("n_features")
        if expected is not None and expected != self.context.n_features:
            raise ValueError(f"ddi-severity artifact {model_dir}: features give {self.context.n_features} columns, "
                             f"model expects {expected}")

    @classmethod
    def load(cls, folder: str | Path, version: str | None = None) -> "DDIPredictor":
        """From an artifact folder.  Raises :class:`DDIModelNotFoundError` when it or a file in it is
        missing.  Without a registry ``version`` the predictor names its training run (``run:<id>``), so
        decisions still say which model made them."""
        predictor = cls(folder, version=version)
        if predictor.version is None and predictor.meta.get("run_id"):
            predictor.version = f"run:{predictor.meta['run_id'][:12]}"
        return predictor

    # ------------------------------------------------------------------------------------------
    def row(self, ingredient: str) -> int | None:
        return self._index.get(normalise_name(ingredient))

    def knows(self, ingredient: str) -> bool:
        """True when the model has features for this ingredient (canonical lowercase name, a DDInter
        name, or a WHO ATC name)."""
        return isinstance(ingredient, str) and self.row(ingredient) is not None

    def in_training_data(self, ingredient: str) -> bool:
        """True when the drug had labelled DDInter pairs (its interaction profile is known)."""
        r = self.row(ingredient)
        return r is not None and bool(self.context.has_profile[r])

    def features(self, pairs: list[tuple[str, str]]) -> tuple[np.ndarray, np.ndarray]:
        """(pair feature matrix of the scorable pairs, their positions in ``pairs``)."""
        ia, ib, keep = [], [], []
        for k, pair in enumerate(pairs):
            if not isinstance(pair, (tuple, list)) or len(pair) != 2:
                raise ValueError(f"pair {k} must be a (drug, drug) tuple, got {pair!r}")
            ra, rb = self.row(pair[0]), self.row(pair[1])
            if ra is None or rb is None or ra == rb:
                continue
            ia.append(ra)
            ib.append(rb)
            keep.append(k)
        if not keep:
            return np.zeros((0, self.context.n_features), dtype=np.float32), np.zeros(0, dtype=np.int64)
        return self.context.pair_features(ia, ib), np.asarray(keep, dtype=np.int64)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        if len(x) == 0:
            return np.zeros((0, len(self.labels)), dtype=np.float32)
        # InferenceSession.run is thread-safe: no lock, concurrent requests run side by side
        out = self._session.run([self._prob_output], {self._input: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.asarray(out, dtype=np.float32)

    @property
    def has_detector(self) -> bool:
        return self._detector is not None

    def interaction_proba(self, x: np.ndarray) -> np.ndarray:
        """Calibrated probability that a reference lists an interaction, per feature row (detector artifacts)."""
        if self._detector is None:
            raise ValueError("this ddi-severity artifact has no interaction detector")
        if len(x) == 0:
            return np.zeros(0, dtype=np.float64)
        raw = self._detector.run([self._detector_output],
                                 {self._detector_input: np.ascontiguousarray(x, dtype=np.float32)})[0]
        return np.interp(np.asarray(raw, dtype=np.float64)[:, 1], self._calib_x, self._calib_y)

    def predict_pairs(self, pairs: list[tuple[str, str]]) -> list[dict[str, float]]:
        """``{"major": p, "moderate": p, "minor": p}`` per pair, in one onnxruntime call; with a detector
        artifact also ``"interaction"``: the calibrated probability that a reference lists an interaction.

        A pair with a drug the model does not know (see :meth:`knows`), or a drug paired with
        itself, gets ``{}`` (no prediction)."""
        x, keep = self.features(list(pairs))
        probs = self.predict_proba(x)
        inter = self.interaction_proba(x) if self._detector is not None else None
        result: list[dict[str, float]] = [{} for _ in pairs]
        for n, (k, p) in enumerate(zip(keep.tolist(), probs)):
            result[k] = {label: float(v) for label, v in zip(self.labels, p)}
            if inter is not None:
                result[k]["interaction"] = float(inter[n])
        return result
