"""The Diffusion Index (METHODS.md §1.6): how many input pixels a saliency map spreads over.

Why the Gini is hand-written: the DI is defined through one specific estimator — 1e-7 added to
every value, values sorted ascending, G = Σ_i (2i − n − 1)·m_(i) / (n·Σ m) with i = 1..n — and
library Gini functions differ in the offset and the (n vs n−1) normalisation, which moves the DI.
"""

from __future__ import annotations

import numpy as np
import torch


def gini(values) -> float:
    """Gini coefficient of a non-negative map (any shape; flattened), with LAM's +1e-7. In [0, 1)."""
    m = values.detach().double().cpu().numpy() if isinstance(values, torch.Tensor) else np.asarray(values, np.float64)
    m = np.sort(m.ravel() + 1e-7)
    n = m.size
    if n == 0:
        raise ValueError("gini of an empty map")
    i = np.arange(1, n + 1, dtype=np.float64)
    return float(np.sum((2 * i - n - 1) * m) / (n * np.sum(m)))


def diffusion_index(saliency) -> float:
    """DI = (1 − Gini(saliency))·100: large DI = many pixels involved. ``saliency`` (h,w) in [0,1]."""
    return (1.0 - gini(saliency)) * 100.0
