"""The floor every edgesent figure is compared against: TF-IDF + logistic regression, and its data.

`tfidf_baseline` is the unfitted model (word 1-2 grams, sublinear tf, C = 1), shared by `edgesent
bench` and `bench/real_accuracy.py`; `bench_data` loads the benchmarked split and, when the data
has a separate one, the train split the baseline is fitted on.
"""

from __future__ import annotations

from pathlib import Path

from edgesent.errors import DataError

BASELINE_TRAIN_CAP = 25_000


def tfidf_baseline():
    """The unfitted baseline: TF-IDF of word 1-2 grams (sublinear tf) + logistic regression (C = 1)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=1, sublinear_tf=True), LogisticRegression(max_iter=1000))


def bench_data(data: str, split: str, limit: int | None, labels: list[str]):
    """(texts, labels) of the benchmarked split and, when the data has one, of the train split (for the baseline)."""
    from edgesent.data import advice_for, load_split

    try:
        test = load_split(data, split, limit=limit, labels=labels)
    except DataError as exc:
        raise advice_for(exc, "--data") from None
    if not len(test.texts):
        raise DataError(f"{data}: split '{split}' holds no rows")
    if split == "train" or Path(data).is_file():  # a single file is every split: fitting on it would be cheating
        return test, None
    try:
        train = load_split(data, "train", limit=BASELINE_TRAIN_CAP, labels=labels)
    except DataError:
        train = None
    return test, train
