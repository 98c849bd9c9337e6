"""Cold start of `edgesent predict ARTIFACT "text"`: time from process start to the first answer.

Runs the real command N times in fresh processes (no hyperfine needed) and reports the median,
min and max of
- first answer: from spawning the process to the first line of the result table on stdout;
- exit: from spawning to process exit;
- peak RSS of the process (ru_maxrss from wait4, so it is that process alone, not this script).
  Linux folds the parent's RSS at fork into a child's ru_maxrss, so run this script as its own
  process (as `bench.arch_latency` does), never imported into one that holds torch.

The first run is a warm-up (it pulls files into the page cache) and is not counted, so the
numbers are "cold process, warm disk", which is what a service restart or a CLI call sees.

    .venv/bin/python -m bench.cold_start ARTIFACT [--runs 10] [--text "..."] [--model int8] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path


def one_run(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    first = proc.stdout.readline()  # the table header is printed together with the answer
    first_answer = time.perf_counter() - start
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    exit_s = time.perf_counter() - start
    err = proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0 or not first:
        raise SystemExit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{err.decode(errors='replace')}")
    return {"first_answer_s": first_answer, "exit_s": exit_s, "rss_mb": usage.ru_maxrss / 1024,
            "output": (first + out).decode(errors="replace")}


def summarize(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("artifact", type=Path)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--text", default="An absolute delight: sharp writing and a cast clearly having fun.")
    parser.add_argument("--model", default=None, help="int8, fp32 or a file name (default: the runtime's choice)")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)

    exe = Path(sys.executable).with_name("edgesent")
    cmd = [str(exe)] if exe.is_file() else [sys.executable, "-m", "edgesent"]
    cmd += ["predict", str(args.artifact), args.text]
    if args.model:
        cmd += ["--model", args.model]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="0")

    warm = one_run(cmd, env)
    runs = [one_run(cmd, env) for _ in range(args.runs)]
    result = {
        "command": " ".join(cmd),
        "runs": args.runs,
        "cpu_count": os.cpu_count(),
        "first_answer_s": summarize([r["first_answer_s"] for r in runs]),
        "exit_s": summarize([r["exit_s"] for r in runs]),
        "rss_mb": summarize([r["rss_mb"] for r in runs]),
        "answer": warm["output"].strip().splitlines(),
    }
    fa, ex, rss = result["first_answer_s"], result["exit_s"], result["rss_mb"]
    print(f"{result['command']}\n" + "\n".join(result["answer"]))
    print(f"first answer: median {fa['median']:.3f} s (min {fa['min']:.3f}, max {fa['max']:.3f}) over {args.runs} runs")
    print(f"process exit: median {ex['median']:.3f} s; peak RSS median {rss['median']:.0f} MB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
