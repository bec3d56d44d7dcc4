"""BSPA's building blocks: long-tail classes, the inverse sampler, parameter integrated gradients
and the importance masks (METHODS.md §3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from attrsr import models
from attrsr.attribution.parameters import importance_mask, parameter_integrated_gradients, prunable_weights
from attrsr.data.longtail import class_sizes, inverse_probabilities, long_tail_classes, sample_inverse
from attrsr.errors import AttrsrError
from attrsr.resize import imresize

pytestmark = pytest.mark.usefixtures("one_thread")


def test_class_sizes_follow_the_geometric_long_tail():
    n = 10_000
    scores = np.random.default_rng(0).lognormal(size=n)
    lt = long_tail_classes(scores, k=10, factor=10)
    assert lt.mu == pytest.approx(0.7743, abs=5e-5)
    share = lt.mu ** np.arange(10)
    assert sum(lt.sizes) == n
    assert np.abs(np.array(lt.sizes) - n * share / share.sum()).max() <= 1
    assert lt.sizes[0] / lt.sizes[-1] == pytest.approx(10, abs=0.05)
    assert np.bincount(lt.classes).tolist() == lt.sizes
    for c, t in enumerate(lt.thresholds):  # easy first: every score of class c is at most its threshold
        assert scores[lt.classes == c].max() == t and scores[lt.classes == c + 1].min() >= t
    with pytest.raises(AttrsrError, match="K"):
        class_sizes(100, k=1)
    with pytest.raises(AttrsrError, match="imbalance factor"):
        class_sizes(100, k=5, factor=0.5)


def test_inverse_sampler_matches_one_over_class_size():
    lt = long_tail_classes(np.random.default_rng(1).random(5000), k=10, factor=10)
    draws = sample_inverse(lt.classes, 100_000, np.random.default_rng(2))
    counts = np.bincount(lt.classes[draws], minlength=10)
    expected = inverse_probabilities(lt.sizes) * len(draws)
    assert chisquare(counts, expected).pvalue > 0.01
    # within a class every member is equally likely
    members = np.flatnonzero(lt.classes == 9)
    within = np.bincount(np.searchsorted(members, draws[lt.classes[draws] == 9]), minlength=len(members))
    assert chisquare(within).pvalue > 0.01


def _patches(scale=2, n=8, size=16):
    from skimage import data

    photo = torch.from_numpy(data.chelsea()).permute(2, 0, 1).float() / 255
    hr = torch.stack([photo[:, 20 * i : 20 * i + size * scale, 30 * i : 30 * i + size * scale] for i in range(n)])
    lr = torch.stack([imresize(x, 1 / scale) for x in hr]).clamp(0, 1)
    return lr, hr


def _trained_pair():
    torch.manual_seed(0)
    model = models.create("edsr-baseline", scale=2, n_resblocks=2, n_feats=16)
    lr, hr = _patches()
    theta_a = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(15):
        opt.zero_grad()
        (model(lr) - hr).abs().mean().backward()
        opt.step()
    theta_b = {k: v.clone() for k, v in model.state_dict().items()}
    return model, theta_a, theta_b, [(lr[:4], hr[:4]), (lr[4:], hr[4:])]


def test_parameter_ig_is_complete_and_tightens_with_steps():
    model, a, b, batches = _trained_pair()
    errors = {m: parameter_integrated_gradients(model, a, b, batches, steps=m) for m in (10, 100)}
    res = errors[100]
    assert res.loss_b < res.loss_a  # training moved the loss down
    assert res.completeness_error < 1e-3, res.completeness_error  # measured 2.8e-4 (M=10: 1.2e-3)
    assert res.completeness_error < errors[10].completeness_error
    assert set(prunable_weights(model)) <= set(res.ig) and all("bias" not in n for n in prunable_weights(model))
    assert torch.equal(model.state_dict()["head.0.weight"], b["head.0.weight"])  # the model is untouched


def test_masks_select_the_expected_count():
    model, a, b, batches = _trained_pair()
    res = parameter_integrated_gradients(model, a, b, batches, steps=5)
    imp = {n: res.ig[n].abs() for n in prunable_weights(model)}
    total = sum(t.numel() for t in imp.values())
    weight = importance_mask(imp, 0.1)
    assert sum(int(m.sum()) for m in weight.values()) == int(0.1 * total)
    threshold = min(float(imp[n][weight[n]].min()) for n in imp if weight[n].any())
    assert all(float(imp[n][~weight[n]].max()) <= threshold for n in imp)
    filters = importance_mask(imp, 0.25, level="filter")
    n_filters = sum(t.shape[0] for t in imp.values())
    chosen = sum(int(m.flatten(1).all(1).sum()) for m in filters.values())
    assert chosen == int(0.25 * n_filters)
    assert all(bool((m.flatten(1).all(1) | ~m.flatten(1).any(1)).all()) for m in filters.values())  # whole filters
