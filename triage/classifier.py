"""Serving-side triage classifier: ONNX artifact in, ranked specialty centers out.

No torch on this path: the artifact folder written by ``training.triage_train`` holds the ONNX
model(s), a ``tokenizers`` ``tokenizer.json``, the label map and ``meta.json`` (temperature,
abstention threshold, max length, ...).  Load it from a folder (``serving.components`` resolves a
registry URI such as ``models:/triage-classifier@champion`` to its folder first)::

    clf = TriageClassifier.load("/path/to/artifact-folder")
    [pred] = clf.predict(["I have had a dry cough and a fever for three days"])
    pred.centers[0]      # ("respiratory", 0.93)
    pred.abstained       # False when the top probability reaches the threshold

Probabilities are ``softmax(logits / temperature)`` (temperature fitted on validation data);
the prediction abstains when the top probability is below ``threshold`` (chosen on validation
data to reach the selective-accuracy target).
"""

from __future__ import annotations

import json
import math
import os
import threading
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from triage.exemplars import EXEMPLAR_FILE, ExemplarBlend, ExemplarError, log_softmax

VARIANTS = {"int8": "model.int8.onnx", "fp32": "model.onnx"}
ARTIFACT_FILES = ("labels.json", "meta.json", "tokenizer/tokenizer.json")
URGENCY_HEAD_FILE = "urgency_head.json"  # optional: a linear urgency head over the pooled embedding


@dataclass(frozen=True)
class UrgencyHead:
    """``softmax(embedding @ weights.T + bias)`` over ``labels`` (urgency levels), and the decision thresholds
    chosen on validation (see ``triage.urgency.model_level``)."""

    labels: tuple[str, ...]
    weights: np.ndarray  # (n_levels, dim)
    bias: np.ndarray  # (n_levels,)
    thresholds: dict[str, float]
    info: dict
    normalise: bool = False  # L2-normalise the embedding first
    # cited presentations (guidance statements) with their normalised embeddings, to name the closest one
    exemplars: tuple[dict, ...] = ()
    exemplar_embeddings: np.ndarray | None = None
    # nearest-exemplar component (optional): the head's training examples (normalised embeddings, level index);
    # p = (1 - weight) * p_head + weight * (share of each level among the k nearest), see ``probabilities``
    neighbour_embeddings: np.ndarray | None = None
    neighbour_labels: np.ndarray | None = None
    neighbour_k: int = 0
    neighbour_weight: float = 0.0

    @classmethod
    def from_json(cls, path: Path) -> "UrgencyHead":
        data = _read_json(path)
        try:
            labels = tuple(str(x) for x in data["labels"])
            weights = np.asarray(data["weights"], dtype=np.float32)
            bias = np.asarray(data["bias"], dtype=np.float32)
            thresholds = {str(k): float(v) for k, v in data["thresholds"].items()}
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelArtifactError(f"{path}: malformed urgency head ({exc})") from exc
        if weights.ndim != 2 or weights.shape[0] != len(labels) or bias.shape != (len(labels),):
            raise ModelArtifactError(f"{path}: weights {weights.shape} / bias {bias.shape} do not fit {len(labels)} "
                                     "levels")
        ex = data.get("exemplars") or {}
        exemplars, ex_emb = (), None
        if ex:
            try:
                exemplars = tuple({"text": t, "urgency": u, "source": src}
                                  for t, u, src in zip(ex["text"], ex["urgency"], ex["source"], strict=True))
                ex_emb = np.asarray(ex["embeddings"], dtype=np.float32)
            except (KeyError, TypeError, ValueError) as exc:
                raise ModelArtifactError(f"{path}: malformed exemplars ({exc})") from exc
            if ex_emb.shape != (len(exemplars), weights.shape[1]):
                raise ModelArtifactError(f"{path}: exemplar embeddings {ex_emb.shape} do not fit {len(exemplars)} "
                                         f"exemplars of dimension {weights.shape[1]}")
        nb_emb, nb_lab, nb_k, nb_w = _neighbours(path, data.get("neighbours"), len(labels), weights.shape[1])
        info = {k: v for k, v in data.items() if k not in {"weights", "bias", "exemplars", "neighbours"}}
        if nb_emb is not None:
            info["neighbours"] = {"k": nb_k, "weight": nb_w, "n": int(len(nb_lab))}
        return cls(labels, weights, bias, thresholds, info, bool(data.get("normalise", False)), exemplars, ex_emb,
                   nb_emb, nb_lab, nb_k, nb_w)

    def closest(self, embedding: np.ndarray, levels=("emergency", "urgent")) -> dict[str, dict]:
        """Per level, the cited presentation closest to ``embedding`` (cosine): {level: {text, source, similarity}}."""
        if self.exemplar_embeddings is None or not len(self.exemplars):
            return {}
        v = np.asarray(embedding, dtype=np.float32)
        v = v / max(float(np.linalg.norm(v)), 1e-9)
        sims = self.exemplar_embeddings @ v
        out = {}
        for level in levels:
            idx = self._exemplar_rows.get(level)
            if idx is not None and len(idx):
                best = int(idx[np.argmax(sims[idx])])
                out[level] = {**self.exemplars[best], "similarity": round(float(sims[best]), 3)}
        return out

    def __post_init__(self) -> None:  # exemplar rows per level, once (closest() runs for every text)
        rows: dict[str, list[int]] = {}
        for i, e in enumerate(self.exemplars):
            rows.setdefault(e["urgency"], []).append(i)
        object.__setattr__(self, "_exemplar_rows", {k: np.asarray(v) for k, v in rows.items()})

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        x = np.asarray(embeddings, dtype=np.float32)
        if self.normalise:
            x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
        p = softmax(x @ self.weights.T + self.bias)
        if self.neighbour_embeddings is None or self.neighbour_weight <= 0:
            return p
        return (1.0 - self.neighbour_weight) * p + self.neighbour_weight * neighbour_shares(
            x, self.neighbour_embeddings, self.neighbour_labels, self.neighbour_k, len(self.labels))
INPUT_NAMES = ("input_ids", "attention_mask", "token_type_ids")


class ModelArtifactError(RuntimeError):
    """The model folder exists but a file in it is missing, corrupt or incompatible."""


class ModelFolderNotFoundError(ModelArtifactError, FileNotFoundError):
    """The model folder does not exist."""


@dataclass(frozen=True)
class Prediction:
    centers: list[tuple[str, float]]  # every label, ranked by calibrated probability (desc)
    abstained: bool
    abstain_reason: str | None
    # urgency level -> probability from the urgency head (same encoder pass); None when the artifact has none
    urgency: dict[str, float] | None = None
    # per urgent level, the closest cited presentation (text, source URL, cosine similarity), when the head has them
    urgency_evidence: dict[str, dict] | None = None
    # the pooled sentence embedding of this text (artifacts with an embedding output), for drift monitoring
    embedding: np.ndarray | None = field(default=None, compare=False, repr=False)

    @property
    def top(self) -> tuple[str, float]:
        return self.centers[0]


def latin_share(text: str) -> float:
    """Share of the letters in ``text`` that are Latin script (1.0 for a text without letters). The classifier,
    the red-flag rules and the urgency head read English: a text mostly in another script is not read."""
    letters = [ch for ch in str(text) if ch.isalpha()]
    if not letters:
        return 1.0
    # letters below U+0250 (Basic Latin to Latin Extended-B) need no name look-up: the common case is cheap
    return sum(1 for ch in letters if ch < "\u0250" or "LATIN" in unicodedata.name(ch, "")) / len(letters)


def clean_text(text: str) -> str:
    """The training data's normalisation (``training.triage_data.normalise_text``): NFKC, control
    and format characters to spaces, whitespace collapsed, stripped.  The tokenizer lower-cases."""
    out = unicodedata.normalize("NFKC", str(text))
    out = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in out)
    return " ".join(out.split())


def softmax(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


class TriageClassifier:
    def __init__(
        self,
        folder: Path,
        session,
        tokenizer,
        labels: list[str],
        meta: dict,
        variant: str,
        version: str | None = None,
        batch_size: int = 64,
        deterministic: bool = True,
        parallel_sessions: list | None = None,
        urgency_head: UrgencyHead | None = None,
        exemplars: ExemplarBlend | None = None,
        blend: bool | None = None,
    ):
        self.folder = Path(folder)
        self.urgency_head = urgency_head
        # the pooled sentence embedding is a second output of newer artifacts (the urgency head reads it)
        outputs = [o.name for o in session.get_outputs()]
        self._with_embedding = "embedding" in outputs
        self._output_names = [outputs[0], "embedding"] if self._with_embedding else [outputs[0]]
        self._session = session
        # int8 per-text mode: one single-threaded session per core, texts of a call spread over them (a
        # single short text gains nothing from intra-op threads; measured on 2 cores: ~2x per call of 32)
        self._parallel = list(parallel_sessions or [])
        self._pool: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()
        self._tokenizer = tokenizer
        self.labels = list(labels)
        self.meta = dict(meta)
        self.variant = variant
        self.version = version
        self.batch_size = int(batch_size)
        # Dynamic int8 quantises activations with one scale per tensor, so in a padded batch a text's
        # logits depend on its neighbours (measured: up to 0.17 probability, 2% top-1 flips).  With
        # ``deterministic`` the int8 model runs each text alone, which on CPU is also faster per query
        # than padded batches of mixed-length complaints.  fp32 is batch-invariant and always batches.
        self.deterministic = bool(deterministic)
        self.taxonomy_version: str = str(meta.get("taxonomy_version", "unknown"))
        self.temperature: float = float(meta.get("temperature", 1.0))
        self.head_threshold: float = float(meta.get("threshold", 0.0))
        # nearest-exemplar blend (issue 12, triage.exemplars): used when the sidecar says so, or when asked
        self.exemplars = exemplars
        if blend and (exemplars is None or not self._with_embedding):
            raise ModelArtifactError(f"{self.folder} has no {EXEMPLAR_FILE} (or no embedding output): cannot blend")
        self.blend: bool = bool(exemplars is not None and self._with_embedding
                                and (exemplars.enabled if blend is None else blend))
        self.threshold: float = exemplars.threshold if self.blend else self.head_threshold
        self.max_length: int = int(meta.get("max_length", 128))
        self._input_names = [i.name for i in session.get_inputs()]

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, folder: str | Path, **options) -> "TriageClassifier":
        """Same as :meth:`from_folder` (the artifact folder of a registered version, or any folder)."""
        return cls.from_folder(folder, **options)

    @classmethod
    def from_folder(
        cls, folder: str | Path, variant: str | None = "int8", version: str | None = None, deterministic: bool = True,
        intra_op_threads: int | None = None, spinning: bool = True, blend: bool | None = None,
    ):
        """``intra_op_threads`` (None: one per core) and ``spinning`` (onnxruntime's busy-wait of idle worker
        threads; the service turns it off so the event loop keeps the CPU).  In the deterministic int8 mode
        (one text per call) the threads are used as that many single-threaded sessions that run the texts
        of a call side by side, instead of splitting one small text's operators across threads.  ``blend``: use
        the nearest-exemplar sidecar (``center_exemplars.json``) or not; None follows the sidecar's ``enabled``."""
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        if not folder.is_dir():
            raise ModelFolderNotFoundError(f"model folder not found: {folder}")
        missing = [name for name in ARTIFACT_FILES if not (folder / name).is_file()]
        if missing:
            raise ModelArtifactError(f"triage model folder {folder} lacks {', '.join(missing)}")
        labels = _read_json(folder / "labels.json")
        meta = _read_json(folder / "meta.json")
        if not isinstance(labels, list) or not labels or not all(isinstance(x, str) for x in labels):
            raise ModelArtifactError(f"{folder / 'labels.json'} must be a non-empty JSON list of center ids")
        if len(set(labels)) != len(labels):
            raise ModelArtifactError(f"{folder / 'labels.json'} repeats a label")
        if not isinstance(meta, dict):
            raise ModelArtifactError(f"{folder / 'meta.json'} must be a JSON object")
        for key in ("temperature", "threshold", "max_length"):
            value = meta.get(key)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ModelArtifactError(f"{folder / 'meta.json'} has no valid numeric {key!r} (got {value!r})")
        if meta["temperature"] <= 0:
            raise ModelArtifactError(f"{folder / 'meta.json'}: temperature must be > 0, got {meta['temperature']}")
        variant = variant or meta.get("default_variant", "int8")
        if variant not in VARIANTS:
            raise ValueError(f"unknown model variant {variant!r}; choose one of {sorted(VARIANTS)}")
        model_path = folder / VARIANTS[variant]
        if not model_path.is_file():
            raise ModelArtifactError(f"triage model folder {folder} lacks {VARIANTS[variant]} ({variant} variant)")
        try:
            tokenizer = Tokenizer.from_file(str(folder / "tokenizer" / "tokenizer.json"))
        except Exception as exc:  # noqa: BLE001 - the library raises bare Exceptions
            raise ModelArtifactError(f"cannot read tokenizer {folder / 'tokenizer' / 'tokenizer.json'}: {exc}") from exc
        threads = int(intra_op_threads) if intra_op_threads is not None else (os.cpu_count() or 1)
        if threads < 1:
            raise ValueError(f"intra_op_threads must be >= 1, got {intra_op_threads}")
        per_text = deterministic and variant == "int8"

        def new_session(n_threads: int):
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.intra_op_num_threads = n_threads
            if not spinning:
                options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            try:
                return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
                raise ModelArtifactError(f"cannot load ONNX model {model_path}: {exc}") from exc

        session = new_session(1 if per_text else threads)
        parallel = [session] + [new_session(1) for _ in range(threads - 1)] if per_text and threads > 1 else []
        names = {i.name for i in session.get_inputs()}
        if not {"input_ids", "attention_mask"} <= names:
            raise ModelArtifactError(f"{model_path} inputs {sorted(names)} lack input_ids/attention_mask")
        out_shape = session.get_outputs()[0].shape
        if len(out_shape) != 2 or (isinstance(out_shape[1], int) and out_shape[1] != len(labels)):
            raise ModelArtifactError(
                f"{model_path} outputs shape {out_shape}, incompatible with {len(labels)} labels in labels.json"
            )
        tokenizer.enable_truncation(max_length=int(meta["max_length"]))
        pad_id = tokenizer.token_to_id("[PAD]")
        tokenizer.enable_padding(pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]")
        head = None
        if (folder / URGENCY_HEAD_FILE).is_file():
            if "embedding" not in {o.name for o in session.get_outputs()}:
                raise ModelArtifactError(f"{folder / URGENCY_HEAD_FILE} needs an 'embedding' output, which "
                                         f"{model_path.name} lacks")
            head = UrgencyHead.from_json(folder / URGENCY_HEAD_FILE)
        exemplars = None
        if (folder / EXEMPLAR_FILE).is_file():
            emb_out = [o for o in session.get_outputs() if o.name == "embedding"]
            if not emb_out:
                raise ModelArtifactError(f"{folder / EXEMPLAR_FILE} needs an 'embedding' output, which "
                                         f"{model_path.name} lacks")
            dim = emb_out[0].shape[-1] if isinstance(emb_out[0].shape[-1], int) else None
            try:
                exemplars = ExemplarBlend.load(folder, labels, dim)
            except ExemplarError as exc:
                raise ModelArtifactError(str(exc)) from exc
        return cls(folder, session, tokenizer, labels, meta, variant, version, deterministic=deterministic,
                   parallel_sessions=parallel, urgency_head=head, exemplars=exemplars, blend=blend)

    # ------------------------------------------------------------------ inference
    def _check(self, texts) -> list[str]:
        if isinstance(texts, str) or not isinstance(texts, (list, tuple)):
            raise TypeError("texts must be a list of strings")
        cleaned = []
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"texts[{i}] is {type(text).__name__}, not a string")
            value = clean_text(text)
            if not value:
                raise ValueError(f"texts[{i}] is empty after normalisation")
            cleaned.append(value)
        return cleaned

    def _encode(self, texts: list[str]) -> dict[str, np.ndarray]:
        # one text (the served int8 path runs each text alone): encode() skips encode_batch's thread-pool dispatch
        # (~100 vs ~115-140 us of CPU per text, same ids)
        encodings = [self._tokenizer.encode(texts[0])] if len(texts) == 1 else self._tokenizer.encode_batch(texts)
        feeds = {
            "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
            "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            "token_type_ids": np.array([e.type_ids for e in encodings], dtype=np.int64),
        }
        return {name: feeds[name] for name in self._input_names}

    def predict_logits(self, texts) -> np.ndarray:
        """Raw (uncalibrated) logits, shape (len(texts), len(labels)).

        fp32 (or ``deterministic=False``): one ONNX call per batch of up to ``batch_size`` texts.
        int8 with ``deterministic`` (default): one call per text, so results never depend on the batch.
        """
        return self.predict_outputs(texts)[0]

    def predict_outputs(self, texts) -> tuple[np.ndarray, np.ndarray | None]:
        """(logits, pooled embeddings or None when the artifact has no embedding output), one encoder pass."""
        cleaned = self._check(texts)
        if not cleaned:
            return np.zeros((0, len(self.labels)), dtype=np.float32), None
        per_text = self.deterministic and self.variant == "int8"
        if per_text and len(self._parallel) > 1 and len(cleaned) > 1:
            return self._per_text_parallel(cleaned)
        step = 1 if per_text else self.batch_size
        logits, embeddings = [], []
        for start in range(0, len(cleaned), step):
            outs = self._session.run(self._output_names, self._encode(cleaned[start : start + step]))
            logits.append(outs[0])
            if self._with_embedding:
                embeddings.append(outs[1])
        return np.concatenate(logits, axis=0), (np.concatenate(embeddings, axis=0) if embeddings else None)

    def _per_text_parallel(self, cleaned: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """Each text alone (same outputs as sequential), stripes of the call on the single-threaded sessions."""
        n = len(self._parallel)
        with self._pool_lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(n, thread_name_prefix="triage-ort")

        def stripe(j: int) -> list[tuple[int, list[np.ndarray]]]:
            session = self._parallel[j]
            return [(i, session.run(self._output_names, self._encode([cleaned[i]])))
                    for i in range(j, len(cleaned), n)]

        logits = np.empty((len(cleaned), len(self.labels)), dtype=np.float32)
        embeddings: np.ndarray | None = None
        for part in self._pool.map(stripe, range(min(n, len(cleaned)))):
            for i, outs in part:
                logits[i] = outs[0][0]
                if self._with_embedding:
                    if embeddings is None:
                        embeddings = np.empty((len(cleaned), outs[1].shape[-1]), dtype=np.float32)
                    embeddings[i] = outs[1][0]
        return logits, embeddings

    def predict_proba(self, texts) -> np.ndarray:
        """Calibrated center probabilities (blended with the nearest exemplars when ``self.blend``)."""
        return self._probabilities(*self.predict_outputs(texts))

    def _probabilities(self, logits: np.ndarray, embeddings: np.ndarray | None) -> np.ndarray:
        if not self.blend or not len(logits):
            return softmax(logits, self.temperature)
        return self.exemplars.probabilities(log_softmax(np.asarray(logits, dtype=np.float64) / self.temperature),
                                            embeddings)

    def embed(self, texts) -> np.ndarray:
        """Pooled sentence embeddings from the served encoder (artifacts with an embedding output)."""
        _, embeddings = self.predict_outputs(texts)
        if embeddings is None:
            raise ModelArtifactError(f"{self.folder}: this artifact has no embedding output")
        return embeddings

    def predict(self, texts) -> list[Prediction]:
        logits, embeddings = self.predict_outputs(texts)
        probs = self._probabilities(logits, embeddings)
        urgency = None
        if self.urgency_head is not None and embeddings is not None:
            urgency = self.urgency_head.probabilities(embeddings)
        results = []
        for k, row in enumerate(probs):
            order = np.argsort(-row, kind="stable")
            centers = [(self.labels[j], float(row[j])) for j in order]
            top = centers[0][1]
            abstained = top < self.threshold
            reason = (
                f"top probability {top:.2f} below threshold {self.threshold:.2f}" if abstained else None
            )
            levels = evidence = None
            if urgency is not None:
                levels = {level: float(p) for level, p in zip(self.urgency_head.labels, urgency[k])}
                evidence = self.urgency_head.closest(embeddings[k]) or None
            results.append(Prediction(centers, abstained, reason, levels, evidence,
                                      None if embeddings is None else embeddings[k]))
        return results

    def info(self) -> dict:
        return {
            "version": self.version,
            "variant": self.variant,
            "taxonomy_version": self.taxonomy_version,
            "labels": self.labels,
            "temperature": self.temperature,
            "threshold": self.threshold,
            "max_length": self.max_length,
            "deterministic": self.deterministic,
            "parallel_sessions": len(self._parallel) or 1,
            "urgency_head": None if self.urgency_head is None else self.urgency_head.info.get("version", "present"),
            "exemplar_blend": None if self.exemplars is None else {**self.exemplars.summary(), "used": self.blend},
        }


def neighbour_shares(x: np.ndarray, bank: np.ndarray, labels: np.ndarray, k: int, n_levels: int) -> np.ndarray:
    """Per row of ``x``, the share of each level among its ``k`` nearest rows of ``bank`` (cosine; ``bank`` rows
    are L2-normalised, ``labels`` their level indices)."""
    x = np.asarray(x, dtype=np.float32)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-9)
    k = max(1, min(int(k), len(bank)))
    sims = x @ bank.T
    idx = np.argpartition(-sims, k - 1, axis=1)[:, :k] if k < len(bank) else np.tile(np.arange(len(bank)), (len(x), 1))
    near = labels[idx]
    return np.stack([(near == c).mean(axis=1) for c in range(n_levels)], axis=1).astype(np.float32)


def encode_bank(x: np.ndarray) -> dict:
    """Normalised float16 embeddings as a JSON-safe dict (base64), for ``neighbours`` in urgency_head.json."""
    import base64

    arr = np.ascontiguousarray(np.asarray(x, dtype=np.float16))
    return {"dtype": "float16", "shape": list(arr.shape), "embeddings_b64": base64.b64encode(arr.tobytes()).decode()}


def _neighbours(path: Path, data, n_levels: int, dim: int):
    """Parse the optional ``neighbours`` block of urgency_head.json: (embeddings, labels, k, weight)."""
    if not data:
        return None, None, 0, 0.0
    import base64
    import binascii

    try:
        k, weight = int(data["k"]), float(data["weight"])
        labels = np.asarray(data["labels"], dtype=np.int64)
        shape = tuple(int(v) for v in data["shape"])
        raw = base64.b64decode(data["embeddings_b64"], validate=True)
        emb = np.frombuffer(raw, dtype=np.dtype(data.get("dtype", "float16"))).astype(np.float32).reshape(shape)
    except (KeyError, TypeError, ValueError, binascii.Error) as exc:
        raise ModelArtifactError(f"{path}: malformed neighbours ({exc})") from exc
    if emb.shape != (len(labels), dim) or k < 1 or not 0.0 <= weight <= 1.0 or \
            (len(labels) and (labels.min() < 0 or labels.max() >= n_levels)):
        raise ModelArtifactError(f"{path}: neighbours {emb.shape} / {len(labels)} labels / k={k} / weight={weight} "
                                 f"do not fit {n_levels} levels of dimension {dim}")
    return emb, labels, k, weight


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelArtifactError(f"cannot parse {path}: {exc}") from exc
