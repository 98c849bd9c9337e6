"""`predict --engine ray` on a local Ray: same rows and scores as single-process predict, no row lost
or duplicated when an actor is killed, the same one-line refusals.

One tiny BERT (trained for a few seconds on the synthetic reviews, exported to ONNX fp32) and a
local Ray with 3 CPUs (2 scoring actors x 1 thread + 1 for read/write tasks) are shared by the module.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import sentences

from edgesent.errors import DataError, EdgesentError
from edgesent.runtime import Classifier
from edgesent.scoring import predict_file

ray = pytest.importorskip("ray")
scoring_ray = pytest.importorskip("edgesent.scoring_ray")

ROWS = 3000
LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def artifact(model_factory, tmp_path_factory) -> Path:
    from test_runtime import build_artifact, train_tiny

    trained = train_tiny(model_factory("bert"), tmp_path_factory.mktemp("ray-trained"), epochs=3)
    return build_artifact(trained, tmp_path_factory.mktemp("ray-art") / "bert", int8=False)


@pytest.fixture(scope="module")
def local_ray():
    import logging

    os.environ.setdefault("RAY_worker_niceness", "0")  # as scoring_ray.start_ray does for a local Ray
    ray.init(num_cpus=3, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
    yield ray
    ray.shutdown()


def frame(rows: int = ROWS, seed: int = 5):
    """Reviews with an id; a few bad rows single-process predict also meets: empty, blank, null, odd unicode."""
    import pandas as pd

    texts = [t for t, _ in sentences(rows, seed=seed)]
    texts[3], texts[10], texts[11] = "", "   ", "great \u00e9t\u00e9 \U0001f600 film, \"quoted\"\nand a newline"
    df = pd.DataFrame({"id": np.arange(rows), "review": texts, "stars": np.arange(rows) % 5})
    df.loc[20, "review"] = None
    return df


def write_input(df, folder: Path, kind: str) -> tuple[Path, str]:
    """(single-process input file, the --file spec given to ray) in format `kind`."""
    folder.mkdir(parents=True, exist_ok=True)
    single = folder / f"all.{kind}"
    if kind == "csv":
        df.to_csv(single, index=False)
        return single, str(single)
    if kind == "jsonl":
        df.to_json(single, orient="records", lines=True, force_ascii=False)
        return single, str(single)
    df.to_parquet(single, index=False)
    parts = folder / "parts"  # ray reads a glob over three shards
    parts.mkdir()
    for i, idx in enumerate(np.array_split(np.arange(len(df)), 3)):
        df.iloc[idx].to_parquet(parts / f"part-{i}.parquet", index=False)
    return single, str(parts / "part-*.parquet")


def read_out(path: Path):
    import pandas as pd

    return pd.read_parquet(path) if path.is_file() else pd.read_parquet(path).reset_index(drop=True)


# --------------------------------------------------------------------------------------------
def assert_same_rows(single_out: Path, ray_out: Path, rows: int) -> None:
    """Every id once; labels equal; probabilities within 1e-5; the same columns in the same order."""
    one, many = read_out(single_out), read_out(ray_out)
    assert list(many.columns) == list(one.columns) == ["id", "review", "stars", "label", "confidence",
                                                        "prob_negative", "prob_positive", "empty"]
    assert len(many) == len(one) == rows
    ids = many["id"].astype(int)
    assert sorted(ids) == list(range(ROWS))  # every id exactly once
    one = one.assign(id=one["id"].astype(int)).set_index("id").sort_index()
    many = many.assign(id=ids).set_index("id").sort_index()
    assert (many["label"] == one["label"]).all()
    assert (many["empty"].astype(bool) == one["empty"].astype(bool)).all()
    assert many.loc[[3, 10, 20], "empty"].astype(bool).all()  # empty, blank and null text: flagged, scored
    for name in ("confidence", "prob_negative", "prob_positive"):
        np.testing.assert_allclose(many[name], one[name], atol=1e-5, rtol=0)
    assert (many["review"].fillna("") == one["review"].fillna("")).all()


@pytest.mark.parametrize("kind", ["parquet", "csv"])  # a glob over parquet shards; one csv with a quoted newline
def test_ray_equals_single_process_row_for_row(artifact, local_ray, tmp_path, kind):
    single_in, spec = write_input(frame(), tmp_path / "in", kind)
    clf = Classifier(artifact, threads=1)
    single_out, rows, counts = predict_file(clf, single_in, tmp_path / "single.parquet", column="review")
    result = scoring_ray.score_with_ray(artifact, spec, tmp_path / "scored", column="review", workers=2,
                                        progress=False)
    assert result["rows"] == rows == ROWS and result["counts"] == counts
    assert min(counts.values()) > ROWS // 5  # a model that learned: both labels occur
    assert_same_rows(single_out, result["out"], ROWS)
    assert not list(tmp_path.glob(".scored.tmp-*"))


def worker_pids() -> set[int]:
    import psutil

    pids = set()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmd = " ".join(proc.info["cmdline"] or [])
        if "MapWorker" in cmd and "Scorer" in cmd:
            pids.add(proc.info["pid"])
    return pids


def test_killed_actor_loses_and_duplicates_no_row(artifact, local_ray, tmp_path):
    rows = 12_000
    df = frame(rows, seed=9)
    _, spec = write_input(df, tmp_path / "in", "parquet")
    out = tmp_path / "scored"
    result: dict = {}

    def run():
        try:
            result.update(scoring_ray.score_with_ray(artifact, spec, out, column="review", workers=2, batch_size=8,
                                                     progress=False))
        except BaseException as exc:  # noqa: BLE001 - checked below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.time() + 120
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    # wait until some blocks are written (the run is under way), then SIGKILL one scoring actor
    while time.time() < deadline and not (tmp.is_dir() and any(tmp.iterdir())):
        time.sleep(0.05)
    pids = worker_pids()
    assert pids and thread.is_alive(), "the run ended before an actor could be killed: give it more rows"
    victim = min(pids)
    os.kill(victim, signal.SIGKILL)
    killed_mid_run = thread.is_alive()
    thread.join(180)
    assert not thread.is_alive()
    assert "error" not in result, result.get("error")
    assert killed_mid_run
    scored = read_out(out)
    ids = scored["id"].astype(int)
    assert len(scored) == result["rows"] == rows
    assert ids.is_unique and sorted(ids) == list(range(rows))  # every id exactly once
    assert victim not in worker_pids()


# --------------------------------------------------------------------------------------------
# The same refusals as single-process predict


def test_non_utf8_refused_like_single_process(artifact, tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"review\ngreat movie\nfine\ncaf\xe9 was awful\n")
    with pytest.raises(DataError) as single:
        predict_file(Classifier(artifact, threads=1), path, tmp_path / "o.parquet", column="review")
    with pytest.raises(DataError) as many:
        scoring_ray.score_with_ray(artifact, path, tmp_path / "scored", column="review", progress=False)
    assert str(many.value) == str(single.value) and "line 4 is not valid UTF-8" in str(many.value)
    assert not (tmp_path / "scored").exists()


@pytest.mark.parametrize("kind", ["csv", "jsonl", "parquet"])
def test_missing_column_refused_like_single_process(artifact, tmp_path, kind):
    single_in, spec = write_input(frame(50), tmp_path / "in", kind)
    with pytest.raises(DataError) as single:
        predict_file(Classifier(artifact, threads=1), single_in, tmp_path / "o.parquet", column="body")
    with pytest.raises(DataError) as many:
        scoring_ray.score_with_ray(artifact, single_in, tmp_path / "scored", column="body", progress=False)
    assert str(many.value) == str(single.value)
    assert "has no column 'body' (columns: id, review, stars)" in str(many.value)


def cli(capsys, *args) -> tuple[int, str, str]:
    from edgesent.cli import main

    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
        raise SystemExit(0)
    out, err = capsys.readouterr()
    return exit_.value.code, out, err


def test_cli_scores_jsonl_like_single_process(artifact, local_ray, tmp_path, capsys):
    single_in, _ = write_input(frame(ROWS), tmp_path / "in", "jsonl")
    code, out, err = cli(capsys, "predict", artifact, "--file", single_in, "--column", "review", "--engine", "ray",
                         "--workers", "2", "--threads", "1", "--out", tmp_path / "scored")
    assert code == 0, err
    assert f"scored {ROWS} rows" in out and "2 workers x 1 threads" in out
    single_out, _, _ = predict_file(Classifier(artifact, threads=1), single_in, tmp_path / "single.parquet",
                                    column="review")
    assert_same_rows(single_out, tmp_path / "scored", ROWS)


def test_gold_label_column_kept_with_prefix_refused_without(artifact, local_ray, tmp_path, capsys):
    """An input column named like an added one (a gold `label`) is refused as single-process predict
    refuses it, before Ray starts; with --prefix pred_ it stays untouched beside pred_label."""
    df = frame(200).assign(label=lambda d: np.where(d["stars"] > 2, "positive", "negative"))
    single_in, spec = write_input(df, tmp_path / "in", "csv")
    code, _, err = cli(capsys, "predict", artifact, "--file", spec, "--column", "review", "--engine", "ray",
                       "--out", tmp_path / "scored")
    with pytest.raises(DataError) as single:
        predict_file(Classifier(artifact, threads=1), single_in, tmp_path / "single.parquet", column="review")
    assert code != 0 and err.strip().count("\n") == 0 and str(single.value) in err
    assert "has a column 'label'" in err and not (tmp_path / "scored").exists()
    result = scoring_ray.score_with_ray(artifact, spec, tmp_path / "scored", column="review", workers=2,
                                        progress=False, prefix="pred_")
    many = read_out(result["out"]).assign(id=lambda d: d["id"].astype(int)).set_index("id").sort_index()
    one, _, counts = predict_file(Classifier(artifact, threads=1), single_in, tmp_path / "single.parquet",
                                  column="review", prefix="pred_")
    one = read_out(one).assign(id=lambda d: d["id"].astype(int)).set_index("id").sort_index()
    assert list(many.columns) == list(one.columns) and result["counts"] == counts
    assert list(many.index) == list(one.index) == list(range(200))
    assert list(many["label"]) == list(df["label"])  # the gold column, unchanged
    assert (many["pred_label"] == one["pred_label"]).all()
    np.testing.assert_allclose(many["pred_confidence"], one["pred_confidence"], atol=1e-5, rtol=0)


def test_existing_out_refused(artifact, tmp_path, capsys):
    _, spec = write_input(frame(20), tmp_path / "in", "csv")
    (tmp_path / "scored").mkdir()
    (tmp_path / "scored" / "keep.txt").write_text("mine")
    code, _, err = cli(capsys, "predict", artifact, "--file", spec, "--column", "review", "--engine", "ray",
                       "--out", tmp_path / "scored")
    assert code != 0 and err.strip().count("\n") == 0
    assert "--out" in err and "already exists" in err
    assert [p.name for p in (tmp_path / "scored").iterdir()] == ["keep.txt"]


def test_missing_ray_names_the_extra(artifact, tmp_path, capsys, monkeypatch):
    _, spec = write_input(frame(20), tmp_path / "in", "csv")
    monkeypatch.setitem(__import__("sys").modules, "ray", None)  # `import ray` raises ImportError
    code, _, err = cli(capsys, "predict", artifact, "--file", spec, "--engine", "ray", "--out", tmp_path / "o")
    assert code != 0 and err.strip().count("\n") == 0
    assert 'pip install "edgesent[ray]"' in err
    with pytest.raises(EdgesentError, match=r'edgesent\[ray\]'):
        scoring_ray.import_ray()


@pytest.mark.parametrize("args, fragment", [
    (["--engine", "ray", "--file", "{tmp}/in/all.csv"], "--engine ray needs --out DIR"),
    (["--engine", "ray", "--out", "{tmp}/o"], "--engine ray needs --file PATH"),
    (["hello", "--engine", "ray", "--out", "{tmp}/o"], "--engine ray scores files"),
    (["--file", "{tmp}/in/all.csv", "--workers", "2"], "--workers needs --engine ray"),
    (["--engine", "ray", "--file", "{tmp}/in/all.csv", "--out", "{tmp}/o", "--overwrite"], "--overwrite does not apply"),
    (["--engine", "ray", "--file", "{tmp}/in/*.xlsx", "--out", "{tmp}/o"], "matches no .csv, .jsonl, .parquet, .txt"),
    (["--engine", "ray", "--file", "{tmp}/nope", "--out", "{tmp}/o"], "input file not found"),
    (["--engine", "spark"], "--engine: Input should be 'onnxruntime', 'openvino' or 'ray'"),
])
def test_cli_one_line_errors(artifact, tmp_path, capsys, args, fragment):
    write_input(frame(20), tmp_path / "in", "csv")
    code, _, err = cli(capsys, "predict", artifact, *[a.format(tmp=tmp_path) for a in args])
    assert code != 0 and err.strip().count("\n") == 0, err
    assert fragment in err
