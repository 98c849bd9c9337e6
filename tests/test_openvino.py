"""The OpenVINO engine: export --openvino (NNCF INT8 IR, gated, hashed), Classifier/predict --engine openvino,
tamper refusal, the one-line error without openvino, and bench's openvino rows.

A tiny BERT is trained here for a few seconds on the synthetic sentiment set (tests/test_export.py's
`write_run`), so INT8 agreement is checked on data the model has really learned.
"""

from __future__ import annotations

import builtins
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT

from edgesent import export as E
from edgesent.artifact import FILES, ir_weights, load_manifest
from edgesent.errors import ArtifactError, EdgesentError
from edgesent.runtime import Classifier
from edgesent.session import OnnxSession

pytest.importorskip("openvino")
pytest.importorskip("nncf")

OV_XML = FILES["openvino-int8"]
OV_ATOL = 1e-4  # OpenVINO fp32 (f32 precision hint) against onnxruntime fp32, logits


@pytest.fixture(scope="module")
def ov_artifact(trained_run, tmp_path_factory) -> Path:
    return E.export(trained_run, tmp_path_factory.mktemp("ov") / "artifact", int8=True, openvino=True, calibration=64)


@pytest.fixture(scope="module")
def test_texts(sentiment_data) -> tuple[list[str], np.ndarray]:
    import pandas as pd

    df = pd.read_parquet(sentiment_data / "test.parquet")
    return df["text"].tolist(), df["label"].to_numpy()


def test_manifest_records_the_ir_hashes_and_the_default_engine(ov_artifact):
    m = load_manifest(ov_artifact)
    entry = m.models[OV_XML]
    assert (entry.engine, entry.precision, entry.scheme) == ("openvino", "int8", "static")
    assert entry.quantization["variant"] == "openvino_nncf_static" and entry.quantization["calibration_texts"] == 64
    for name in (OV_XML, ir_weights(OV_XML)):  # both halves of the IR are hashed
        assert m.files[name].bytes == (ov_artifact / name).stat().st_size > 0
    assert m.engine == "openvino"  # the gate passed, so the default engine is openvino
    assert m["openvino_quantization"]["winner"]["passed"]
    assert m.models["model.int8.onnx"].engine == "onnxruntime"  # the ORT INT8 file is still there
    # the IR is about a quarter of fp32 (int8 weights), like the ORT INT8 file
    ratio = (ov_artifact / ir_weights(OV_XML)).stat().st_size / (ov_artifact / "model.onnx").stat().st_size
    assert ratio < 0.45


def test_openvino_fp32_equals_onnxruntime_fp32(ov_artifact, test_texts):
    ort = Classifier(ov_artifact, model="fp32", engine="onnxruntime", threads=1)
    ov = Classifier(ov_artifact, model="fp32", engine="openvino", threads=1)
    assert ov.model_file == ort.model_file == "model.onnx" and ov.engine == "openvino"
    texts = test_texts[0][:60] + ["", "great " * 100]  # empty and truncated texts, several buckets
    diff = np.abs(ov.logits(texts, batch_size=8) - ort.logits(texts, batch_size=8)).max()
    assert diff <= OV_ATOL, diff


def test_openvino_int8_agrees_with_fp32_on_separable_data(ov_artifact, test_texts):
    texts, labels = test_texts
    fp32 = Classifier(ov_artifact, model="fp32", engine="onnxruntime", threads=1).logits(texts)
    clf = Classifier(ov_artifact, threads=1)  # default: the manifest's engine, its INT8 IR
    assert (clf.engine, clf.model_file) == ("openvino", OV_XML)
    int8 = clf.logits(texts)
    assert (fp32.argmax(-1) == labels).mean() >= 0.9  # the model learned the task ...
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= 0.97  # ... and INT8 keeps its answers
    assert (int8.argmax(-1) == labels).mean() >= 0.9
    m = load_manifest(ov_artifact)
    assert m.models[OV_XML].metrics["accuracy"] >= m.models["model.onnx"].metrics["accuracy"] - 0.05


def test_tampered_bin_is_refused(ov_artifact, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(ov_artifact, bad)
    weights = bad / ir_weights(OV_XML)
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match=r"model\.int8\.openvino\.bin does not match its sha256"):
        Classifier(bad, engine="openvino")
    Classifier(bad, engine="onnxruntime")  # the ORT files are untouched: still served


def test_without_openvino_the_engine_is_one_line_naming_the_extra(ov_artifact, monkeypatch):
    import edgesent.openvino_session as ovs

    real_import = builtins.__import__

    def no_openvino(name, *args, **kwargs):
        if name == "openvino" or name.startswith("openvino."):
            raise ImportError("No module named 'openvino'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_openvino)
    monkeypatch.setattr(ovs, "_CORE", None)
    monkeypatch.setattr(ovs, "available", lambda: False)
    with pytest.raises(EdgesentError) as exc:
        Classifier(ov_artifact, engine="openvino")
    assert 'pip install "edgesent[openvino]"' in str(exc.value) and "\n" not in str(exc.value)
    # not asked for explicitly, the manifest's openvino default falls back to onnxruntime's INT8
    clf = Classifier(ov_artifact)
    assert (clf.engine, clf.model_file) == ("onnxruntime", "model.int8.onnx")
    with pytest.raises(EdgesentError, match=r"edgesent\[openvino\]"):
        E.export(ov_artifact, ov_artifact.parent / "again", openvino=True)


def test_predict_cli_engine_option(ov_artifact):
    def run(*args):
        return subprocess.run([sys.executable, "-m", "edgesent", "predict", str(ov_artifact), *args],
                              capture_output=True, text=True, cwd=ROOT, timeout=120)

    ok = run("--engine", "openvino", "--model", "bf16", "--threads", "1", "great wonderful film")
    from edgesent.machine import native_bf16

    if native_bf16():
        assert ok.returncode == 0, ok.stderr
        assert "positive" in ok.stdout
    else:
        assert ok.returncode != 0 and "bf16" in ok.stderr
    bad = run("--engine", "tensorrt", "great")
    assert bad.returncode != 0 and "--engine" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
    fp16 = run("--engine", "openvino", "--model", "fp16", "great")
    assert fp16.returncode != 0 and "openvino cannot serve 'fp16'" in fp16.stderr


def test_bench_rows_for_openvino(ov_artifact, tmp_path):
    from edgesent.bench import bench

    out = bench(ov_artifact, batch_sizes=[1], seq_lens=[16], threads=[1], budget=0.05, out=tmp_path / "b", show=False)
    rows = {v["name"]: v for v in json.loads((out / "results.json").read_text())["variants"]}
    assert rows["openvino-fp32"]["status"] == "ok" and rows["openvino-int8"]["status"] == "ok"
    assert rows["ort-int8"]["status"] == "ok" and rows["ort-int8"]["file"] == "model.int8.onnx"
    assert "ort-int8-static" not in rows  # the IR is not an onnxruntime file
    assert rows["openvino-int8"]["file_bytes"] > (ov_artifact / OV_XML).stat().st_size  # IR: .xml + .bin
    assert rows["openvino-bf16"]["status"] in ("ok", "skipped")
    if rows["openvino-bf16"]["status"] == "skipped":
        assert "bf16" in rows["openvino-bf16"]["reason"]
    assert not rows["openvino-int8"]["torch_imported"]


def test_openvino_session_matches_ort_on_a_raw_batch(ov_artifact):
    from edgesent.openvino_session import OpenVinoSession

    rng = np.random.default_rng(0)
    batch = {"input_ids": rng.integers(5, 150, size=(3, 11)), "attention_mask": np.ones((3, 11), dtype=np.int64)}
    batch["attention_mask"][1, 7:] = 0
    ort = OnnxSession(ov_artifact / "model.onnx", threads=1).logits(batch)
    ov = OpenVinoSession(ov_artifact / "model.onnx", threads=1).logits(batch)
    assert np.abs(ort - ov).max() <= OV_ATOL
    with pytest.raises(EdgesentError, match="precision hint"):
        OpenVinoSession(ov_artifact / "model.onnx", hint="int4")


@pytest.mark.parametrize("kind", ["gpt_neox", "roberta", "distilbert"])
def test_openvino_fp32_equals_onnxruntime_on_every_family(kind, model_factory, tmp_path):
    """Rotary GPT-NeoX (Pythia), RoBERTa (position ids from the pad mask) and DistilBERT graphs: OpenVINO reads the
    very ONNX file onnxruntime serves and gives the same logits, right padding included."""
    from edgesent.openvino_session import OpenVinoSession

    out = E.export(model_factory(kind), tmp_path / "artifact")
    clf = Classifier(out, threads=1)
    texts = ["great", "the plot was dull and the actors were awful", "loved it " * 40, "worst film ever"]
    batch = clf.preprocessor.pad(clf.encode(texts)[0])
    ort = OnnxSession(out / "model.onnx", threads=1).logits(batch)
    ov = OpenVinoSession(out / "model.onnx", threads=1).logits(batch)
    assert np.abs(ort - ov).max() <= OV_ATOL


def test_inputs_beyond_the_positions_are_refused_not_crashing(ov_artifact):
    """OpenVINO does not bounds-check the position gather (a segfault); the session refuses such inputs first."""
    from edgesent.artifact import max_tokens
    from edgesent.openvino_session import OpenVinoSession

    limit = max_tokens(ov_artifact)
    assert limit == 512  # BERT: max_position_embeddings 512
    sess = OpenVinoSession(ov_artifact / OV_XML, threads=1)
    ok = {"input_ids": np.full((1, limit), 7), "attention_mask": np.ones((1, limit), dtype=np.int64)}
    assert sess.logits(ok).shape == (1, 2)
    long = {k: np.concatenate([v, v[:, :1]], axis=1) for k, v in ok.items()}
    with pytest.raises(EdgesentError, match=f"{limit + 1} tokens exceed the {limit} positions"):
        sess.logits(long)


PINNED_THREADS = """
import glob, sys
import numpy as np
from edgesent.openvino_session import OpenVinoSession
sess = OpenVinoSession(sys.argv[1], threads=1)
batch = {"input_ids": np.full((2, 16), 7), "attention_mask": np.ones((2, 16), dtype=np.int64)}
for _ in range(3):
    sess.logits(batch)
print(sess.compiled.get_property("ENABLE_CPU_PINNING"))
for task in glob.glob("/proc/self/task/*/status"):
    print(open(task).read().split("Cpus_allowed_list:")[1].split()[0])
"""


@pytest.mark.skipif(not sys.platform.startswith("linux") or len(os.sched_getaffinity(0)) < 2,
                    reason="thread affinity is read from /proc; needs 2+ usable cores")
def test_fewer_threads_than_cores_pins_no_thread(ov_artifact):
    """OpenVINO pins its compute threads by default and every process picks the same first core: two
    one-thread Ray actors shared core 0. With fewer threads than cores no thread may be pinned
    (checked in a fresh process, whose threads no earlier session touched)."""
    everything = ",".join(map(str, sorted(os.sched_getaffinity(0))))
    proc = subprocess.run([sys.executable, "-c", PINNED_THREADS, str(ov_artifact / FILES["openvino-int8"])],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    pinning, *allowed = proc.stdout.split()
    assert pinning == "False"
    to_list = {a: ",".join(str(c) for part in a.split(",") for c in (
        range(int(part.split("-")[0]), int(part.split("-")[-1]) + 1))) for a in allowed}
    assert all(to_list[a] == everything for a in allowed), allowed
