"""Classification metrics and the statistics edgesent reports with them, in one place.

- `classification_metrics`: accuracy, precision/recall/F1 (of the positive class for two labels,
  macro averages for more), optionally the confusion matrix and scikit-learn's report;
- `wilson`: 95 % Wilson score interval of a proportion (accuracy on n texts);
- `mcnemar_p`: exact two-sided McNemar test on paired predictions (is variant B's accuracy change
  against A more than noise?);
- `paired_comparison`: both of those for two prediction vectors on the same texts.
"""

from __future__ import annotations

import math

import numpy as np

METRIC_NAMES = ("accuracy", "f1", "precision", "recall")


def classification_metrics(labels, predictions, names: list[str], full: bool = False) -> dict:
    """accuracy/f1/precision/recall (+ confusion matrix and sklearn report when `full`)."""
    from sklearn.metrics import (
        accuracy_score,
        classification_report,
        confusion_matrix,
        precision_recall_fscore_support,
    )

    ids = list(range(len(names)))
    average = "binary" if len(names) == 2 else "macro"
    precision, recall, f1, _ = precision_recall_fscore_support(
        labels, predictions, labels=ids, average=average, pos_label=1, zero_division=0
    )
    out = {"accuracy": float(accuracy_score(labels, predictions)), "f1": float(f1),
           "precision": float(precision), "recall": float(recall)}
    if full:
        out["confusion_matrix"] = confusion_matrix(labels, predictions, labels=ids).tolist()
        out["report"] = classification_report(
            labels, predictions, labels=ids, target_names=names, output_dict=True, zero_division=0
        )
    return out


def accuracy(predictions, labels) -> float:
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float((predictions == labels).mean()) if labels.size else 0.0


def wilson(correct: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson score interval of a proportion."""
    if n == 0:
        return 0.0, 0.0
    p = correct / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def mcnemar_p(b: int, c: int) -> float:
    """Exact two-sided McNemar p-value: b, c = discordant pairs (only A right, only B right)."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def paired_comparison(pred_a, pred_b, labels) -> dict:
    """B against A on the same texts: accuracy change in points, agreement, discordant pairs, McNemar p."""
    a, b, y = np.asarray(pred_a), np.asarray(pred_b), np.asarray(labels)
    only_a = int(((a == y) & (b != y)).sum())
    only_b = int(((b == y) & (a != y)).sum())
    return {"n": int(y.size), "change_points": round((accuracy(b, y) - accuracy(a, y)) * 100, 4),
            "agreement": float((a == b).mean()) if y.size else 0.0, "only_a_right": only_a, "only_b_right": only_b,
            "mcnemar_p": mcnemar_p(only_a, only_b)}
