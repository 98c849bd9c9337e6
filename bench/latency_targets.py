"""Reproduce the latency targets of issue 5: INT8 vs PyTorch eager vs ONNX Runtime fp32 on one CPU thread.

For each architecture (distilroberta-base and pythia-14m, random weights built from the `*-arch`
folders in ../shared/models), this script

1. builds a run folder (recipe.yaml, model/, tokenizer/) with random weights,
2. exports it with `edgesent.export.export(..., int8=True)` (fp32 ONNX + dynamic INT8),
3. times PyTorch fp32 eager, ORT fp32 and ORT INT8 at batch 1, seq_len 128, 1 thread with
   `edgesent.bench.bench` (each variant in its own process, random non-special token ids),
4. prints the ratios against the targets (INT8 >= 4.5x PyTorch eager, >= 3.0x ORT fp32) and the
   fraction of the GEMM floor reached (the model's multiply-adds at --gops-per-thread),
5. with --profile, the share of time per ONNX op type (ORT's profiler) for fp32 and INT8,
6. with --fused, the INT8 latency when onnxruntime.transformers.optimizer fusions run before
   quantization (a candidate improvement for export).

Usage:  .venv/bin/python -m bench.latency_targets [--models distilroberta,pythia] [--budget 10]
        [--profile] [--fused] [--work /tmp/edgesent-targets]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

from edgesent.archs import arch_for, blocks
from edgesent.artifact import FILES, is_artifact
from edgesent.bench.report import save_numbers
from edgesent.errors import run_main

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESENT_SHARED", ROOT.parent / "shared"))
MODELS = {
    "distilroberta": {"path": "models/distilroberta-base-arch", "pad_token": None, "ref_ms": (163, 115, 38)},
    "pythia": {"path": "models/pythia-14m-arch", "pad_token": "eos", "ref_ms": (None, None, None)},
}
SEQ = 128
TARGET_VS_TORCH, TARGET_VS_ORT = 4.5, 3.0


def build_run(name: str, work: Path) -> Path:
    """A run folder with random weights, as `edgesent train` would leave it (no training)."""
    import torch

    from edgesent.config import save_recipe, validate_recipe
    from edgesent.model import build_model, load_tokenizer

    spec = MODELS[name]
    run = work / f"{name}-run"
    if (run / "model" / "model.safetensors").is_file():
        return run
    shutil.rmtree(run, ignore_errors=True)
    recipe = validate_recipe({
        "name": f"{name}-random", "seed": 0, "output_dir": str(work),
        "model": {"name_or_path": str(SHARED / spec["path"]), "random_init": True, "pad_token": spec["pad_token"]},
        "data": {"dataset": str(SHARED / "data" / "sst2"), "max_length": SEQ},
    })
    tokenizer = load_tokenizer(recipe.model.name_or_path, recipe.model.pad_token)
    model = build_model(recipe, recipe.data.labels, tokenizer)
    model.to(torch.float32).eval()
    run.mkdir(parents=True)
    save_recipe(recipe, run / "recipe.yaml")
    model.save_pretrained(run / "model", safe_serialization=True)
    tokenizer.save_pretrained(run / "tokenizer")
    return run


def export_run(run: Path) -> Path:
    from edgesent.export import export

    artifact = run / "artifact"
    if not is_artifact(artifact):
        export(run, artifact, int8=True, eval_limit=200)
    return artifact


def gemm_gop(run: Path, seq: int = SEQ) -> float:
    """Multiply-adds x 2 of one sequence: every Linear of the transformer blocks, plus attention's QK^T and AV."""
    import torch.nn as nn

    from edgesent.model import load_model_dir

    model = load_model_dir(run / "model")
    linear = sum(m.in_features * m.out_features for m in blocks(model).modules() if isinstance(m, nn.Linear))
    cfg = model.config
    attention = 2 * seq * seq * cfg.hidden_size * arch_for(cfg).num_layers(cfg)  # QK^T and AV
    return 2 * (linear * seq + attention) / 1e9


def time_variants(artifact: Path, budget: float, out: Path) -> dict[str, float]:
    from edgesent.bench import bench

    folder = bench(artifact, batch_sizes=[1], seq_lens=[SEQ], threads=[1], budget=budget, out=out, show=False)
    results = json.loads((folder / "results.json").read_text())
    p50 = {}
    for v in results["variants"]:
        if v.get("status") == "ok" and v["cells"] and v["cells"][0].get("status") == "ok":
            p50[v["name"]] = v["cells"][0]["p50_ms"]
    return p50


def random_batch(seq: int = SEQ) -> dict:
    """One sequence of `seq` random token ids (10..999) with a full mask."""
    import numpy as np

    ids = np.random.default_rng(0).integers(10, 1000, (1, seq)).astype(np.int64)
    return {"input_ids": ids, "attention_mask": np.ones((1, seq), dtype=np.int64)}


def profile(onnx_file: Path, runs: int = 30) -> dict[str, float]:
    """Share of kernel time per op type, from onnxruntime's profiler (1 thread, batch 1, seq 128)."""
    import numpy as np
    import onnxruntime as ort

    from edgesent.session import feed_for

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
    opts.enable_profiling = True  # a session option edgesent.session does not set: this session is built here
    opts.profile_file_prefix = str(onnx_file.parent / f"profile-{onnx_file.stem}")
    sess = ort.InferenceSession(str(onnx_file), opts, providers=["CPUExecutionProvider"])
    feed = feed_for(random_batch(), {i.name: np.int64 for i in sess.get_inputs()})
    for _ in range(runs):
        sess.run(None, feed)
    trace = json.loads(Path(sess.end_profiling()).read_text())
    total: dict[str, float] = defaultdict(float)
    for ev in trace:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            total[ev["args"].get("op_name", "?")] += ev["dur"]
    whole = sum(total.values()) or 1.0
    return dict(sorted(((k, v / whole) for k, v in total.items()), key=lambda kv: -kv[1]))


def fused_int8(artifact: Path, run: Path, budget: float) -> tuple[float, float] | None:
    """(fp32 fused, int8 of fused) p50 ms: onnxruntime.transformers.optimizer before dynamic quantization."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers.optimizer import optimize_model

    from edgesent.bench.timing import summarize, time_runs
    from edgesent.model import load_model_dir
    from edgesent.session import OnnxSession

    cfg = load_model_dir(run / "model").config
    arch = arch_for(cfg)
    model_type = "bert" if arch.pooling == "first" else arch.family  # the optimizer's name for BERT-like encoders
    fused = artifact.parent / f"{run.name}-fused.onnx"
    fused_q = artifact.parent / f"{run.name}-fused.int8.onnx"
    try:
        opt = optimize_model(str(artifact / FILES["fp32"]), model_type=model_type, num_heads=cfg.num_attention_heads,
                             hidden_size=cfg.hidden_size, opt_level=1)
    except Exception as exc:  # the fusion script does not know every architecture
        print(f"  fusions unavailable for {cfg.model_type}: {type(exc).__name__}: {exc}")
        return None
    print(f"  fused ops: {opt.get_fused_operator_statistics()}")
    opt.save_model_to_file(str(fused))
    # fused contrib ops (BiasGelu, SkipLayerNormalization) defeat shape inference: say the tensors are float
    quantize_dynamic(fused, fused_q, weight_type=QuantType.QInt8,
                     extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
    out = []
    for path in (fused, fused_q):
        sess, batch = OnnxSession(path, threads=1), random_batch()
        out.append(summarize(time_runs(lambda s=sess, b=batch: s.logits(b), budget))["p50_ms"])
    return out[0], out[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="distilroberta,pythia")
    parser.add_argument("--budget", type=float, default=10.0, help="seconds of timed runs per variant")
    parser.add_argument("--gops-per-thread", type=float, default=313.0, help="INT8 GEMM peak of one core, GOP/s")
    parser.add_argument("--work", type=Path, default=Path("/tmp/edgesent-targets"))
    parser.add_argument("--profile", action="store_true", help="print op-type time shares (ORT profiler)")
    parser.add_argument("--fused", action="store_true", help="also time INT8 after ORT transformer fusions")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    args.work.mkdir(parents=True, exist_ok=True)
    summary = {}
    for name in args.models.split(","):
        print(f"== {name}: build, export, time (batch 1, seq {SEQ}, 1 thread)")
        started = time.perf_counter()
        run = build_run(name, args.work)
        artifact = export_run(run)
        print(f"  built + exported in {time.perf_counter() - started:.0f} s: {artifact}")
        p50 = time_variants(artifact, args.budget, args.work / f"{name}-bench-{time.strftime('%Y%m%d-%H%M%S')}")
        torch_ms, fp32_ms, int8_ms = (p50.get(k) for k in ("torch-fp32", "ort-fp32", "ort-int8"))
        gop = gemm_gop(run)
        floor_ms = gop / args.gops_per_thread * 1000
        row = {"torch_fp32_ms": torch_ms, "ort_fp32_ms": fp32_ms, "ort_int8_ms": int8_ms, "gop": gop,
               "floor_ms": floor_ms}
        ref = MODELS[name]["ref_ms"]
        for label, ms, r in (("PyTorch fp32 eager", torch_ms, ref[0]), ("ORT fp32", fp32_ms, ref[1]),
                             ("ORT INT8", int8_ms, ref[2])):
            print(f"  {label:<20} p50 {ms:8.2f} ms" + (f"   (measured before: ~{r} ms)" if r else ""))
        if torch_ms and fp32_ms and int8_ms:
            row.update(int8_vs_torch=torch_ms / int8_ms, int8_vs_ort_fp32=fp32_ms / int8_ms,
                       floor_fraction=floor_ms / int8_ms)
            ok1, ok2 = row["int8_vs_torch"] >= TARGET_VS_TORCH, row["int8_vs_ort_fp32"] >= TARGET_VS_ORT
            print(f"  INT8 speed-up vs PyTorch eager: {row['int8_vs_torch']:.2f}x (target >= {TARGET_VS_TORCH}x: "
                  f"{'met' if ok1 else 'MISSED'})")
            print(f"  INT8 speed-up vs ORT fp32:      {row['int8_vs_ort_fp32']:.2f}x (target >= {TARGET_VS_ORT}x: "
                  f"{'met' if ok2 else 'MISSED'})")
            print(f"  GEMM floor: {gop:.2f} GOP at {args.gops_per_thread:g} GOP/s = {floor_ms:.1f} ms; "
                  f"INT8 reaches {row['floor_fraction']:.0%} of it")
        if args.profile:
            for file in (FILES["fp32"], FILES["int8"]):
                shares = profile(artifact / file)
                top = ", ".join(f"{k} {v:.0%}" for k, v in list(shares.items())[:8])
                print(f"  profile {file}: {top}")
                row[f"profile_{file}"] = shares
        if args.fused:
            fused = fused_int8(artifact, run, args.budget)
            if fused:
                row.update(fused_fp32_ms=fused[0], fused_int8_ms=fused[1])
                print(f"  with ORT fusions before quantization: fp32 {fused[0]:.2f} ms, INT8 {fused[1]:.2f} ms "
                      f"(export's INT8: {int8_ms:.2f} ms)")
        summary[name] = row
    save_numbers(args.work / "latency_targets.json", summary)
    return 0


if __name__ == "__main__":
    run_main(main)
