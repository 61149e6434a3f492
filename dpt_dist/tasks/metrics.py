"""Metrics over generated label strings. An unparseable prediction counts as wrong, never crashes."""
from __future__ import annotations

from sklearn.metrics import accuracy_score, f1_score


def _normalise(text: str) -> str:
    return " ".join(text.strip().lower().split())


def classification_metrics(predictions: list[str], targets: list[str], labels: list[str], macro_f1: bool = False) -> dict[str, float]:
    """Accuracy (and macro-F1) in percent. A prediction outside the label set is its own wrong
    class: it lowers accuracy and recall but is not counted as a real label."""
    preds = [_normalise(p) for p in predictions]
    golds = [_normalise(t) for t in targets]
    out = {"accuracy": 100.0 * accuracy_score(golds, preds)}
    if macro_f1:
        label_set = [_normalise(l) for l in labels]
        out["macro_f1"] = 100.0 * f1_score(golds, preds, labels=label_set, average="macro", zero_division=0)
    return out
