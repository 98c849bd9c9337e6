"""`edgesent bench`: latency, throughput, size, memory and accuracy of every variant of a model.

What is measured, and how (one module per step: `plan` -> `worker` -> `runners`, with `timing` and
`inputs` -> `report`; `bench()` below drives them):

- Variants (`plan`). CPU: PyTorch fp32 eager (the run's checkpoint), PyTorch bf16 and bitsandbytes
  LLM.int8 / nf4 (the CUDA rows' code on the CPU), every ONNX file of the artifact on onnxruntime's
  CPU provider (fp32, dynamic INT8, static INT8 when present), OpenVINO on the fp32 file (f32 and
  bf16 precision hints) and on the NNCF INT8 IR of `export --openvino`, a transformers
  `pipeline` on the fp32 PyTorch model (throughput only) and, with `--data`, a TF-IDF + logistic
  regression baseline (`baseline`). CUDA: PyTorch fp32/fp16/bf16, bitsandbytes LLM.int8 and nf4,
  onnxruntime's CUDA provider fp32/fp16. A variant that cannot run here becomes a row with the
  reason ("skipped: onnxruntime-gpu not installed"), never a crash.
  With `--llm-endpoint`, one more row on device "api": a chat model behind an OpenAI-compatible
  endpoint labels the `--data` texts (`llm`: the seed's protocol, throughput and accuracy only).
- Isolation (`worker`). Each variant is measured in a fresh `python -m edgesent.bench.worker`
  process: the load time is a real cold start, the peak RSS belongs to that variant alone, and an
  onnxruntime variant never has torch in its address space.
- Latency grid (batch x seq_len x threads; `inputs`, `timing`). Inputs have exactly `seq_len`
  tokens: random non-special token ids with a full attention mask, or with `--data` real texts
  truncated/padded to that length. Each cell runs a few warm-up calls, then repeats until `budget`
  seconds (or `MAX_RUNS`) and keeps every sample; the summary holds mean, std, p50, p90, p99 and n.
- Throughput (texts/s) over the `--data` texts, scored like the runtime serves them (length buckets,
  and windows when the artifact's manifest says `long_text: windows`), accuracy / macro F1 / agreement
  with onnxruntime fp32 (the reference) on the same texts, accuracy per length bucket (<= 256,
  257-512, 513-1024, > 1024 tokens) and the latency per review (one review at a time, p50 overall and
  per length bucket, on up to 200 reviews spread over the data): long reviews cost more.
- Machine facts (`edgesent.machine`): CPU model, ISA flags that matter for INT8, cores, library
  versions, GPU name, date.

Outputs (`report`; written to a temporary folder, moved into place when complete): results.json,
results.csv (one row per variant x batch x seq_len x threads), report.md, latency.png and, with
accuracy figures, pareto.png. A run that measured nothing it was asked to (every variant skipped
or failed, or every latency cell failed) writes nothing and fails with one line.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict
from datetime import datetime
from pathlib import Path
from typing import Any

from edgesent.bench.baseline import bench_data
from edgesent.bench.inputs import (
    LENGTH_BUCKETS,
    labels_for,
    length_bucket,
    load_preprocessor,
    preprocessing_for,
    token_lengths,
)
from edgesent.bench.plan import check_seq_lens, file_bytes, plan_variants, resolve_target
from edgesent.bench.report import print_summary, progress_bar, write_outputs
from edgesent.bench.timing import MAX_RUNS, WARMUP_RUNS
from edgesent.errors import EdgesentError, atomic_dir, check_writable
from edgesent.machine import check_threads, machine_facts
from edgesent.options import BenchOptions

__all__ = ["bench"]

REFERENCES = ("ort-fp32", "torch-fp32", "ort-fp32-cuda", "torch-fp32-cuda")  # agreement is measured against the first


def bench(target: str | os.PathLike | None = None, *, isolate: bool = True, show: bool = True, **options) -> Path:
    """Benchmark every variant of `target`; returns the output folder (results.json, .csv, report.md, PNGs).

    `options` are `edgesent.options.BenchOptions` fields (device, batch_sizes, seq_lens, threads, data,
    split, limit, budget, out), validated and defaulted there. `isolate=False` measures in this process.
    """
    # imported here, not at the top: `python -m edgesent.bench.worker` imports this package first, and
    # runpy warns when the package has already imported the module it is about to run
    from edgesent.bench.runners import RUNNERS
    from edgesent.bench.worker import THROUGHPUT_BATCH, WorkerSpec, run_worker
    from edgesent.quiet import quiet_libraries

    quiet_libraries()
    o = BenchOptions.parse(options, target=None if target is None else str(target))
    threads = usable_threads(o.threads)
    tgt = resolve_target(o.target)
    check_seq_lens(tgt, o.seq_lens)
    out = o.out or (tgt.artifact or tgt.run) / f"bench-{datetime.now():%Y%m%d-%H%M%S}"
    if out.exists():  # bench has no --overwrite: say so before measuring, not after
        raise EdgesentError(f"--out {out} already exists; choose another --out (or remove it)")
    check_writable(out.parent)
    labels = labels_for(tgt)
    test, train = bench_data(o.data, o.split, o.limit, labels) if o.data else (None, None)
    variants = plan_variants(tgt, o.device, has_train=train is not None and len(train.texts) > 0,
                             has_data=test is not None, llm=llm_options(o))
    config = {"target": o.target, "artifact": str(tgt.artifact) if tgt.artifact else None,
              "run": str(tgt.run) if tgt.run else None, "device": o.device, "batch_sizes": o.batch_sizes,
              "seq_lens": o.seq_lens, "threads": threads, "data": o.data, "split": o.split, "limit": o.limit,
              "n_texts": len(test.texts) if test else 0, "budget_s": o.budget, "warmup_runs": WARMUP_RUNS,
              "max_runs": MAX_RUNS, "throughput_batch": THROUGHPUT_BATCH, "isolated": isolate,
              "inputs": "real texts truncated/padded to seq_len" if o.data else "random non-special token ids, full mask"}
    results: dict[str, Any] = {"machine": machine_facts(), "config": config, "labels": labels, "variants": []}
    with tempfile.TemporaryDirectory(prefix="edgesent-bench-") as tmp:
        workdir = Path(tmp)
        tokenizer_file, preprocessing = preprocessing_for(tgt, workdir)
        lengths = token_lengths(load_preprocessor(tokenizer_file, preprocessing), list(test.texts)) if test else None
        data_file = write_texts(workdir, test, train)
        grid = {"batch_sizes": o.batch_sizes, "seq_lens": o.seq_lens, "threads": threads, "budget": o.budget}
        with progress_bar(show) as bar:
            cells = len(o.batch_sizes) * len(o.seq_lens) * len(threads)
            task = bar.add_task("bench", total=sum(cells for v in variants
                                                   if not v.skip and RUNNERS[v.engine].latency == "tokens"))
            for v in variants:
                entry = {**asdict(v), "file_bytes": file_bytes(tgt, v)}
                if v.skip:
                    entry.update(status="skipped", reason=v.skip, cells=[], throughput=[])
                else:
                    bar.update(task, description=f"{v.name:<22}")
                    spec = WorkerSpec(name=v.name, engine=v.engine, device=v.device, precision=v.precision,
                                      file=v.file, artifact=_str(tgt.artifact), run=_str(tgt.run),
                                      tokenizer_file=tokenizer_file, preprocessing=preprocessing, labels=labels,
                                      data_file=_str(data_file), options=v.options, **grid)
                    entry.update({"cells": [], "throughput": [],
                                  **run_worker(spec, workdir, isolate, progress=lambda: bar.advance(task))})
                results["variants"].append(entry)
    score(results, test, lengths)
    check_measured(results)
    with atomic_dir(out) as tmp_out:
        write_outputs(tmp_out, results)
    if show:
        print_summary(results, out)
    return out


def llm_options(o: BenchOptions) -> dict | None:
    """The LLM-API baseline's settings (the key's variable name, never the key), or None without --llm-endpoint."""
    from dataclasses import asdict

    from edgesent.bench.llm import settings_from

    settings = settings_from(o.model_dump())
    return None if settings is None else asdict(settings)


def usable_threads(threads: list[int]) -> list[int]:
    """The thread counts capped at the usable cores (one note line when capped), duplicates dropped."""
    cap = check_threads(max(threads))
    return list(dict.fromkeys(min(t, cap) for t in threads))


def _str(path: Path | None) -> str | None:
    return None if path is None else str(path)


def write_texts(workdir: Path, test, train) -> Path | None:
    """The benchmarked texts (and the baseline's train split) as JSON for the workers, or None."""
    if test is None:
        return None
    payload = {"texts": list(test.texts), "labels": [int(x) for x in test.labels]}
    if train is not None:
        payload.update(train_texts=list(train.texts), train_labels=[int(x) for x in train.labels])
    path = workdir / "data.json"
    path.write_text(json.dumps(payload))
    return path


def score(results: dict, test, lengths: list[int] | None = None) -> None:
    """Accuracy, macro F1 and agreement with the reference (onnxruntime fp32, else PyTorch fp32); with the
    texts' token `lengths`, accuracy per length bucket (<= 256, 257-512, 513-1024, > 1024 tokens)."""
    preds = {v["name"]: v.pop("predictions") for v in results["variants"] if v.get("predictions") is not None}
    if test is None or not preds:
        return
    from sklearn.metrics import f1_score

    from edgesent.metrics import accuracy

    truth = [int(x) for x in test.labels]
    ref_name = next((n for n in REFERENCES if n in preds), None)
    results["config"]["agreement_reference"] = ref_name
    for v in results["variants"]:
        if v["name"] not in preds:
            continue
        mine = preds[v["name"]]  # -1: the engine gave no readable answer (LLM); counted wrong in accuracy
        v["accuracy"] = accuracy(mine, truth)
        v["f1"] = float(f1_score(truth, mine, average="macro",
                                  labels=sorted(set(truth) | {p for p in mine if p >= 0})))
        if v["engine"] == "llm" or min(mine, default=0) < 0:
            parsed = [i for i, p in enumerate(mine) if p >= 0]
            v["unparsed"] = len(mine) - len(parsed)
            v["accuracy_parsed"] = accuracy([mine[i] for i in parsed], [truth[i] for i in parsed]) if parsed else None
        if ref_name:
            v["agreement"] = accuracy(mine, preds[ref_name])
        if lengths is not None:
            v["accuracy_by_length"] = by_length(mine, truth, lengths)


def by_length(pred: list[int], truth: list[int], lengths: list[int]) -> dict[str, dict]:
    """{bucket: {n, accuracy}} for the length buckets that hold texts."""
    out = {}
    for _, name in LENGTH_BUCKETS:
        idx = [i for i, n in enumerate(lengths) if length_bucket(n) == name]
        if idx:
            out[name] = {"n": len(idx), "accuracy": sum(pred[i] == truth[i] for i in idx) / len(idx)}
    return out


def check_measured(results: dict) -> None:
    """A run that measured nothing it was asked to measure is one error line, not a report of blanks."""
    variants = results["variants"]
    ok = [v for v in variants if v["status"] == "ok"]
    if not ok:
        first = variants[0]
        device = results["config"]["device"]
        raise EdgesentError(f"nothing measured: every {'' if device == 'all' else device + ' '}variant was skipped or "
                            f"failed ({first['name']}: {first['status']}: {first['reason']})")
    cells = [(v["name"], c) for v in ok for c in v["cells"]]
    if cells and not any(c["status"] == "ok" for _, c in cells):
        name, c = cells[0]
        raise EdgesentError(f"every latency cell failed ({name}, batch {c['batch_size']} x seq_len {c['seq_len']}, "
                            f"{c['threads']} thread(s): {c['reason']})")

