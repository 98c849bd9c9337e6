"""Scale-out table: single-process `predict --file` vs `predict --engine ray` with 1 and 2 workers.

    python -m bench.scale_out ARTIFACT [--rows 50000] [--data ../shared/data/imdb] [--json bench/results/scale_out.json]

Input: the first --rows reviews of IMDB train + test (50,000 in all), written once to a temporary
parquet file with an id column. Each configuration is the real command in a fresh process, timed
from spawn to exit (wall), and its own summary line gives the scoring time (rows/s) and, for Ray,
the start-up of the local Ray (`ray.init`). Configurations (this box: 2 vCPUs):

- single: `predict ART --file in.parquet --out single.parquet --threads 2` (one process, 2 onnxruntime threads)
- ray x1: `predict ART --file in.parquet --engine ray --workers 1 --threads 1 --out DIR`
- ray x2: `predict ART --file in.parquet --engine ray --workers 2 --threads 1 --out DIR`
- fixed costs: ray x2 on the first 64 rows only (Ray start, two actors importing and loading the model)

Also measured in this process: the per-worker model load (`Classifier(...)`, median of 3) and the
read + write cost of the same rows without scoring (pyarrow read of the input, write of the input
plus the five output columns), which is what a cluster pays per row besides the model. The script
prints the projection for a cluster from these numbers; it is arithmetic, not a measurement.
Run it under the machine-wide lock: `flock /work/heavy.lock python -m bench.scale_out ARTIFACT`.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"scored (\d+) rows .* in ([\d.]+) s \((\d+) rows/s(?:; ray start ([\d.]+) s)?")


def make_input(data: Path, rows: int, folder: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(data / f"{split}.parquet", columns=["text", "label"]) for split in ("train", "test")]
    table = pa.concat_tables(tables).slice(0, rows)
    table = table.add_column(0, "id", pa.array(range(table.num_rows), pa.int64()))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reviews.parquet"
    pq.write_table(table, path)
    return path


def run(name: str, args: list[str]) -> dict:
    cmd = [sys.executable, "-m", "edgesent", "predict", *map(str, args)]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"{name} failed: {proc.stderr.strip().splitlines()[-1:]}")
    match = SUMMARY.search(proc.stdout)
    if not match:
        raise SystemExit(f"{name}: no summary line in {proc.stdout!r}")
    rows, seconds = int(match[1]), float(match[2])
    row = {"config": name, "command": "edgesent predict " + " ".join(map(str, args)), "rows": rows,
           "scoring_s": seconds, "scoring_rows_per_s": round(rows / seconds, 1), "wall_s": round(wall, 2),
           "wall_rows_per_s": round(rows / wall, 1)}
    if match[4] is not None:
        row["ray_start_s"] = float(match[4])
    print(json.dumps(row), flush=True)
    return row


def io_only(path: Path, folder: Path) -> dict:
    """Read the input and write it back with five output-shaped columns: no model."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(path)
    n = table.num_rows
    for name, values in (("label", pa.array(["positive"] * n)), ("confidence", pa.array([0.5] * n)),
                         ("prob_negative", pa.array([0.5] * n)), ("prob_positive", pa.array([0.5] * n)),
                         ("empty", pa.array([False] * n))):
        table = table.append_column(name, values)
    pq.write_table(table, folder / "io.parquet")
    seconds = time.perf_counter() - start
    return {"rows": n, "seconds": round(seconds, 3), "rows_per_s": round(n / seconds, 1),
            "input_bytes_per_row": round(path.stat().st_size / n, 1),
            "output_bytes_per_row": round((folder / "io.parquet").stat().st_size / n, 1)}


def same_answers(tmp: Path, labels: list[str]) -> dict:
    """Each Ray output against the single-process one, row for row by id, and the single-process
    accuracy on the input's gold labels (kept beside the predictions by --prefix pred_)."""
    import pandas as pd

    if not (tmp / "single.parquet").is_file():
        return {}
    one = pd.read_parquet(tmp / "single.parquet").set_index("id").sort_index()
    probs = [f"pred_prob_{name}" for name in labels]
    out = {"single_accuracy": float((one["pred_label"].map(labels.index) == one["label"]).mean())}
    for key in ("ray1", "ray2"):
        if (tmp / key).is_dir():
            many = pd.read_parquet(tmp / key).set_index("id").sort_index()
            out[key] = {"ids_exactly_once": bool(many.index.is_unique and list(many.index) == list(one.index)),
                        "labels_differ": int((many["pred_label"] != one["pred_label"]).sum()),
                        "max_prob_diff": float((many[probs] - one[probs]).abs().to_numpy().max())}
    return out


def model_load(artifact: Path, model: str) -> float:
    from edgesent.runtime import Classifier

    return statistics.median(Classifier(artifact, model=model, threads=1).load_seconds for _ in range(3))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", type=Path)
    ap.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "imdb")
    ap.add_argument("--rows", type=int, default=50_000)
    ap.add_argument("--model", default="int8")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--configs", default="startup,single,ray1,ray2")
    ap.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "scale_out.json")
    a = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="scale-out-") as tmp:
        tmp = Path(tmp)
        src = make_input(a.data, a.rows, tmp)
        small = make_input(a.data, 64, tmp / "small")  # fixed costs: Ray start, actors, model loads
        # --prefix: the input keeps its gold label column (predict never replaces an input column)
        common = ["--column", "text", "--model", a.model, "--batch-size", a.batch_size, "--prefix", "pred_"]
        configs = {
            "single (1 process, 2 threads)": [a.artifact, "--file", src, *common, "--threads", 2,
                                              "--out", tmp / "single.parquet"],
            "ray, 1 worker x 1 thread": [a.artifact, "--file", src, *common, "--engine", "ray", "--workers", 1,
                                         "--threads", 1, "--out", tmp / "ray1"],
            "ray, 2 workers x 1 thread": [a.artifact, "--file", src, *common, "--engine", "ray", "--workers", 2,
                                          "--threads", 1, "--out", tmp / "ray2"],
        }
        configs["ray, 2 workers x 1 thread, 64 rows (fixed costs)"] = [
            a.artifact, "--file", small, *common, "--engine", "ray", "--workers", 2, "--threads", 1, "--out", tmp / "ray2s"]
        keys = dict(zip(("single", "ray1", "ray2", "startup"), configs, strict=True))
        rows = [{"key": k, **run(keys[k], configs[keys[k]])} for k in a.configs.split(",")]
        from edgesent.artifact import load_manifest

        answers = same_answers(tmp, load_manifest(a.artifact).labels)
        io = io_only(src, tmp)
        load_s = model_load(a.artifact, a.model)

    from edgesent.machine import machine_facts

    result = {"machine": machine_facts(), "artifact": str(a.artifact), "model": a.model,
              "engine": load_manifest(a.artifact).engine,  # the artifact's default, used by every configuration
              "batch_size": a.batch_size, "rows": a.rows,
              "configs": rows, "same_answers": answers, "io_only": io, "model_load_s": round(load_s, 3)}
    per_core = next((r["scoring_rows_per_s"] for r in rows if r["key"] == "ray1"), None)
    two = next((r["scoring_rows_per_s"] for r in rows if r["key"] == "ray2"), None)
    if per_core:
        eff = round(two / (2 * per_core), 3) if two else None
        result["projection"] = {
            "note": "PROJECTED, not measured: measured per-core rate x cores x measured 2-worker efficiency",
            "per_core_rows_per_s": per_core, "two_worker_efficiency": eff,
            "cluster_rows_per_s": {str(c): round(c * per_core * (eff or 1.0)) for c in (16, 64, 256, 1024)},
            "io_to_scoring_ratio": round(io["rows_per_s"] / per_core, 1),
        }
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in result.items() if k != "machine"}, indent=2, default=str))
    print(markdown(result))
    print(f"wrote {a.json}")


def markdown(result: dict) -> str:
    """The RESULTS.md table of one run."""
    lines = ["| configuration | rows | scoring s | rows/s (scoring) | wall s (process) | rows/s (wall) | ray.init s |",
             "|---|---|---|---|---|---|---|"]
    for r in result["configs"]:
        lines.append(f"| {r['config']} | {r['rows']:,} | {r['scoring_s']:.1f} | {r['scoring_rows_per_s']:.1f} | "
                     f"{r['wall_s']:.1f} | {r['wall_rows_per_s']:.1f} | {r.get('ray_start_s', '–')} |")
    io = result["io_only"]
    lines.append(f"\nread + write without a model: {io['rows_per_s']:,.0f} rows/s ({io['input_bytes_per_row']:.0f} B/row in, "
                 f"{io['output_bytes_per_row']:.0f} B/row out); model load per worker {result['model_load_s']:.2f} s")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
