"""Ranking and calibration metrics (numpy only): ROC AUC, expected calibration error, temperature fitting,
accuracy against coverage."""

from __future__ import annotations

import numpy as np


def roc_auc(scores, positives) -> float | None:
    """Area under the ROC curve: the probability that a random positive outranks a random negative (ties
    count one half). None when either class is absent."""
    scores, positives = np.asarray(scores, dtype=np.float64), np.asarray(positives, dtype=bool)
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        return None
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores), dtype=np.float64)
    sorted_scores = scores[order]
    # Average ranks over ties (1-based).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    mean_rank = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(mean_rank, counts)
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    z = np.asarray(logits, dtype=np.float64) / temperature
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def expected_calibration_error(probs, labels, bins: int = 15) -> float:
    """ECE: the bin-weighted gap between confidence (top probability) and accuracy, equal-width bins."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(-1), probs.argmax(-1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            ece += inside.mean() * abs(confidence[inside].mean() - correct[inside].mean())
    return float(ece)


def nll(logits, labels, temperature: float = 1.0) -> float:
    p = softmax(logits, temperature)
    return float(-np.log(np.clip(p[np.arange(len(labels)), np.asarray(labels)], 1e-12, None)).mean())


def fit_temperature(logits, labels, low: float = 0.05, high: float = 20.0, steps: int = 60) -> float:
    """The temperature T minimising the NLL of softmax(logits / T) (golden-section search on log T)."""
    a, b = np.log(low), np.log(high)
    ratio = (np.sqrt(5.0) - 1.0) / 2.0
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    for _ in range(steps):
        if nll(logits, labels, np.exp(c)) < nll(logits, labels, np.exp(d)):
            b, d = d, c
            c = b - ratio * (b - a)
        else:
            a, c = c, d
            d = a + ratio * (b - a)
    return float(np.exp((a + b) / 2.0))


def accuracy_at_coverage(probs, labels, coverages=(1.0, 0.9, 0.8, 0.7, 0.5)) -> dict[str, float]:
    """Accuracy on the most confident fraction of samples, when the model may answer "unsure" for the rest;
    and the confidence threshold that fraction needs."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    confidence, correct = probs.max(-1), probs.argmax(-1) == labels
    order = np.argsort(-confidence, kind="mergesort")
    out = {}
    for coverage in coverages:
        keep = order[: max(1, int(round(coverage * len(order))))]
        out[f"{coverage:.2f}"] = {
            "accuracy": float(correct[keep].mean()),
            "threshold": float(confidence[keep].min()),
        }
    return out


__all__ = [
    "accuracy_at_coverage",
    "expected_calibration_error",
    "fit_temperature",
    "nll",
    "roc_auc",
    "softmax",
]
