"""Ranking and calibration metrics against brute force and known answers; the action-unit training targets;
bf16 serving's choice of dtype."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from affectvlm.precision import serving_dtype
from train.metrics_calibration import (
    accuracy_at_coverage,
    expected_calibration_error,
    fit_temperature,
    roc_auc,
    softmax,
)


def test_roc_auc_equals_pairwise_counting_with_ties():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positives = rng.random(60) < 0.4
    pairs = list(itertools.product(scores[positives], scores[~positives]))
    brute = np.mean([1.0 if p > n else 0.5 if p == n else 0.0 for p, n in pairs])
    assert roc_auc(scores, positives) == pytest.approx(brute)
    assert roc_auc([1, 2, 3], [False, False, True]) == 1.0
    assert roc_auc([3, 2, 1], [False, False, True]) == 0.0
    assert roc_auc([1, 2], [True, True]) is None


def test_ece_is_zero_when_confidence_matches_accuracy_and_large_when_overconfident():
    # 10 samples at confidence 0.8, 8 right: calibrated.
    probs = np.tile([0.8, 0.2], (10, 1))
    labels = np.array([0] * 8 + [1] * 2)
    assert expected_calibration_error(probs, labels) == pytest.approx(0.0, abs=1e-9)
    overconfident = np.tile([0.99, 0.01], (10, 1))
    assert expected_calibration_error(overconfident, np.array([0] * 5 + [1] * 5)) == pytest.approx(0.49)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    rng = np.random.default_rng(1)
    logits = rng.normal(0, 3, (4000, 5))
    true_t = 2.5
    p = softmax(logits, true_t)
    labels = np.array([rng.choice(5, p=row) for row in p])
    assert fit_temperature(logits, labels) == pytest.approx(true_t, rel=0.1)
    # And calibrating lowers the ECE.
    assert expected_calibration_error(softmax(logits, fit_temperature(logits, labels)), labels) < (
        expected_calibration_error(softmax(logits), labels)
    )


def test_accuracy_at_coverage_keeps_the_most_confident():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.95, 0.05]])
    labels = np.array([0, 1, 1, 0])  # the two confident ones are right, the two unsure ones wrong
    out = accuracy_at_coverage(probs, labels, coverages=(1.0, 0.5))
    assert out["1.00"]["accuracy"] == 0.5
    assert out["0.50"]["accuracy"] == 1.0 and out["0.50"]["threshold"] == 0.9


def test_au_targets_mark_active_aus_and_leave_unrecorded_samples_out():
    from train.train import AUTargets

    def tokenize(texts):
        n = len(texts)
        return torch.ones(n, 4, dtype=torch.long), torch.ones(n, 4, dtype=torch.long)

    au = AUTargets(tokenize, active_from=0.15)
    t = au.targets([{"aus": {"12": 0.4, "6": 0.1}}, {"aus": {}}, {"blendshapes": {"anger": 1.0}}, None])
    i12, i6 = au.numbers.index(12), au.numbers.index(6)
    assert t[0, i12] == 1 and t[0, i6] == 0 and t[0].sum() == 1
    assert t[1].sum() == 0  # neutral: recorded, nothing active
    assert torch.isnan(t[2]).all() and torch.isnan(t[3]).all()
    assert au.input_ids.shape[0] == len(au.numbers)


def test_au_term_trains_the_fused_embedding_towards_recorded_aus():
    from affectvlm import AffectVLMModel
    from affectvlm.testing import tiny_config
    from train.train import TrainModule

    torch.manual_seed(0)
    module = TrainModule(AffectVLMModel(tiny_config()), au_weight=1.0, num_aus=3)
    fused = torch.nn.functional.normalize(torch.randn(4, 32), dim=-1)
    ids = torch.randint(0, 50, (3, 2, 6))
    targets = torch.tensor([[1.0, 0, 0], [0, 1, 0], [float("nan")] * 3, [0, 0, 1]])
    loss = module.au_loss(fused, ids, torch.ones_like(ids), targets)
    assert torch.isfinite(loss) and loss > 0
    all_unknown = module.au_loss(fused, ids, torch.ones_like(ids), torch.full((4, 3), float("nan")))
    assert all_unknown == 0


def test_serving_dtype_follows_the_hardware_and_the_override(monkeypatch):
    from affectvlm import precision

    monkeypatch.delenv("AFFECTVLM_DTYPE", raising=False)
    expected = torch.bfloat16 if precision.cpu_has_native_bf16() else torch.float32
    assert serving_dtype("cpu") == expected
    monkeypatch.setenv("AFFECTVLM_DTYPE", "float32")
    assert serving_dtype("cpu") == torch.float32
    monkeypatch.setenv("AFFECTVLM_DTYPE", "half-ish")
    with pytest.raises(ValueError, match="AFFECTVLM_DTYPE"):
        serving_dtype("cpu")
