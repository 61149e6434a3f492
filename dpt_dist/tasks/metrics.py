"""Metrics over generated strings, in percent. An unparseable prediction counts as wrong (STS-B:
as the invalid score -1), never as a crash. scikit-learn / scipy do the arithmetic.

QA metrics follow the official SQuAD / MRQA evaluation: normalise (lower case, drop
punctuation, drop the articles a/an/the, collapse white space), take the max over ALL gold
answers, an empty prediction scores 0, and several datasets are macro-averaged.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter, defaultdict

from scipy.stats import pearsonr, spearmanr
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

INVALID_SCORE = -1.0


def _clean(text: str) -> str:
    return " ".join(str(text).split())


def majority_share(predictions: list[str]) -> float:
    """The share of the most frequent prediction, in percent: a collapse indicator. A model that
    learned to print one label scores the majority class's accuracy and shows 100 here."""
    counts = Counter(_clean(p) for p in predictions)
    return 100.0 * max(counts.values()) / len(predictions) if predictions else 0.0


def _with_invalid_as_wrong(predictions: list[str], targets: list[str], labels: list[str]) -> list[str]:
    """Binary tasks: a prediction outside the label set becomes the other label, so it is wrong
    in every metric (the reference's f1_score_with_invalid)."""
    preds = [_clean(p) for p in predictions]
    if len(labels) != 2:
        return preds
    other = {labels[0]: labels[1], labels[1]: labels[0]}
    return [p if p in labels else other[t] for p, t in zip(preds, targets)]


def _pct(x: float) -> float:
    return 0.0 if math.isnan(x) else 100.0 * float(x)


def accuracy(predictions, targets, labels) -> float:
    return _pct(accuracy_score(targets, _with_invalid_as_wrong(predictions, targets, labels)))


def binary_f1(predictions, targets, labels) -> float:
    """F1 of the positive class, labels[1] ("1": equivalent, duplicate, true)."""
    preds = _with_invalid_as_wrong(predictions, targets, labels)
    return _pct(f1_score(targets, preds, pos_label=labels[1], average="binary", zero_division=0))


def macro_f1(predictions, targets, labels) -> float:
    """Mean F1 over the real classes; an invalid prediction is a miss for its gold class."""
    preds = _with_invalid_as_wrong(predictions, targets, labels)
    return _pct(f1_score(targets, preds, labels=labels, average="macro", zero_division=0))


def matthews(predictions, targets, labels) -> float:
    return _pct(matthews_corrcoef(targets, _with_invalid_as_wrong(predictions, targets, labels)))


def _score(text: str) -> float:
    try:
        value = float(_clean(text))
    except ValueError:
        return INVALID_SCORE
    return value if math.isfinite(value) else INVALID_SCORE


def correlations(predictions, targets) -> dict[str, float]:
    """STS-B: Pearson and Spearman between predicted and gold scores. Correlation with a
    constant prediction is undefined; it is reported as 0."""
    preds = [_score(p) for p in predictions]
    golds = [float(t) for t in targets]
    if len(set(preds)) < 2 or len(set(golds)) < 2:
        return {"pearson": 0.0, "spearman": 0.0}
    return {"pearson": _pct(pearsonr(preds, golds)[0]), "spearman": _pct(spearmanr(preds, golds)[0])}


CLASSIFICATION = {"accuracy": accuracy, "f1": binary_f1, "macro_f1": macro_f1, "matthews": matthews}


def classification(names: list[str], labels: list[str]):
    """A task's metric function for a closed label set: the named metrics, in order."""

    def compute(predictions: list[str], examples) -> dict[str, float]:
        targets = list(examples["target"])
        return {name: CLASSIFICATION[name](predictions, targets, labels) for name in names}

    return compute


# ---- QA (SQuAD / MRQA / ReCoRD) ----------------------------------------------------------------
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation."""
    text = str(text).lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def token_f1(prediction: str, gold: str) -> float:
    pred, ref = normalize_answer(prediction).split(), normalize_answer(gold).split()
    common = Counter(pred) & Counter(ref)
    overlap = sum(common.values())
    if overlap == 0:
        return 0.0
    precision, recall = overlap / len(pred), overlap / len(ref)
    return 2 * precision * recall / (precision + recall)


def best_over_answers(metric, prediction: str, answers: list[str]) -> float:
    if not prediction or not prediction.strip() or not answers:
        return 0.0
    return max(metric(prediction, a) for a in answers)


def is_span(prediction: str, context: str) -> bool:
    """Does the (normalised) prediction occur as a run of whole words of the context?"""
    pred = normalize_answer(prediction)
    return bool(pred) and f" {pred} " in f" {normalize_answer(context)} "


def qa_metrics(
    predictions: list[str], answers: list[list[str]], contexts: list[str] | None = None, groups: list[str] | None = None
) -> dict[str, float]:
    """EM / F1 (max over all gold answers), per group (MRQA dataset) and macro-averaged over
    groups; plus the share of predictions that are a span of their context."""
    groups = groups or ["all"] * len(predictions)
    by_group: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for pred, golds, group in zip(predictions, answers, groups):
        by_group[group].append((best_over_answers(exact_match, pred, golds), best_over_answers(token_f1, pred, golds)))
    per = {g: (sum(e for e, _ in v) / len(v), sum(f for _, f in v) / len(v)) for g, v in by_group.items()}
    out = {
        "f1": 100.0 * sum(f for _, f in per.values()) / len(per),
        "em": 100.0 * sum(e for e, _ in per.values()) / len(per),
    }
    if len(per) > 1:
        for g, (em, f1) in sorted(per.items()):
            out[f"f1/{g}"], out[f"em/{g}"] = 100.0 * f1, 100.0 * em
    if contexts is not None:
        out["span_share"] = 100.0 * sum(is_span(p, c) for p, c in zip(predictions, contexts)) / max(len(predictions), 1)
    return out


def multirc_metrics(predictions: list[str], examples) -> dict[str, float]:
    """F1 over all answer options (positive class "1") and exact match per question (every
    option of the question right), as SuperGLUE scores MultiRC."""
    labels = ["0", "1"]
    targets = list(examples["target"])
    preds = _with_invalid_as_wrong(predictions, targets, labels)
    per_question: dict[str, bool] = {}
    for p, t, g in zip(preds, targets, examples["group"]):
        per_question[g] = per_question.get(g, True) and p == t
    return {
        "f1": binary_f1(predictions, targets, labels),
        "em": 100.0 * sum(per_question.values()) / max(len(per_question), 1),
    }
