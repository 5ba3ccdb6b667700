"""Nearest-exemplar component blended with the classifier head (issue 12), served without torch.

The artefact's ONNX graph already returns the pooled sentence embedding beside the logits (one encoder pass). This
sidecar (``center_exemplars.json`` + ``center_exemplars.npy``) holds the L2-normalised embeddings of the training
split's texts and the taxonomy descriptions, each with its center and provenance (text, source, origin), and the
blend parameters chosen by cross-source validation in training (``training.exemplar_blend``)::

    s_c   = mean of the k highest cosines between the text and center c's exemplars (k = 0: cosine to the
            normalised mean of c's exemplars, a prototype)
    p_nn  = softmax(s / tau)
    p     = softmax(((1 - w) * log p_head + w * log p_nn) / T_blend)

``p_head`` is the temperature-scaled head (``meta.json``); ``T_blend`` and the abstention threshold are refitted on
validation for the blended probabilities. With ``w = 0`` and ``T_blend = 1`` the blend is the head. ``enabled``
says whether the classifier uses it by default (training turns it on only when it beat the head cross-source).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

EXEMPLAR_FILE = "center_exemplars.json"
EXEMPLAR_MATRIX = "center_exemplars.npy"


class ExemplarError(ValueError):
    """The exemplar sidecar is malformed or does not fit the artefact."""


def log_softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-9)


def center_scores(emb: np.ndarray, bank: np.ndarray, bank_y: np.ndarray, n_classes: int, k: int) -> np.ndarray:
    """(n, n_classes) per-center similarity: mean of the top-k cosines (k >= 1) or the prototype cosine (k = 0).
    A center without exemplars scores -1 (the lowest cosine)."""
    q = unit(emb)
    bank = unit(bank)
    bank_y = np.asarray(bank_y)
    out = np.full((len(q), n_classes), -1.0, dtype=np.float64)
    if k <= 0:
        for c in range(n_classes):
            rows = bank[bank_y == c]
            if len(rows):
                out[:, c] = q @ unit(rows.mean(0))
        return out
    sims = q @ bank.T
    for c in range(n_classes):
        idx = np.flatnonzero(bank_y == c)
        if not len(idx):
            continue
        s = sims[:, idx]
        kk = min(k, len(idx))
        top = np.partition(s, len(idx) - kk, axis=1)[:, len(idx) - kk:] if kk < len(idx) else s
        out[:, c] = top.mean(1)
    return out


def blend_log_probs(head_log_probs: np.ndarray, scores: np.ndarray, weight: float, tau: float) -> np.ndarray:
    """(1 - w) * log p_head + w * log softmax(scores / tau): unnormalised blended log-probabilities."""
    if not 0.0 <= weight <= 1.0:
        raise ExemplarError(f"blend weight must be in [0, 1], got {weight}")
    if tau <= 0:
        raise ExemplarError(f"tau must be > 0, got {tau}")
    head = np.asarray(head_log_probs, dtype=np.float64)
    if weight == 0.0:
        return head
    return (1.0 - weight) * head + weight * log_softmax(np.asarray(scores) / tau)


@dataclass(frozen=True)
class ExemplarBlend:
    labels: tuple[str, ...]
    embeddings: np.ndarray  # (n, dim) float32, unit rows
    centers: np.ndarray  # (n,) index into labels
    k: int
    tau: float
    weight: float
    temperature: float  # T_blend, fitted on validation after blending
    threshold: float  # abstention threshold for the blended probabilities
    enabled: bool
    provenance: tuple[dict, ...] = ()
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:  # per-center rows (and prototypes for k = 0) once: scores() runs per text
        n = len(self.labels)
        rows = [np.flatnonzero(self.centers == c) for c in range(n)]
        object.__setattr__(self, "_rows", rows)
        if self.k <= 0:
            protos = np.zeros((n, self.embeddings.shape[1]), dtype=np.float32)
            for c, idx in enumerate(rows):
                if len(idx):
                    protos[c] = unit(self.embeddings[idx].mean(0))
            object.__setattr__(self, "_protos", protos)

    def scores(self, emb: np.ndarray) -> np.ndarray:
        """Same as ``center_scores(emb, embeddings, centers, n, k)``, with the per-center rows precomputed."""
        q = unit(emb)
        n = len(self.labels)
        out = np.full((len(q), n), -1.0, dtype=np.float64)
        present = [c for c in range(n) if len(self._rows[c])]
        if self.k <= 0:
            out[:, present] = q @ self._protos[present].T
            return out
        sims = q @ self.embeddings.T
        for c in present:
            s = sims[:, self._rows[c]]
            kk = min(self.k, s.shape[1])
            out[:, c] = (np.partition(s, s.shape[1] - kk, axis=1)[:, s.shape[1] - kk:] if kk < s.shape[1]
                         else s).mean(1)
        return out

    def probabilities(self, head_log_probs: np.ndarray, emb: np.ndarray) -> np.ndarray:
        z = blend_log_probs(head_log_probs, self.scores(emb) if self.weight else None, self.weight, self.tau)
        return np.exp(log_softmax(z / self.temperature))

    # ------------------------------------------------------------------ file format
    def save(self, folder: Path) -> None:
        folder = Path(folder)
        np.save(folder / EXEMPLAR_MATRIX, np.asarray(self.embeddings, dtype=np.float16), allow_pickle=False)
        data = {"labels": list(self.labels), "k": int(self.k), "tau": float(self.tau), "weight": float(self.weight),
                "temperature": float(self.temperature), "threshold": float(self.threshold),
                "enabled": bool(self.enabled), "matrix": EXEMPLAR_MATRIX, "dtype": "float16",
                "centers": [self.labels[int(c)] for c in self.centers],
                "provenance": list(self.provenance), "info": self.info}
        (folder / EXEMPLAR_FILE).write_text(json.dumps(data))

    @classmethod
    def load(cls, folder: Path, labels: list[str], dim: int | None = None) -> "ExemplarBlend":
        folder = Path(folder)
        path = folder / EXEMPLAR_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            emb = np.load(folder / data.get("matrix", EXEMPLAR_MATRIX), allow_pickle=False).astype(np.float32)
            file_labels = [str(x) for x in data["labels"]]
            index = {c: i for i, c in enumerate(file_labels)}
            centers = np.asarray([index[c] for c in data["centers"]], dtype=np.int64)
            blend = cls(tuple(file_labels), unit(emb), centers, int(data["k"]), float(data["tau"]),
                        float(data["weight"]), float(data["temperature"]), float(data["threshold"]),
                        bool(data["enabled"]), tuple(data.get("provenance") or ()), dict(data.get("info") or {}))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise ExemplarError(f"{path}: malformed exemplar sidecar ({exc})") from exc
        if list(blend.labels) != list(labels):
            only_model = [x for x in labels if x not in blend.labels]
            only_file = [x for x in blend.labels if x not in labels]
            raise ExemplarError(f"{path}: labels differ from labels.json (labels.json only: {only_model or '-'}; "
                                f"sidecar only: {only_file or '-'}; or another order)")
        if emb.ndim != 2 or len(emb) != len(centers) or (dim is not None and emb.shape[1] != dim):
            raise ExemplarError(f"{path}: embedding matrix {emb.shape} does not fit {len(centers)} exemplars"
                                + (f" of dimension {dim}" if dim is not None else ""))
        if not 0.0 <= blend.weight <= 1.0 or blend.tau <= 0 or blend.temperature <= 0:
            raise ExemplarError(f"{path}: weight must be in [0, 1], tau and temperature > 0")
        if blend.provenance and len(blend.provenance) != len(centers):
            raise ExemplarError(f"{path}: {len(blend.provenance)} provenance rows for {len(centers)} exemplars")
        return blend

    def summary(self) -> dict:
        return {"n_exemplars": int(len(self.centers)), "k": self.k, "tau": self.tau, "weight": self.weight,
                "temperature": self.temperature, "threshold": self.threshold, "enabled": self.enabled}
