"""Every CPU engine x precision side by side in ONE process, interleaved rounds: latency, texts/s, size,
cold start, RSS, and (for a trained artifact) accuracy, agreement with fp32 and batch independence.

    python -m bench.engines [--artifact exports/<run>/artifact] [--models pythia,distilroberta]
        [--cells 1x128x1,8x256x2] [--rounds 5] [--round-s 0.6] [--throughput-texts 256] [--throughput-threads 2]
        [--accuracy] [--independence 2000] [--data ../shared/data/imdb] [--work /tmp/edgesent-engines]
        [--out bench/results/engines.json]

Engines (each where its file / CPU allows it; rows say why not):
  ort-fp32, ort-int8            onnxruntime on model.onnx / model.int8.onnx (the serving defaults)
  openvino-fp32, openvino-bf16  OpenVINO on the same model.onnx, precision hint f32 / bf16
  openvino-int8, -int8-bf16     OpenVINO on the NNCF static INT8 IR of `export --openvino`, hint f32 / bf16
  ort-int8-fixed                ort-int8 with every dynamic axis fixed to the cell's shape (a session per
                                length bucket), so position / mask subgraphs fold to constants
  ort-int8-slim                 onnxslim on model.onnx, then the same dynamic per-channel INT8 as export

Method: sessions for all engines live in this one process; each round visits the engines in a
rotated order and times each for `--round-s` seconds (at least 3 calls, after one warm-up call in
the first round), so drifts of a shared machine hit all engines alike. Latency is the p50 of all
samples of a cell; texts/s is `--throughput-texts` IMDB test reviews scored through
`runtime.Classifier` (its preprocessing and length bucketing, batch 32) with the engine's session,
per round, median. Inputs of a latency cell are real texts truncated/padded to exactly seq_len
tokens (`bench.inputs.text_batch`). Cold start: `edgesent.runtime.Classifier` + one prediction in
a fresh process (median of 3), with its peak RSS.

`--accuracy` scores the whole test split with ort-fp32 (reference), ort-int8 and openvino-int8 (2
threads, batch 32) once and saves every review's prediction in `--work`; `--independence N` then
scores the first N reviews alone (batch 1) with each INT8 engine and counts reviews whose label
differs from their label in the batched pass. Random-weight architectures (`--models`, built from
../shared/models/*-arch like `bench.arch_latency`) are exported with `export(int8=True,
openvino=True, max_drop=100)`: their heads are untrained, so no accuracy gate can mean anything.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgesent.artifact import FILES, load_manifest, loaded_files
from edgesent.bench.timing import time_runs
from edgesent.errors import run_main
from edgesent.machine import machine_facts, native_bf16

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESENT_SHARED", ROOT.parent / "shared"))


@dataclass(frozen=True)
class Engine:
    name: str
    kind: str  # ort | openvino
    file: str  # artifact file (or a file this script writes into --work)
    hint: str = "f32"
    fixed: bool = False  # one session per cell shape, every axis fixed
    cold_model: str | None = None  # Classifier(model=...) for the cold start; None: not a serving path


ENGINES = (
    Engine("ort-fp32", "ort", FILES["fp32"], cold_model="fp32"),
    Engine("ort-int8", "ort", FILES["int8"], cold_model="int8"),
    Engine("openvino-fp32", "openvino", FILES["fp32"], cold_model="fp32"),
    Engine("openvino-bf16", "openvino", FILES["fp32"], hint="bf16", cold_model="bf16"),
    Engine("openvino-int8", "openvino", FILES["openvino-int8"], cold_model="int8"),
    Engine("openvino-int8-bf16", "openvino", FILES["openvino-int8"], hint="bf16"),
    Engine("ort-int8-fixed", "ort", FILES["int8"], fixed=True),
    Engine("ort-int8-slim", "ort", "model.slim.int8.onnx"),
)
INT8 = ("ort-int8", "openvino-int8", "openvino-int8-bf16")
ACCURACY_ENGINES = ("ort-fp32", "ort-int8", "openvino-int8")


def _cells(text: str) -> list[tuple[int, int, int]]:
    return [tuple(int(x) for x in c.split("x")) for c in text.split(",") if c.strip()]


def ort_session(path: Path, threads: int, shape: tuple[int, int] | None = None):
    """edgesent's ONNX session (`session.OnnxSession`), optionally with every dynamic axis fixed to `shape`."""
    from edgesent.session import OnnxSession

    sess = OnnxSession(path, threads=threads)
    if shape is not None:
        import onnxruntime as ort

        o = ort.SessionOptions()
        o.intra_op_num_threads, o.inter_op_num_threads = threads, 1
        o.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        o.log_severity_level = 3
        dims = {d for i in sess.ort.get_inputs() for d in i.shape if isinstance(d, str)}
        for d in dims:
            o.add_free_dimension_override_by_name(d, shape[0] if "batch" in d else shape[1])
        sess.ort = ort.InferenceSession(str(path), o, providers=["CPUExecutionProvider"])
    return sess


class Target:
    """One artifact: its sessions per (engine, threads[, shape]) and its preprocessor."""

    def __init__(self, label: str, artifact: Path, work: Path):
        from tokenizers import Tokenizer

        from edgesent.textproc import Preprocessor

        self.label, self.artifact = label, artifact
        self.manifest = load_manifest(artifact)
        self.pre = Preprocessor.from_manifest(Tokenizer.from_file(str(artifact / "tokenizer.json")),
                                              self.manifest["preprocessing"])
        self.work = work / artifact.parent.name
        self.work.mkdir(parents=True, exist_ok=True)
        self.sessions: dict = {}
        self._clf = None

    def path(self, e: Engine) -> Path:
        return (self.work if e.name == "ort-int8-slim" else self.artifact) / e.file

    def skip(self, e: Engine) -> str | None:
        if e.name == "ort-int8-slim":
            return None if self.slim() else "onnxslim not installed"
        if e.file not in self.manifest.files:
            return f"no {e.file}"
        if e.hint == "bf16" and not native_bf16():
            return "no native bf16 on this CPU"
        return None

    def slim(self) -> bool:
        """onnxslim'd fp32 + export's dynamic per-channel INT8, written once into the work folder."""
        out = self.work / "model.slim.int8.onnx"
        if out.is_file():
            return True
        try:
            import onnxslim
        except ImportError:
            return False
        from edgesent.export.quantize import quant_settings, quantize_dynamic_int8

        slim = self.work / "model.slim.onnx"
        onnxslim.slim(str(self.artifact / FILES["fp32"]), str(slim))
        quantize_dynamic_int8(slim, out, per_channel=True, exclude=None, settings=quant_settings())
        return True

    def session(self, e: Engine, threads: int, shape: tuple[int, int] | None = None):
        key = (e.name, threads, shape if e.fixed else None)
        if key not in self.sessions:
            if e.kind == "openvino":
                from edgesent.openvino_session import OpenVinoSession

                self.sessions[key] = OpenVinoSession(self.path(e), threads=threads, hint=e.hint)
            else:
                self.sessions[key] = ort_session(self.path(e), threads, shape if e.fixed else None)
        return self.sessions[key]

    def classifier(self, e: Engine, threads: int):
        """The serving Classifier (preprocessing, bucketing) running this engine's session."""
        import copy

        from edgesent.runtime import Classifier

        if self._clf is None:
            self._clf = Classifier(self.artifact, model="int8" if FILES["int8"] in self.manifest.files else "fp32",
                                   engine="onnxruntime", threads=1)
        clf = copy.copy(self._clf)
        clf.session = self.session(e, threads)
        return clf


def time_round(fn, seconds: float, warm: bool) -> list[float]:
    """One interleaved round: bench's own `time_runs` (one warm-up call in the first round only)."""
    return time_runs(fn, seconds, warmup=1 if warm else 0)


def measure_latency(t: Target, engines: list[Engine], cells, texts, rounds: int, round_s: float) -> dict:
    """{cell: {engine: p50 ms}} over interleaved rounds."""
    from edgesent.bench.inputs import synthetic_batch, text_batch

    out = {}
    for b, s, threads in cells:
        batch = (text_batch(t.pre, texts, b, s) if texts else synthetic_batch(t.pre, b, s, np.random.default_rng(0)))
        samples = {e.name: [] for e in engines}
        for r in range(rounds):
            order = engines[r % len(engines):] + engines[:r % len(engines)]
            for e in order:
                sess = t.session(e, threads, (b, s))
                samples[e.name] += time_round(lambda sess=sess, batch=batch: sess.logits(batch), round_s, warm=r == 0)
        out[f"{b}x{s}x{threads}"] = {name: float(np.median(v)) * 1000 for name, v in samples.items()}
        print(f"  {t.label} b{b}x{s} {threads}T: " + ", ".join(f"{k} {v:.2f}" for k, v in out[f"{b}x{s}x{threads}"].items()),
              flush=True)
    return out


def measure_throughput(t: Target, engines: list[Engine], texts: list[str], threads: int, rounds: int) -> dict:
    """{engine: texts/s} (median over interleaved rounds), bucketed batches of 32 through Classifier."""
    clfs = {e.name: t.classifier(e, threads) for e in engines if not e.fixed}
    times = {name: [] for name in clfs}
    for clf in clfs.values():
        clf.logits(texts[:32], 32)  # warm-up
    for r in range(rounds):
        names = list(clfs)
        for name in names[r % len(names):] + names[:r % len(names)]:
            start = time.perf_counter()
            clfs[name].logits(texts, 32)
            times[name].append(time.perf_counter() - start)
    return {name: len(texts) / statistics.median(v) for name, v in times.items()}


def cold_start(t: Target, e: Engine, runs: int = 3) -> dict | None:
    """Fresh process: import + Classifier + one prediction; wall time and peak RSS (medians)."""
    if e.cold_model is None:
        return None
    code = ("import json,sys;from edgesent.runtime import Classifier;from edgesent.machine import peak_rss_mb;"
            f"c=Classifier(sys.argv[1],model={e.cold_model!r},engine={('openvino' if e.kind == 'openvino' else 'onnxruntime')!r},"
            "threads=1);c.predict(['a fine film']);print(json.dumps({'rss':peak_rss_mb()}))")
    walls, rss = [], []
    for _ in range(runs):
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-c", code, str(t.artifact)], capture_output=True, text=True, cwd=ROOT,
                              env=dict(os.environ, OPENBLAS_NUM_THREADS="1"))
        if proc.returncode != 0:
            return {"error": proc.stderr.strip().splitlines()[-1][:200]}
        walls.append(time.perf_counter() - start)
        rss.append(json.loads(proc.stdout.strip().splitlines()[-1])["rss"])
    return {"first_answer_s": statistics.median(walls), "rss_mb": statistics.median(rss)}


def predictions(t: Target, e: Engine, texts: list[str], threads: int, batch_size: int) -> np.ndarray:
    """Every review's label with this engine, saved in the work folder and reused on the next run."""
    cache = t.work / f"preds-{e.name}-{len(texts)}-b{batch_size}.npy"
    if cache.is_file():
        return np.load(cache)
    started = time.perf_counter()
    preds = t.classifier(e, threads).logits(texts, batch_size).argmax(-1)
    np.save(cache, preds)
    print(f"  {e.name}: {len(texts)} reviews, batch {batch_size}, in {time.perf_counter() - started:.0f} s", flush=True)
    return preds


def build_random(name: str, work: Path) -> Path:
    """A random-weight run of a *-arch model, exported with ORT INT8 and OpenVINO INT8 (no gate: max_drop 100)."""
    import contextlib
    import io

    from bench.latency_targets import build_run
    from edgesent.export import export

    run = build_run(name, work)
    artifact = run / "artifact-engines"
    if not (artifact / FILES["openvino-int8"]).is_file():
        with contextlib.redirect_stdout(io.StringIO()):
            export(run, artifact, int8=True, openvino=True, max_drop=100, eval_limit=200, calibration=300,
                   overwrite=True)
    return artifact


def md_latency(label: str, lat: dict, engines: list[str]) -> str:
    cols = [e for e in engines if any(e in row for row in lat.values())]
    lines = [f"| {label}: cell (batch x seq x threads) | " + " | ".join(cols) + " | best / ORT fp32 | best / ORT INT8 |",
             "|" + "---|" * (len(cols) + 3)]
    for cell, row in lat.items():
        best = min(row, key=row.get)
        lines.append(f"| {cell.replace('x', ' x ', 1).replace('x', '×')}T | "
                     + " | ".join(f"{row[c]:.2f}" if c in row else "–" for c in cols)
                     + f" | {row['ort-fp32'] / row[best]:.2f}× ({best}) | {row['ort-int8'] / row[best]:.2f}× |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--artifact", type=Path, action="append", default=[], help="a trained artifact (repeatable)")
    p.add_argument("--models", default="", help="random-weight architectures: pythia,distilroberta")
    p.add_argument("--engines", default=",".join(e.name for e in ENGINES))
    p.add_argument("--cells", default="1x128x1,8x256x2", help="batch x seq_len x threads, comma-separated")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--round-s", type=float, default=0.6)
    p.add_argument("--throughput-texts", type=int, default=256)
    p.add_argument("--throughput-threads", type=int, default=2)
    p.add_argument("--throughput-rounds", type=int, default=3)
    p.add_argument("--cold-runs", type=int, default=3)
    p.add_argument("--accuracy", action="store_true", help="score the whole test split (trained artifacts only)")
    p.add_argument("--independence", type=int, default=0, help="reviews scored alone vs batched, per INT8 engine")
    p.add_argument("--data", type=Path, default=SHARED / "data" / "imdb")
    p.add_argument("--work", type=Path, default=Path("/tmp/edgesent-engines"))
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import pyarrow.parquet as pq

    table = pq.read_table(args.data / "test.parquet", columns=["text", "label"]).to_pydict()
    all_texts, all_labels = table["text"], np.asarray(table["label"])
    rng = np.random.default_rng(0)
    tp_texts = [all_texts[i] for i in rng.choice(len(all_texts), args.throughput_texts, replace=False)]
    wanted = [e for e in ENGINES if e.name in args.engines.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    targets = [(f"{a.parent.name} (trained)", a, True) for a in args.artifact]
    targets += [(f"{m}-arch (random weights)", build_random(m, args.work), False) for m in args.models.split(",") if m]
    summary = {"machine": machine_facts(), "args": {k: str(v) for k, v in vars(args).items()}, "targets": {}}
    report = []
    for label, artifact, trained in targets:
        t = Target(label, artifact, args.work)
        engines = [e for e in wanted if not t.skip(e)]
        skipped = {e.name: t.skip(e) for e in wanted if t.skip(e)}
        print(f"{label}: {', '.join(e.name for e in engines)} (skipped: {skipped})", flush=True)
        row: dict = {"artifact": str(artifact), "skipped": skipped,
                     "bytes": {e.name: sum((t.path(e).parent / f).stat().st_size for f in loaded_files(t.path(e).name))
                               for e in engines}}
        row["latency_p50_ms"] = measure_latency(t, engines, _cells(args.cells), all_texts, args.rounds, args.round_s)
        row["texts_per_s"] = measure_throughput(t, engines, tp_texts, args.throughput_threads, args.throughput_rounds)
        print("  texts/s: " + ", ".join(f"{k} {v:.1f}" for k, v in row["texts_per_s"].items()), flush=True)
        row["cold_start"] = {e.name: cold_start(t, e, args.cold_runs) for e in engines if e.cold_model}
        if trained and args.accuracy:
            row["accuracy"] = accuracy_block(t, [e for e in engines if e.name in ACCURACY_ENGINES], all_texts,
                                             all_labels, args)
        summary["targets"][label] = row
        out = args.out or args.work / "engines.json"
        out.write_text(json.dumps(summary, indent=1) + "\n")  # after every target: partial results survive
        report.append(md_latency(label, row["latency_p50_ms"], [e.name for e in engines]))
        report.append("cold start / peak RSS: " + ", ".join(
            f"{k} {v['first_answer_s']:.2f} s / {v['rss_mb']:.0f} MB" for k, v in row["cold_start"].items()
            if v and "rss_mb" in v) + "; bytes: " + ", ".join(f"{k} {v / 1e6:.1f} MB" for k, v in row["bytes"].items()))
        for name, a in (row.get("accuracy") or {}).get("engines", {}).items():
            bi = a.get("batch_independence")
            report.append(f"{name}: accuracy {a['accuracy']:.4%} agreement with ort-fp32 {a['agreement_fp32']:.4%}"
                          + (f", alone vs batched differ on {bi['differ']} of {bi['n']}" if bi else ""))
        report.append("texts/s (" + f"{args.throughput_threads} threads, {len(tp_texts)} {args.data.name} test texts, batch 32 "
                      "bucketed): " + ", ".join(f"{k} {v:.1f}" for k, v in row["texts_per_s"].items()))
    out = args.out or args.work / "engines.json"
    out.write_text(json.dumps(summary, indent=1) + "\n")
    print("\n" + "\n\n".join(report) + f"\n\nnumbers: {out}")
    return 0


def accuracy_block(t: Target, engines: list[Engine], texts: list[str], labels: np.ndarray, args) -> dict:
    """Accuracy and agreement with ort-fp32 on every review; batch independence on the first N reviews."""
    from edgesent.metrics import paired_comparison

    preds = {e.name: predictions(t, e, texts, 2, 32) for e in engines}
    ref = preds["ort-fp32"]
    block = {"n": len(texts), "engines": {}}
    for name, p in preds.items():
        block["engines"][name] = {"accuracy": float((p == labels).mean()), "agreement_fp32": float((p == ref).mean()),
                                  **({} if name == "ort-fp32" else {"vs_fp32": paired_comparison(ref, p, labels)})}
    if args.independence:
        n = args.independence
        for e in engines:
            alone = predictions(t, e, texts[:n], 2, 1)
            batched = preds[e.name][:n]
            block["engines"][e.name]["batch_independence"] = {"n": n, "differ": int((alone != batched).sum())}
    return block


if __name__ == "__main__":
    run_main(main)
