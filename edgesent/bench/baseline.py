"""The floor every edgesent figure is compared against: TF-IDF + logistic regression, tuned like a model, and its data.

`tuned_tfidf` is the ONE baseline implementation, used by `edgesent bench` and the bench scripts
(`bench/real_accuracy.py`, `bench/long_reviews.py`): word 1-2 grams with sublinear tf, and the
regularisation C, min_df and the feature cap picked by a small grid on a validation split (given,
or a stratified, seeded `VALIDATION_SHARE` of the train texts), then refitted on all train texts.
A baseline must be tuned on validation like the model is, or the comparison flatters the model.
`bench_data` loads the benchmarked split and, when the data has a separate one, the train split the
baseline is fitted on.
"""

from __future__ import annotations

from pathlib import Path

from edgesent.errors import DataError

BASELINE_TRAIN_CAP = 25_000
VALIDATION_SHARE = 0.1
GRID_C = (1.0, 2.0, 4.0, 8.0)
GRID_VECTORIZER = ({"min_df": 1, "max_features": None}, {"min_df": 2, "max_features": 200_000})


def tfidf_baseline(C: float = 1.0, min_df: int = 1, max_features: int | None = None):
    """An unfitted TF-IDF (word 1-2 grams, sublinear tf) + logistic regression pipeline."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=min_df, max_features=max_features, sublinear_tf=True),
                         LogisticRegression(C=C, max_iter=1000))


def tuned_tfidf(texts: list[str], labels: list[int], validation: tuple[list[str], list[int]] | None = None,
                seed: int = 0, grid_c=GRID_C, grid_vectorizer=GRID_VECTORIZER):
    """(fitted pipeline, record): the grid point with the best validation accuracy, refitted on all of `texts`
    (plus `validation` when given). The record holds the choice and every grid point's validation accuracy."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    texts, labels = list(texts), [int(y) for y in labels]
    if validation is None:
        fit_x, val_x, fit_y, val_y = train_test_split(texts, labels, test_size=VALIDATION_SHARE, random_state=seed,
                                                      stratify=labels if min_class(labels) >= 2 else None)
        everything = (texts, labels)
    else:
        (fit_x, fit_y), (val_x, val_y) = (texts, labels), (list(validation[0]), [int(y) for y in validation[1]])
        everything = (fit_x + val_x, fit_y + val_y)
    grid = []
    for vec in grid_vectorizer:  # the vectorizer is fitted once per setting; C only refits the regression
        vectorizer = tfidf_baseline(**vec).steps[0][1]
        x_fit, x_val = vectorizer.fit_transform(fit_x), vectorizer.transform(val_x)
        for c in grid_c:
            lr = LogisticRegression(C=c, max_iter=1000).fit(x_fit, fit_y)
            grid.append({"C": c, **vec, "val_accuracy": float((lr.predict(x_val) == val_y).mean())})
    best = max(grid, key=lambda g: g["val_accuracy"])  # first best: the smaller C and the plainer vectorizer win ties
    model = tfidf_baseline(C=best["C"], min_df=best["min_df"], max_features=best["max_features"])
    model.fit(*everything)
    record = {"C": best["C"], "min_df": best["min_df"], "max_features": best["max_features"],
              "val_accuracy": best["val_accuracy"], "val_size": len(val_x), "fit_size": len(everything[0]), "grid": grid}
    return model, record


def min_class(labels: list[int]) -> int:
    return min((labels.count(y) for y in set(labels)), default=0)


def describe(record: dict) -> str:
    """`TF-IDF + LR (C 4, min_df 2, 200,000 features; picked on 2,375 validation texts)`."""
    cap = "all features" if record["max_features"] is None else f"{record['max_features']:,} features"
    return (f"TF-IDF + LR (C {record['C']:g}, min_df {record['min_df']}, {cap}; picked on {record['val_size']:,} "
            f"validation texts)")


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
