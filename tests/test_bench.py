"""`edgesent bench`: statistics, variant planning, skips, outputs and one-line errors, on a tiny model.

The run folder and the artifact are built here directly (save_pretrained + optimum ONNX export +
onnxruntime dynamic quantization + write_manifest), so these tests exercise bench alone.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesent.bench import bench, plan
from edgesent.bench.inputs import load_preprocessor, synthetic_batch, text_batch
from edgesent.bench.plan import plan_variants, resolve_target
from edgesent.bench.report import CSV_COLUMNS
from edgesent.bench.timing import percentiles, summarize, time_runs
from edgesent.errors import EdgesentError

GRID = dict(batch_sizes=[1, 2], seq_lens=[8, 16], threads=[1], budget=0.2)
SMALL_GRID = dict(batch_sizes=[1], seq_lens=[8], threads=[1], budget=0.05)


def make_run(model_dir: Path, data_dir: Path, run: Path) -> Path:
    """A run folder as `edgesent train` leaves it: recipe.yaml, model/, tokenizer/."""
    from conftest import tiny_recipe
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from edgesent.config import save_recipe, validate_recipe

    recipe = validate_recipe(tiny_recipe(model_dir, data_dir, run.parent))
    run.mkdir(parents=True)
    save_recipe(recipe, run / "recipe.yaml")
    AutoModelForSequenceClassification.from_pretrained(model_dir).save_pretrained(run / "model")
    AutoTokenizer.from_pretrained(model_dir).save_pretrained(run / "tokenizer")
    return run


def make_artifact(run: Path, out: Path) -> Path:
    """fp32 ONNX + dynamic INT8 + tokenizer + manifest naming the run."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from optimum.exporters.onnx import main_export
    from transformers import AutoTokenizer

    from edgesent.artifact import write_manifest

    main_export(str(run / "model"), output=out, task="text-classification", opset=17, do_validation=False)
    for extra in out.glob("*.onnx"):
        if extra.name != "model.onnx":
            extra.unlink()
    quantize_dynamic(out / "model.onnx", out / "model.int8.onnx", weight_type=QuantType.QInt8)
    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    tok.save_pretrained(out)
    write_manifest(out, {
        "labels": ["negative", "positive"],
        "preprocessing": {"max_length": 32, "truncation": "head", "head_share": 0.25, "lowercase": False,
                          "padding_side": "right", "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id},
        "inputs": ["input_ids", "attention_mask"],
        "source": {"run": str(run)},
        "models": {"model.onnx": {"precision": "fp32"}, "model.int8.onnx": {"precision": "int8"}},
    })
    return out


@pytest.fixture(scope="module")
def artifact(model_factory, sentiment_data, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bench")
    run = make_run(model_factory("roberta"), sentiment_data, root / "run")
    return make_artifact(run, run / "artifact")


@pytest.fixture(scope="module")
def bench_out(artifact, sentiment_data, tmp_path_factory) -> Path:
    """One full run with --data: every CPU variant, each in its own worker process."""
    out = tmp_path_factory.mktemp("out") / "b"
    return bench(artifact, data=str(sentiment_data), limit=60, out=out, show=False, **GRID)


# --------------------------------------------------------------------------------------------
def test_percentiles_on_known_samples():
    p = percentiles(range(1, 101))
    assert p == pytest.approx({"p50": 50.5, "p90": 90.1, "p99": 99.01})
    assert percentiles([7.0]) == {"p50": 7.0, "p90": 7.0, "p99": 7.0}
    s = summarize([0.001, 0.002, 0.003, 0.004])  # seconds in, milliseconds out
    assert s["n"] == 4 and s["mean_ms"] == pytest.approx(2.5) and s["std_ms"] == pytest.approx(np.std([1, 2, 3, 4], ddof=1))
    assert s["p50_ms"] == pytest.approx(2.5) and s["p99_ms"] == pytest.approx(3.97)
    with pytest.raises(ValueError, match="empty"):
        percentiles([])


def test_time_runs_respects_budget_and_cap():
    calls = []
    samples = time_runs(lambda: calls.append(1), budget=10.0, warmup=2, max_runs=7)
    assert len(samples) == 7 and len(calls) == 9  # 2 warm-up calls are not timed
    samples = time_runs(lambda: None, budget=0.0, warmup=0, min_runs=3)
    assert len(samples) == 3


def test_time_runs_cuts_warmup_of_slow_calls():
    """One call that outlasts the budget warms the cell: 1 warm-up + min_runs timed calls, not 3 + 3."""
    import time

    calls = []
    samples = time_runs(lambda: (calls.append(1), time.sleep(0.03)), budget=0.02, warmup=3, min_runs=3)
    assert len(samples) == 3 and len(calls) == 4


def test_synthetic_batch_is_exact_length_without_specials(artifact):
    from edgesent.artifact import load_manifest

    pre = load_preprocessor(str(artifact / "tokenizer.json"), load_manifest(artifact)["preprocessing"])
    batch = synthetic_batch(pre, 3, 16, np.random.default_rng(0))
    assert batch["input_ids"].shape == (3, 16) and batch["attention_mask"].all()
    content = batch["input_ids"][:, len(pre.prefix):16 - len(pre.suffix)]
    specials = set(pre.tokenizer.get_added_tokens_decoder())
    assert not specials & set(content.ravel().tolist())
    assert batch["input_ids"][0, 0] == pre.prefix[0] and batch["input_ids"][0, -1] == pre.suffix[-1]
    texts = text_batch(pre, ["a", " ".join(["boring"] * 40)], 2, 8)
    assert texts["input_ids"].shape == (2, 8)
    assert texts["attention_mask"][1].all() and not texts["attention_mask"][0].all()  # long one truncated, short padded


def test_outputs_hold_the_promised_fields(bench_out):
    results = json.loads((bench_out / "results.json").read_text())
    assert {"machine", "config", "variants", "labels"} <= set(results)
    assert {"cpu", "isa", "logical_cores", "versions", "date", "gpu"} <= set(results["machine"])
    assert "avx2" in results["machine"]["isa"] and "onnxruntime" in results["machine"]["versions"]
    v = {x["name"]: x for x in results["variants"]}
    assert {"torch-fp32", "ort-fp32", "ort-int8", "pipeline-fp32", "tfidf-logreg"} <= set(v)
    may_skip = {"openvino-int8", "openvino-bf16", "torch-bf16"}  # no IR here; bf16 only where the CPU has it
    assert all(x["status"] == "ok" or (x["name"] in may_skip and x["status"] == "skipped") for x in v.values()), {
        k: x.get("reason") for k, x in v.items()}
    assert v["openvino-int8"]["status"] == "skipped"  # this artifact has no OpenVINO IR (export --openvino)
    for name in ("torch-fp32", "ort-fp32", "ort-int8"):
        cells = v[name]["cells"]
        assert sorted((c["batch_size"], c["seq_len"]) for c in cells) == [(1, 8), (1, 16), (2, 8), (2, 16)]
        for c in cells:
            assert c["status"] == "ok" and c["n"] == len(c["samples_ms"]) >= 3
            assert 0 < c["p50_ms"] <= c["p90_ms"] <= c["p99_ms"] <= max(c["samples_ms"]) + 1e-9
        assert v[name]["load_s"] > 0 and v[name]["peak_rss_mb"] > v[name]["rss_before_load_mb"] > 10
        assert v[name]["throughput"][0]["n_texts"] == 60 and v[name]["throughput"][0]["texts_per_s"] > 0
    assert not v["ort-int8"]["torch_imported"] and v["torch-fp32"]["torch_imported"]  # one process per variant
    assert v["ort-int8"]["file_bytes"] < v["ort-fp32"]["file_bytes"]
    # the reference agrees with itself; PyTorch and ONNX fp32 compute the same function
    assert v["ort-fp32"]["agreement"] == 1.0 and v["torch-fp32"]["agreement"] >= 0.95
    assert v["pipeline-fp32"]["agreement"] >= 0.95 and not v["pipeline-fp32"]["cells"]
    assert v["torch-fp32"]["accuracy"] == pytest.approx(v["ort-fp32"]["accuracy"], abs=0.05)
    assert v["tfidf-logreg"]["accuracy"] >= 0.9  # the synthetic data is separable by its words
    assert results["config"]["agreement_reference"] == "ort-fp32"


def test_csv_report_and_plots(bench_out):
    import matplotlib.image as mpimg

    with open(bench_out / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == CSV_COLUMNS
    latency = [r for r in rows if r["measure"] == "latency" and r["variant"] == "ort-int8"]
    assert len(latency) == 4 and all(float(r["p50_ms"]) > 0 for r in latency)
    assert {r["variant"] for r in rows if r["measure"] == "throughput"} >= {"ort-int8", "pipeline-fp32", "tfidf-logreg"}
    report = (bench_out / "report.md").read_text()
    for heading in ("## Machine", "## CPU", "### Variants", "### Latency (ms)", "### Throughput"):
        assert heading in report
    assert "| variant | status | file MB |" in report and "| ort-int8 | ok |" in report
    for png in ("latency.png", "pareto.png"):
        image = mpimg.imread(bench_out / png)
        assert image.ndim == 3 and image.shape[0] > 100 and image.shape[1] > 100
    assert not list(bench_out.parent.glob(".*partial*"))


def test_gpu_variants_skip_cleanly_without_cuda(artifact, tmp_path, monkeypatch):
    if plan.cuda_available():
        pytest.skip("CUDA is available here")
    target = resolve_target(artifact)
    cuda = plan_variants(target, "cuda", has_train=False)
    assert {v.name for v in cuda} >= {"torch-fp16-cuda", "torch-bnb-nf4-cuda", "ort-fp32-cuda", "ort-fp16-cuda"}
    assert all(v.skip and v.skip.startswith("CUDA not available") for v in cuda)
    # --device all: the CPU variants are measured, every CUDA one is a skipped row with its reason
    out = bench(artifact, device="all", out=tmp_path / "gpu", show=False, isolate=False, **SMALL_GRID)
    rows = [r for r in csv.DictReader(open(out / "results.csv", newline="")) if r["device"] == "cuda"]
    assert len(rows) == len(cuda) and all(r["status"] == "skipped" and r["reason"] for r in rows)
    assert "### Skipped or failed" in (out / "report.md").read_text().split("## CUDA")[1]
    # with CUDA but a CPU-only onnxruntime, the ORT rows say so and the PyTorch rows are planned
    monkeypatch.setattr(plan, "cuda_available", lambda: True)
    reasons = {v.name: v.skip for v in plan_variants(target, "cuda", has_train=False)}
    assert reasons["ort-fp32-cuda"] == "onnxruntime-gpu not installed"
    assert reasons["torch-fp16-cuda"] is None
    assert reasons["ort-fp16-cuda"] == "onnxruntime-gpu not installed"


def test_cuda_only_without_cuda_fails_with_one_line(artifact, tmp_path):
    """`--device cuda` where no CUDA variant can run measured nothing: exit 2, one line, no output folder."""
    if plan.cuda_available():
        pytest.skip("CUDA is available here")
    proc = subprocess.run([sys.executable, "-m", "edgesent.cli", "bench", str(artifact), "--device", "cuda",
                           "--out", str(tmp_path / "o")], capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("error: nothing measured: every cuda variant was skipped or failed (torch-fp32-cuda: "
                                   "skipped: CUDA not available (torch.cuda.is_available() is False))")
    assert not (tmp_path / "o").exists()


def test_every_cell_failing_is_an_error(artifact, tmp_path, monkeypatch):
    """seq_len beyond the model's positions is refused before measuring (one line naming the limit); past that
    check, every cell failing is one error line with the first cell's reason."""
    with pytest.raises(EdgesentError, match=r"--seq-lens 600 exceeds the 518 positions of the model"):
        bench(artifact, seq_lens=[32, 600], batch_sizes=[1], threads=[1], budget=0.05, out=tmp_path / "o", show=False,
              isolate=False)
    import edgesent.bench as B

    monkeypatch.setattr(B, "check_seq_lens", lambda *a: None)
    with pytest.raises(EdgesentError) as caught:
        bench(artifact, seq_lens=[600], batch_sizes=[1], threads=[1], budget=0.05, out=tmp_path / "o", show=False,
              isolate=False)
    assert str(caught.value).startswith("every latency cell failed (torch-fp32, batch 1 x seq_len 600, 1 thread(s): ")
    assert "(520)" in str(caught.value)  # the reason names the model's 520 positions
    assert not (tmp_path / "o").exists()


def test_artifact_without_its_run_skips_pytorch(artifact, tmp_path):
    copy = shutil.copytree(artifact, tmp_path / "moved")
    manifest = json.loads((copy / "edgesent.json").read_text())
    manifest["source"]["run"] = str(tmp_path / "gone")
    (copy / "edgesent.json").write_text(json.dumps(manifest))
    target = resolve_target(copy)
    variants = {v.name: v.skip for v in plan_variants(target, "cpu", has_train=False, has_data=False)}
    assert variants["torch-fp32"] == f"no PyTorch checkpoint: the artifact's training run {tmp_path / 'gone'} is not here"
    assert variants["ort-int8"] is None and variants["tfidf-logreg"].startswith("needs --data with a train split")
    assert variants["pipeline-fp32"].startswith("no PyTorch checkpoint")


def test_run_folder_resolves_to_its_artifact(artifact):
    target = resolve_target(artifact.parent)
    assert target.artifact == artifact and target.run == artifact.parent


@pytest.mark.parametrize("make,message", [
    (lambda p: p / "missing", "error: bench target not found: {p}/missing"),
    (lambda p: p, "error: {p} is neither an edgesent artifact (no edgesent.json) nor a run folder (no recipe.yaml)"),
])
def test_cli_bad_target_is_one_line(tmp_path, make, message):
    target = make(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "edgesent.cli", "bench", str(target), "--out", str(tmp_path / "o")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.strip() == message.format(p=tmp_path)


def test_bad_options_are_one_line(artifact, tmp_path):
    with pytest.raises(EdgesentError, match=r"^--device: Input should be 'cpu', 'cuda' or 'all' \(got 'tpu'\)$"):
        bench(artifact, device="tpu", out=tmp_path / "x", show=False)
    with pytest.raises(EdgesentError, match="^--seq-lens: must be positive whole numbers, got 0,8$"):
        bench(artifact, seq_lens=[0, 8], out=tmp_path / "x", show=False)
    with pytest.raises(EdgesentError, match="^unknown option --bogus$"):
        bench(artifact, bogus=1, out=tmp_path / "x", show=False)


def test_threads_are_capped_at_the_usable_cores(capsys):
    from edgesent.bench import usable_threads
    from edgesent.machine import usable_cores

    cores = usable_cores()
    assert usable_threads([1, cores, 10_000, 20_000]) == list(dict.fromkeys([1, cores]))
    assert capsys.readouterr().err.strip().splitlines() == [
        f"note: --threads 20000 capped to {cores}, the CPU cores this process may use"]


def test_onnx_variant_names_come_from_the_manifest_entries():
    """`ort-` + the typed entry's variant: a static INT8 file is named so by its scheme, not by its file name."""
    from edgesent.artifact import Manifest

    files = {name: {"sha256": "0" * 64, "bytes": 1} for name in ("model.int8.onnx", "model.fp16.onnx", "model.onnx")}
    manifest = Manifest(labels=["negative", "positive"], preprocessing={}, files=files, models={
        "model.onnx": {"precision": "fp32"}, "model.int8.onnx": {"precision": "int8", "scheme": "static"},
        "model.fp16.onnx": {"precision": "fp16"}})
    variants = plan.onnx_variants(manifest)
    assert [(v.name, v.precision, v.file) for v in variants] == [
        ("ort-fp32", "fp32", "model.onnx"), ("ort-int8-static", "int8", "model.int8.onnx"),
        ("ort-fp16", "fp16", "model.fp16.onnx")]
