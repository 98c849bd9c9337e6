"""What bench shows and writes: the progress bar, the CSV rows, the markdown report, the plots, the summary.

Everything here reads the `results` dict the driver assembles (machine facts, config, one entry per
variant with its cells and throughput rows) and nothing else:

- `write_outputs(folder, results)`: results.json, results.csv (`to_rows`: one row per variant x
  batch x seq_len x threads, plus throughput rows), report.md (`render_report`), latency.png
  (`plot_latency`) and, with accuracy figures, pareto.png (`plot_pareto`);
- `print_summary`: one screen on the terminal; `progress_bar`: rich's bar, or a silent stand-in.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from pathlib import Path
from typing import Any

CSV_COLUMNS = [
    "variant", "device", "engine", "precision", "measure", "batch_size", "seq_len", "threads", "status", "reason",
    "n", "mean_ms", "std_ms", "p50_ms", "p90_ms", "p99_ms", "texts_per_s", "file_bytes", "load_s", "peak_rss_mb",
    "gpu_mem_mb", "accuracy", "f1", "agreement", "unparsed", "accuracy_parsed", "latency_per_review_ms",
    "cost_per_1k_usd",
]


def to_rows(results: dict) -> list[dict]:
    """One CSV row per variant x batch x seq_len x threads (latency) and per variant x threads (throughput)."""
    rows = []
    for v in results["variants"]:
        base = {k: v.get(k) for k in ("device", "engine", "precision", "file_bytes", "load_s", "peak_rss_mb",
                                      "gpu_mem_mb", "accuracy", "f1", "agreement")}
        base["variant"] = v["name"]
        base.update(llm_figures(v))
        if v.get("status") != "ok":
            rows.append({**base, "measure": "-", "status": v.get("status"), "reason": v.get("reason")})
            continue
        for c in v["cells"]:
            rows.append({**base, "measure": "latency", **{k: c.get(k) for k in CSV_COLUMNS if k in c}})
        for t in v["throughput"]:
            batch = (v.get("llm") or {}).get("batch") or t["batch_size"]  # an API row's reviews per request
            rows.append({**base, "measure": "throughput", "batch_size": batch, "seq_len": "data",
                         "threads": t["threads"], "status": "ok", "texts_per_s": t["texts_per_s"], "n": t["n_texts"]})
    return [{k: r.get(k) for k in CSV_COLUMNS} for r in rows]


def llm_figures(v: dict) -> dict:
    """The LLM-API row's own figures (unparsed, accuracy on parsed, latency per review, cost), or {}."""
    if v.get("engine") != "llm":
        return {}
    derived = (v.get("llm") or {}).get("derived") or {}
    return {"unparsed": v.get("unparsed"), "accuracy_parsed": v.get("accuracy_parsed"),
            "latency_per_review_ms": derived.get("latency_per_review_ms"), "cost_per_1k_usd": derived.get("cost_per_1k_usd")}


def render_llm(variants: list[dict]) -> list[str]:
    """The markdown section of the LLM-API baseline rows."""
    rows = []
    for v in variants:
        llm, fig = v.get("llm") or {}, llm_figures(v)
        if v.get("status") != "ok" or not llm:
            continue
        tp = max((t["texts_per_s"] for t in v.get("throughput", [])), default=None)
        cost = fig["cost_per_1k_usd"]
        rows.append([v["name"], llm["shots"], llm["batch"], llm["chars"], llm["reviews"], fig["unparsed"],
                     v.get("accuracy_parsed"), v.get("accuracy"), tp, fig["latency_per_review_ms"],
                     "–" if cost is None else f"{cost:.4f}", llm["requests"], llm["retries"], llm["failed_requests"]])
    if not rows:
        return []
    first = next(v["llm"] for v in variants if v.get("llm"))
    return ["### LLM-API baseline", "",
            f"Endpoint `{first['endpoint']}`, model `{first['model']}`, temperature 0, auth: {first['auth']}. "
            "Accuracy is given on the parsed reviews and with unparsed ones counted wrong; latency per review = "
            "summed request time / reviews; cost from the responses' token usage.", "",
            _md_table(["variant", "shots", "batch", "chars", "reviews", "unparsed", "acc (parsed)", "acc (unparsed wrong)",
                       "reviews/s", "ms/review", "USD/1k reviews", "requests", "retries", "failed"], rows), ""]


def _fmt(value, digits=2) -> str:
    if value is None or value == "":
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _mb(n) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def _md_table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_fmt(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def render_report(results: dict) -> str:
    m, cfg = results["machine"], results["config"]
    isa = ", ".join(f for f, on in m["isa"].items() if on) or "none of " + ", ".join(m["isa"])
    out = ["# edgesent bench", "",
           f"Target: `{cfg['artifact'] or cfg['run']}` · {m['date']} · inputs: {cfg['inputs']} · "
           f"budget {cfg['budget_s']} s per cell after {cfg['warmup_runs']} warm-up runs.", "",
           "## Machine", "",
           _md_table(["fact", "value"], [
               ["CPU", m["cpu"]], ["cores (usable / logical)", f"{m['usable_cores']} / {m['logical_cores']}"],
               ["ISA", isa], ["threads benchmarked", ",".join(map(str, cfg["threads"]))], ["GPU", m["gpu"] or "none"],
               ["OS / Python", f"{m['os']} / {m['python']}"],
               ["versions", ", ".join(f"{k} {v}" for k, v in m["versions"].items())]]), ""]
    for device in ("cpu", "cuda", "api"):
        variants = [v for v in results["variants"] if v["device"] == device]
        if not variants:
            continue
        out += [f"## {device.upper()}", "", "### Variants", ""]
        out.append(_md_table(
            ["variant", "status", "file MB", "load s", "peak RSS MB", "GPU MB", "accuracy", "F1", "agreement"],
            [[v["name"], v.get("status"), _mb(v.get("file_bytes")), v.get("load_s"), v.get("peak_rss_mb"),
              v.get("gpu_mem_mb"), v.get("accuracy"), v.get("f1"), v.get("agreement")] for v in variants]))
        ok = [v for v in variants if v.get("status") == "ok" and v["cells"]]
        if ok:
            out += ["", "### Latency (ms)", ""]
            rows = [[v["name"], c["batch_size"], c["seq_len"] or "text", c["threads"], c.get("n"), c.get("mean_ms"),
                     c.get("std_ms"), c.get("p50_ms"), c.get("p90_ms"), c.get("p99_ms"), c.get("reason")]
                    for v in ok for c in v["cells"]]
            out.append(_md_table(["variant", "batch", "seq", "threads", "runs", "mean", "std", "p50", "p90", "p99", "note"],
                                 rows))
        tp = [[v["name"], t["threads"], t["batch_size"], t["n_texts"], t["texts_per_s"]]
              for v in variants if v.get("status") == "ok" and v.get("engine") != "llm" for t in v["throughput"]]
        if tp:
            out += ["", "### Throughput over the data (length-bucketed)", "",
                    _md_table(["variant", "threads", "batch", "texts", "texts/s"], tp)]
        out += ["", *render_llm(variants)] if device == "api" else []
        out += per_review_section(variants)
        skipped = [v for v in variants if v.get("status") != "ok"]
        if skipped:
            out += ["", "### Skipped or failed", ""]
            out += [f"- **{v['name']}**: {v.get('status')}: {v.get('reason')}" for v in skipped]
        out.append("")
    if cfg.get("agreement_reference"):
        out += [f"Agreement = share of texts with the same predicted label as `{cfg['agreement_reference']}`.", ""]
    return "\n".join(out)


def per_review_section(variants: list[dict]) -> list[str]:
    """Markdown lines: latency per review and accuracy per length bucket, when bench had --data."""
    rows = [v for v in variants if v.get("status") == "ok" and (v.get("per_review") or v.get("accuracy_by_length"))]
    if not rows:
        return []
    from edgesent.bench.baseline import describe
    from edgesent.bench.inputs import LENGTH_BUCKETS

    names = [name for _, name in LENGTH_BUCKETS]
    counts = next((v["accuracy_by_length"] for v in rows if v.get("accuracy_by_length")), {})
    header = ["variant", "threads", "p50 ms/review", "p90 ms/review"]
    header += [f"p50 ms {n}" for n in names] + [f"acc {n} (n={counts.get(n, {}).get('n', 0)})" for n in names]
    body = []
    for v in rows:
        pr, acc = v.get("per_review") or {}, v.get("accuracy_by_length") or {}
        body.append([v["name"], pr.get("threads"), pr.get("p50_ms"), pr.get("p90_ms")]
                    + [pr.get("by_length", {}).get(n, {}).get("p50_ms") for n in names]
                    + [acc.get(n, {}).get("accuracy") for n in names])
    out = ["", "### Per review and by length (tokens, special tokens included)", "", _md_table(header, body)]
    fits = [v for v in rows if v.get("baseline_fit")]
    out += ["", *(f"{v['name']}: {describe(v['baseline_fit'])}." for v in fits)] if fits else []
    return out


def _pyplot():
    """matplotlib's pyplot on the file-only Agg backend (no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> bool:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    return True


def plot_latency(results: dict, path: Path) -> bool:
    """p50 latency vs batch size (log-log), one line per variant, one panel per seq_len, at the first thread count."""
    plt = _pyplot()
    cfg = results["config"]
    seqs, t0 = cfg["seq_lens"], cfg["threads"][0]
    ok = [v for v in results["variants"] if v.get("status") == "ok" and any(c.get("seq_len") for c in v["cells"])]
    if not ok:
        return False
    fig, axes = plt.subplots(1, len(seqs), figsize=(4.2 * len(seqs), 3.8), squeeze=False, sharey=True)
    for ax, seq in zip(axes[0], seqs, strict=True):
        for v in ok:
            pts = sorted((c["batch_size"], c["p50_ms"]) for c in v["cells"]
                         if c.get("seq_len") == seq and c.get("status") == "ok" and c["threads"] == t0)
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=v["name"])
        ax.set(xscale="log", yscale="log", title=f"seq_len {seq}", xlabel="batch size")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel(f"p50 latency, ms ({t0} thread{'s' if t0 > 1 else ''} on CPU)")
    axes[0][-1].legend(fontsize=8)
    return _save(fig, path)


def plot_pareto(results: dict, path: Path) -> bool:
    """Accuracy vs batch-1 latency, marker area proportional to file size; the Pareto front is joined."""
    plt = _pyplot()
    pts = []
    for v in results["variants"]:
        if v.get("accuracy") is None:
            continue
        cells = [c for c in v["cells"] if c.get("status") == "ok" and c["batch_size"] == 1]
        per_review = llm_figures(v).get("latency_per_review_ms")
        if per_review:  # an API row has no batch-1 cell: its mean request time per review stands in
            pts.append((per_review, v["accuracy"], v.get("file_bytes") or 0, v["name"] + " (ms/review)"))
        if not cells:
            continue
        cell = min(cells, key=lambda c: (c["threads"], -(c["seq_len"] or 0)))  # fewest threads, longest seq
        pts.append((cell["p50_ms"], v["accuracy"], v.get("file_bytes") or 0, v["name"]))
    if not pts:
        return False
    biggest = max(p[2] for p in pts) or 1
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for lat, acc, size, name in pts:
        ax.scatter(lat, acc, s=40 + 900 * size / biggest, alpha=0.6)
        ax.annotate(name, (lat, acc), fontsize=8, xytext=(4, 4), textcoords="offset points")
    front, best = [], -1.0
    for lat, acc, _, _ in sorted(pts):
        if acc > best:
            front.append((lat, acc))
            best = acc
    ax.plot(*zip(*front, strict=True), "k--", lw=1, label="Pareto front")
    ax.set(xscale="log", xlabel="p50 latency at batch 1, ms (log)", ylabel="accuracy",
           title="accuracy vs latency (marker size = file size)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def save_numbers(path: Path, numbers: dict) -> None:
    """A bench script's JSON (written under a temporary name, then moved into place), and the line naming it."""
    from edgesent.errors import atomic_write_text

    path.parent.mkdir(parents=True, exist_ok=True)
    def plain(value):  # numpy scalars as numbers, anything else (paths, dates) as text
        return value.item() if hasattr(value, "item") else str(value)

    atomic_write_text(path, json.dumps(numbers, indent=1, default=plain) + "\n")
    print(f"numbers: {path}")


def write_outputs(folder: Path, results: dict) -> None:
    folder = Path(folder)
    results["plots"] = [name for name, fn in (("latency.png", plot_latency), ("pareto.png", plot_pareto))
                        if fn(results, folder / name)]
    (folder / "results.json").write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(to_rows(results))
    (folder / "results.csv").write_text(buf.getvalue(), encoding="utf-8")
    (folder / "report.md").write_text(render_report(results), encoding="utf-8")


def print_summary(results: dict, out: Path) -> None:
    """One screen: per variant, the batch-1 latency at the first thread count, throughput, size and accuracy."""
    from rich.console import Console
    from rich.table import Table

    cfg = results["config"]
    table = Table(title=f"edgesent bench · {results['machine']['cpu']}", show_lines=False)
    seqs = cfg["seq_lens"]
    table.add_column("variant", no_wrap=True)
    for col in ["MB", "load s", "RSS MB", *(f"p50 ms b1 s{s}" for s in seqs), "texts/s", "acc", "agree"]:
        table.add_column(col, justify="right")
    t0 = cfg["threads"][0]
    not_run = [v for v in results["variants"] if v.get("status") != "ok"]
    for v in results["variants"]:
        if v.get("status") != "ok":
            continue
        lat = {c["seq_len"]: c.get("p50_ms") for c in v["cells"] if c["batch_size"] == 1 and c["threads"] in (t0,)}
        lat = lat or {c["seq_len"]: c.get("p50_ms") for c in v["cells"] if c["batch_size"] == 1}
        tp = max((t["texts_per_s"] for t in v["throughput"]), default=None)
        table.add_row(v["name"], _mb(v.get("file_bytes")), _fmt(v.get("load_s")), _fmt(v.get("peak_rss_mb"), 0),
                      *(_fmt(lat.get(s)) for s in seqs), _fmt(tp, 0), _fmt(v.get("accuracy"), 3),
                      _fmt(v.get("agreement"), 3))
    console = Console()
    console.print(table)
    for v in results["variants"]:
        fig = llm_figures(v)
        if fig and v.get("status") == "ok":
            cost = fig["cost_per_1k_usd"]
            console.print(f"{v['name']}: accuracy {_fmt(v.get('accuracy_parsed'), 3)} on parsed reviews, "
                          f"{_fmt(v.get('accuracy'), 3)} with {fig['unparsed']} unparsed counted wrong, "
                          f"{_fmt(fig['latency_per_review_ms'], 1)} ms per review"
                          + ("" if cost is None else f", {cost:.4f} USD per 1,000 reviews"), highlight=False)
    for v in not_run:
        console.print(f"[yellow]{v['name']}[/]: {v.get('status')}: {v.get('reason')}", highlight=False)
    console.print(f"results: {out}/ (report.md, results.csv, results.json, plots)")


@contextlib.contextmanager
def progress_bar(show: bool):
    """A rich progress bar on a terminal; a silent stand-in otherwise."""
    if show:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=True) as bar:
            yield bar
        return

    class _Quiet:
        def add_task(self, *a, **k):
            return 0

        def update(self, *a, **k):
            pass

        def advance(self, *a, **k):
            pass

    yield _Quiet()

