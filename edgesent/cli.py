"""Command line: a thin map from subcommand to the function of its stage.

Heavy libraries (torch, transformers, peft, onnxruntime, gradio) are imported inside the commands,
so `edgesent --help` and every `--help` answer instantly. Known errors (`EdgesentError`) print one
line and exit non-zero; `--debug` shows the traceback instead.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune a small sentiment classifier, export it to ONNX/INT8, benchmark it and serve it.",
)
_STATE = {"debug": False}


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks.")] = False):
    _STATE["debug"] = debug


def _csv_ints(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated integers, got {text!r}") from None


# --------------------------------------------------------------------------------------------
@app.command()
def train(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/pythia14m.yaml.")],
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.key=value (repeatable).")] = None,
    seeds: Annotated[str | None, typer.Option(help="Run once per seed, e.g. 1,2,3, and report mean ± std.")] = None,
    resume: Annotated[bool, typer.Option(help="Continue the newest unfinished run of this recipe from its last checkpoint.")] = False,
    out: Annotated[Path | None, typer.Option(help="Run folder (default: <output_dir>/<name>-<timestamp>).")] = None,
):
    """Fine-tune per RECIPE; writes a run folder under exports/."""
    from edgesent.train import train_cli

    train_cli(recipe, overrides=set_ or [], seeds=_csv_ints(seeds), resume=resume, out=out)


@app.command()
def export(
    source: Annotated[str | None, typer.Argument(help="Run folder, HF model folder or hub id (default: newest run in exports/).")] = None,
    int8: Annotated[bool, typer.Option("--int8", help="Also write a dynamic INT8 model, gated on accuracy.")] = False,
    fp16: Annotated[bool, typer.Option("--fp16", help="Also write an fp16 model for GPU execution providers.")] = False,
    static: Annotated[bool, typer.Option("--static", help="Static INT8 (QDQ) calibrated on training texts.")] = False,
    calibration: Annotated[int, typer.Option(help="Calibration texts for --static.")] = 256,
    max_drop: Annotated[float, typer.Option(help="Largest accepted INT8 accuracy drop, in points.")] = 0.5,
    eval_data: Annotated[str | None, typer.Option(help="Data (file/folder/hub id) for the accuracy gate.")] = None,
    eval_limit: Annotated[int | None, typer.Option(help="Evaluate the gate on at most N texts.")] = None,
    out: Annotated[Path | None, typer.Option(help="Artifact folder (default: <run>/artifact).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing artifact folder.")] = False,
):
    """Merge LoRA, export ONNX, validate against PyTorch, quantize and write an artifact folder."""
    from edgesent.export import export_cli

    export_cli(source, int8=int8, fp16=fp16, static=static, calibration=calibration, max_drop=max_drop,
               eval_data=eval_data, eval_limit=eval_limit, out=out, overwrite=overwrite)


@app.command()
def predict(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder (from edgesent export).")],
    texts: Annotated[list[str] | None, typer.Argument(help="Texts to classify.")] = None,
    file: Annotated[Path | None, typer.Option(help="Score a .csv/.jsonl/.parquet/.txt file instead.")] = None,
    column: Annotated[str, typer.Option(help="Text column of --file.")] = "text",
    out_file: Annotated[Path | None, typer.Option("--out", help="Write scores here (.parquet/.csv/.jsonl).")] = None,
    model_file: Annotated[str | None, typer.Option("--model", help="int8, fp32, fp16 or a file name.")] = None,
    threads: Annotated[int | None, typer.Option(help="onnxruntime intra-op threads.")] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 32,
):
    """Classify texts with an artifact (torch-free)."""
    from edgesent.runtime import predict_cli

    predict_cli(artifact, texts or [], file=file, column=column, out=out_file, model=model_file,
                threads=threads, batch_size=batch_size)


@app.command()
def demo(
    artifact: Annotated[Path, typer.Argument(help="Artifact folder.")],
    host: Annotated[str, typer.Option(help="Address to bind. Keep 127.0.0.1 unless you mean to expose it.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0 = first free).")] = 7860,
    auth: Annotated[str | None, typer.Option(help="user:pass to require a login.")] = None,
    model_file: Annotated[str | None, typer.Option("--model", help="int8, fp32 or a file name.")] = None,
):
    """Serve a local Gradio app on the artifact (INT8 when present)."""
    from edgesent.app import demo_cli

    demo_cli(artifact, host=host, port=port, auth=auth, model=model_file)


@app.command()
def bench(
    target: Annotated[str | None, typer.Argument(help="Artifact or run folder (default: newest export).")] = None,
    device: Annotated[str, typer.Option(help="cpu or cuda.")] = "cpu",
    batch_sizes: Annotated[str, typer.Option(help="Comma-separated batch sizes.")] = "1,8,32",
    seq_lens: Annotated[str, typer.Option(help="Comma-separated sequence lengths.")] = "32,128,256,512",
    threads: Annotated[str, typer.Option(help="Comma-separated thread counts.")] = "1,2",
    data: Annotated[str | None, typer.Option(help="Data set (file/folder/hub id) for accuracy and throughput.")] = None,
    split: Annotated[str, typer.Option(help="Split of --data.")] = "test",
    limit: Annotated[int | None, typer.Option(help="Use at most N texts of --data.")] = None,
    budget: Annotated[float, typer.Option(help="Seconds of timed runs per latency cell.")] = 2.0,
    out: Annotated[Path | None, typer.Option(help="Output folder (default: <target>/bench-<timestamp>).")] = None,
):
    """Latency, throughput, size, memory and accuracy of every variant."""
    from edgesent.bench import bench_cli

    bench_cli(target, device=device, batch_sizes=_csv_ints(batch_sizes), seq_lens=_csv_ints(seq_lens),
              threads=_csv_ints(threads), data=data, split=split, limit=limit, budget=budget, out=out)


@app.command()
def sweep(
    recipe: Annotated[Path, typer.Argument(help="Recipe YAML with a sweep: section.")],
    trials: Annotated[int, typer.Option(help="Trials to run (in total, counting finished ones on resume).")] = 20,
    timeout: Annotated[float | None, typer.Option(help="Stop starting new trials after S seconds.")] = None,
    storage: Annotated[str | None, typer.Option(help="Optuna storage URL (default: sqlite under exports/sweeps/).")] = None,
    metric: Annotated[str | None, typer.Option(help="Metric to maximise (default: the recipe's sweep.metric).")] = None,
    seed: Annotated[int, typer.Option(help="Sampler seed.")] = 0,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override a field: section.key=value.")] = None,
):
    """Bayesian (TPE) hyperparameter search; resumable."""
    from edgesent.sweep import sweep_cli

    sweep_cli(recipe, trials=trials, timeout=timeout, storage=storage, metric=metric, seed=seed, overrides=set_ or [])


# --------------------------------------------------------------------------------------------
def _fast_predict(args: list[str]) -> bool:
    """`edgesent predict ARTIFACT TEXT...` with no options: call the runtime directly.

    Cold start is the runtime's budget (< 1 s to the first answer on a 2-core box) and typer
    coerces every parameter through pydantic TypeAdapters, which costs 0.2-0.4 s there. Plain
    positional calls skip that; anything with an option (or --help) goes through typer as usual,
    so `predict` above stays the one definition of the command. OpenBLAS is kept to one thread:
    the runtime does no BLAS work and starting its thread pool costs ~0.1 s of numpy import.
    """
    if args[:1] != ["predict"] or len(args) < 3 or any(a.startswith("-") for a in args[1:]):
        return False
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from edgesent.runtime import predict_cli

    predict_cli(Path(args[1]), args[2:])
    return True


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from edgesent.errors import EdgesentError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        if not _fast_predict(argv if argv is not None else sys.argv[1:]):
            app(args=argv, prog_name="edgesent")
    except EdgesentError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        print("error: interrupted (partial outputs were not moved into place)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
