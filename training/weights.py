"""Class weights for cost-balanced training (one definition for every model)."""

from __future__ import annotations

import numpy as np


def balanced_class_weights(y: np.ndarray, n_classes: int) -> np.ndarray:
    """Inverse-frequency ("balanced") weight per class, ``n / (k * n_c)`` over the k classes present; classes
    without examples get weight 0."""
    counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=n_classes).astype(np.float64)
    present = counts > 0
    w = np.zeros(n_classes)
    w[present] = len(y) / (present.sum() * counts[present])
    return w
