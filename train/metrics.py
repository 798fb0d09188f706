"""Classification metrics from predicted and true class indices (numpy; no sklearn needed)."""

from __future__ import annotations

import numpy as np


def confusion_matrix(preds, labels, num_classes: int) -> np.ndarray:
    """(C, C) counts; row = true class, column = predicted class."""
    preds, labels = np.asarray(preds, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (labels, preds), 1)
    return cm


def classification_metrics(preds, labels, label_names: list[str], logits=None) -> dict:
    """accuracy, macro F1, per-class F1/precision/recall, the confusion matrix and (with logits) the NLL."""
    num_classes = len(label_names)
    cm = confusion_matrix(preds, labels, num_classes)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(0), cm.sum(1)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, actual, out=np.zeros_like(tp), where=actual > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    present = actual > 0  # macro F1 over the classes that occur, so a missing class does not count as 0
    out = {
        "num_samples": int(cm.sum()),
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "per_class_f1": {name: float(v) for name, v in zip(label_names, f1)},
        "per_class_precision": {name: float(v) for name, v in zip(label_names, precision)},
        "per_class_recall": {name: float(v) for name, v in zip(label_names, recall)},
        "confusion_matrix": cm.tolist(),
    }
    if logits is not None and len(labels):
        logits = np.asarray(logits, dtype=np.float64)
        logp = logits - logits.max(1, keepdims=True)
        logp = logp - np.log(np.exp(logp).sum(1, keepdims=True))
        out["nll"] = float(-logp[np.arange(len(labels)), np.asarray(labels)].mean())
    return out
