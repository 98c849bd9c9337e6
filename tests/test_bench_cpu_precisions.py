"""PyTorch bf16 and bitsandbytes LLM.int8 / nf4 on the CPU, through the bench worker and the CUDA rows' own code.

The runners take their device from `runners.torch_device` (the variant's), so these CPU tests run
`quantize_bnb` exactly as the `-cuda` rows do, only with device "cpu". Each precision's logits are
checked against the same run's fp32 logits on the same batch, within a stated tolerance.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from test_bench import make_run

from edgesent.bench import plan
from edgesent.bench.inputs import load_preprocessor, synthetic_batch
from edgesent.bench.runners import RUNNERS, torch_device
from edgesent.bench.worker import WorkerSpec, run_worker
from edgesent.machine import native_bf16

# Largest accepted |logit - fp32 logit| on the tiny random model (logits of order 0.1-1). bf16 keeps 8
# mantissa bits; LLM.int8 rounds weights to 127 levels per row; nf4 to 16 levels per 64-weight block.
TOLERANCE = {"bf16": 0.05, "llm-int8": 0.05, "nf4": 0.25}


@pytest.fixture(scope="module")
def run_dir(sentiment_data, tmp_path_factory) -> Path:
    """A tiny BERT with hidden size 64: bitsandbytes' CPU nf4 kernel packs 64-weight blocks along each
    Linear's input, so conftest's hidden-32 models cannot take nf4 on CPU (every real model can)."""
    import torch
    from conftest import make_tokenizer, tiny_config
    from transformers import AutoModelForSequenceClassification

    root = tmp_path_factory.mktemp("cpu-prec")
    tok = make_tokenizer("bert", root / "model")
    config = tiny_config("bert", len(tok), tok.pad_token_id)
    config.hidden_size, config.intermediate_size = 64, 128
    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(root / "model", safe_serialization=True)
    return make_run(root / "model", sentiment_data, root / "run")


def spec_for(run: Path, tmp: Path, precision: str, name: str) -> WorkerSpec:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(run / "tokenizer")
    tok_file = tmp / "tokenizer.json"
    tok.backend_tokenizer.save(str(tok_file))
    pre = {"max_length": 32, "truncation": "head", "head_share": 0.25, "lowercase": False, "padding_side": "right",
           "pad_token": tok.pad_token, "pad_token_id": tok.pad_token_id}
    return WorkerSpec(name=name, engine="torch", device="cpu", precision=precision, file=None, artifact=None,
                      run=str(run), tokenizer_file=str(tok_file), preprocessing=pre, labels=["negative", "positive"],
                      batch_sizes=[1, 4], seq_lens=[16], threads=[1], budget=0.05)


def logits_of(spec: WorkerSpec) -> tuple[np.ndarray, object]:
    runner = RUNNERS["torch"](spec)
    runner.load(1)
    pre = load_preprocessor(spec.tokenizer_file, spec.preprocessing)
    batch = synthetic_batch(pre, 4, 16, np.random.default_rng(0))
    batch["attention_mask"][1, 10:] = 0  # one padded row
    return runner.run(batch), runner


@pytest.mark.parametrize("precision", ["bf16", "llm-int8", "nf4"])
def test_cpu_precision_logits_close_to_fp32(precision, run_dir, tmp_path):
    if precision == "bf16" and not native_bf16():
        pytest.skip("this CPU has no native bf16")
    if precision != "bf16":
        pytest.importorskip("bitsandbytes")
    ref, _ = logits_of(spec_for(run_dir, tmp_path, "fp32", "torch-fp32"))
    got, runner = logits_of(spec_for(run_dir, tmp_path, precision, f"torch-{precision}"))
    assert got.dtype == np.float32 and got.shape == ref.shape
    diff = float(np.abs(got - ref).max())
    assert diff <= TOLERANCE[precision], diff
    assert diff > 0  # it really ran at a lower precision
    assert torch_device(runner.spec) == "cpu"
    import torch

    linears = [m for m in runner.model.modules() if type(m).__module__.startswith("bitsandbytes")]
    if precision == "bf16":
        assert not linears and next(runner.model.parameters()).dtype == torch.bfloat16
    else:  # every backbone Linear swapped by quantize_bnb, its weights quantized on the CPU
        kinds = {type(m).__name__ for m in linears}
        assert kinds == {"Linear8bitLt" if precision == "llm-int8" else "Linear4bit"}
        assert {m.weight.dtype for m in linears} == {torch.int8 if precision == "llm-int8" else torch.uint8}
        assert all(m.weight.device.type == "cpu" for m in linears)


@pytest.mark.parametrize("name,precision", plan.CPU_TORCH_VARIANTS)
def test_bench_worker_measures_cpu_precisions(name, precision, run_dir, tmp_path):
    if precision == "bf16" and not native_bf16():
        pytest.skip("this CPU has no native bf16")
    result = run_worker(spec_for(run_dir, tmp_path, precision, name), tmp_path, isolate=True)
    assert result["status"] == "ok", result.get("reason")
    assert [c["status"] for c in result["cells"]] == ["ok", "ok"]
    assert all(c["p50_ms"] > 0 for c in result["cells"]) and result["torch_imported"]


def test_plan_lists_cpu_precisions_with_skip_reasons(run_dir, monkeypatch):
    target = plan.Target(artifact=None, run=run_dir, manifest=None)
    rows = {v.name: v for v in plan.plan_variants(target, "cpu", has_train=False)}
    for name, precision in plan.CPU_TORCH_VARIANTS:
        assert rows[name].engine == "torch" and rows[name].precision == precision and rows[name].device == "cpu"
    assert rows["openvino-int8"].skip  # no artifact here
    monkeypatch.setattr("edgesent.machine.native_bf16", lambda: False)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None if name == "bitsandbytes" else object())
    rows = {v.name: v for v in plan.plan_variants(target, "cpu", has_train=False)}
    assert "no native bf16" in rows["torch-bf16"].skip
    assert rows["torch-bnb-int8"].skip == rows["torch-bnb-nf4"].skip == "bitsandbytes not installed"
    no_run = plan.plan_variants(plan.Target(None, None, None, "no run"), "cpu", has_train=False)
    assert all(v.skip for v in no_run if v.engine == "torch")


def test_gpu_check_dry_run_prints_valid_commands(tmp_path):
    """`bash bench/gpu_check.sh --dry-run` prints train -> export -> bench -> copy, and every option it would
    pass is one the CLI accepts (recipe overrides validated against the recipe schema, options by typer)."""
    import shlex
    import subprocess

    import typer
    from conftest import ROOT

    from edgesent import options as O
    from edgesent.cli import app
    from edgesent.config import load_recipe

    proc = subprocess.run(["bash", "bench/gpu_check.sh", "--dry-run"], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={"PATH": "/usr/bin:/bin", "DEVICE": "NVIDIA-H100", "OUT": str(tmp_path)})
    assert proc.returncode == 0, proc.stderr
    commands = [shlex.split(line[2:]) for line in proc.stdout.splitlines() if line.startswith("+ ")]
    assert [c[3] if c[1:3] == ["-m", "edgesent"] else c[0] for c in commands] == ["train", "export", "bench", "cp"]
    assert commands[-1][-1] == "bench/results/gpu-NVIDIA-H100.json"
    group = typer.main.get_command(app)
    models = {"train": O.TrainOptions, "export": O.ExportOptions, "bench": O.BenchOptions}
    parsed = {}
    for cmd in commands[:3]:
        name, args = cmd[3], cmd[4:]
        ctx = group.commands[name].make_context(name, list(args))  # unknown options fail here
        parsed[name] = models[name].parse(ctx.params)
    overrides = parsed["train"].set
    recipe = load_recipe(ROOT / "recipes" / "minilm_full.yaml", overrides)
    assert recipe.training.precision == "bf16" and recipe.data.max_train_samples == 4000
    assert parsed["export"].fp16 and parsed["export"].int8
    assert parsed["bench"].device == "cuda" and parsed["bench"].out == tmp_path / "bench"
    bad = subprocess.run(["bash", "bench/gpu_check.sh", "--wet"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2 and "unknown argument" in bad.stderr
