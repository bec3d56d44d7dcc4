"""Long-tail difficulty classes of sub-images (BSPA, METHODS.md §3) and the inverse sampler.

Sub-images sorted by a difficulty score (the MSE of a pretrained model, easy first) are cut into K
classes with sizes N_k ∝ μ^(k−1), μ = factor^(−1/(K−1)), so the first (easiest) class is ``factor``
times the last: K = 10, factor 10 gives μ = 0.7743. Sizes are rounded by largest remainder so they
sum to N; a threshold is the score at each class's upper cumulative count. Held-aside items
(the paper's validation classes) are sorted by a training split's thresholds
(:func:`classes_by_thresholds`): their class sizes are whatever they are.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from attrsr.errors import AttrsrError


@dataclasses.dataclass(frozen=True)
class LongTailClasses:
    classes: np.ndarray  # (N,) class of each item (0 = easiest), in the input order
    sizes: list[int]
    thresholds: list[float]  # upper score bound of classes 0..K−2 (the last class is open)
    mu: float
    k: int
    factor: float


def class_sizes(n: int, k: int = 10, factor: float = 10.0) -> tuple[list[int], float]:
    if not isinstance(k, int) or k < 2:
        raise AttrsrError(f"K (number of classes) must be an integer >= 2, got {k!r}")
    if not factor >= 1:
        raise AttrsrError(f"the imbalance factor must be >= 1, got {factor!r}")
    if n < k:
        raise AttrsrError(f"{n} sub-images cannot fill K={k} classes; lower K or add images")
    mu = float(factor ** (-1.0 / (k - 1)))
    share = mu ** np.arange(k)
    exact = n * share / share.sum()
    sizes = np.floor(exact).astype(int)
    order = np.argsort(-(exact - sizes), kind="stable")
    sizes[order[: n - sizes.sum()]] += 1
    if (sizes == 0).any():
        raise AttrsrError(f"{n} sub-images leave a class empty at K={k}, factor={factor}; lower K or the factor")
    return sizes.tolist(), mu


def long_tail_classes(scores, k: int = 10, factor: float = 10.0) -> LongTailClasses:
    """Classes by ascending ``scores`` (ties broken by position, so the split is deterministic)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not np.isfinite(s).all():
        raise AttrsrError("scores must be a 1-D list of finite numbers")
    sizes, mu = class_sizes(len(s), k, factor)
    order = np.argsort(s, kind="stable")
    classes = np.empty(len(s), dtype=np.int64)
    bounds = np.cumsum(sizes)
    start = 0
    for c, stop in enumerate(bounds):
        classes[order[start:stop]] = c
        start = stop
    thresholds = [float(s[order[b - 1]]) for b in bounds[:-1]]
    return LongTailClasses(classes, sizes, thresholds, mu, k, float(factor))


def assign_classes(scores, thresholds) -> np.ndarray:
    """The class of each score under upper class bounds ``thresholds`` (inclusive, as the split that
    made them: a score equal to ``thresholds[c]`` is in class c; above the last, the open last class)."""
    return np.searchsorted(np.asarray(thresholds, dtype=np.float64), np.asarray(scores, dtype=np.float64), side="left")


def classes_by_thresholds(scores, train: LongTailClasses) -> LongTailClasses:
    """Held-aside ``scores`` sorted into ``train``'s classes by its thresholds (K, factor and μ kept;
    sizes counted, so they need not follow the long-tail law and a class may be empty)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1 or not len(s) or not np.isfinite(s).all():
        raise AttrsrError("scores must be a non-empty 1-D list of finite numbers")
    classes = assign_classes(s, train.thresholds).astype(np.int64)
    sizes = np.bincount(classes, minlength=train.k).tolist()
    return LongTailClasses(classes, sizes, list(train.thresholds), train.mu, train.k, train.factor)


def inverse_probabilities(sizes) -> np.ndarray:
    """P(class k) ∝ 1/N_k."""
    inv = 1.0 / np.asarray(sizes, dtype=np.float64)
    return inv / inv.sum()


def sample_inverse(classes: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` item indices: a class with probability ∝ 1/N_k, then an item uniformly within it."""
    classes = np.asarray(classes)
    k = int(classes.max()) + 1
    members = [np.flatnonzero(classes == c) for c in range(k)]
    p = inverse_probabilities([len(m) for m in members])
    picked = rng.choice(k, size=n, p=p)
    out = np.empty(n, dtype=np.int64)
    for c in range(k):
        where = np.flatnonzero(picked == c)
        out[where] = members[c][rng.integers(0, len(members[c]), size=len(where))]
    return out
