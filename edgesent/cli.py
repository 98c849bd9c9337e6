"""Command line: a thin map from subcommand to the function of its stage.

Each command's options are declared once, in `edgesent/options.py` (name, type, default, bounds,
help); `_command` turns such a model into a typer command, and the stage function receives the
validated values. Heavy libraries (torch, transformers, peft, onnxruntime, gradio) are imported
inside the commands, so `edgesent --help` and every `--help` answer instantly. Known errors
(`EdgesentError`) print one line and exit non-zero (`errors.exit_on_error`); `--debug`, anywhere on
the command line, shows the traceback and library logs instead.
"""

from __future__ import annotations

import inspect
import os
import sys
import types
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from edgesent import options as O


class _NoBoolHelp:
    """`--help` is a flag: show it without typer's `<bool>` metavar, like our own flags."""

    def get_help_option(self, ctx):
        option = super().get_help_option(ctx)
        if option is not None:
            option.metavar = ""
        return option


class _Group(_NoBoolHelp, typer.core.TyperGroup):
    pass


class _Command(_NoBoolHelp, typer.core.TyperCommand):
    pass


app = typer.Typer(
    cls=_Group,
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help="Fine-tune a small sentiment classifier, export it to ONNX/INT8, benchmark it and serve it.",
)


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show full tracebacks and library logs.",
                                              metavar="")] = False):
    """(`--debug` is also accepted after the subcommand: `main` takes it from anywhere.)"""


def _cli_type(annotation: Any) -> Any:
    """The type typer parses a field as; pydantic then validates it against the real annotation."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _cli_type(args[0])
    if origin is list:
        return list[str] if args == [str] else str  # repeatable strings; numbers come comma-separated
    if origin is typing.Literal:
        return str
    return annotation


def _command(name: str, model: type[O.Options], run, doc: str) -> None:
    """Register `edgesent NAME` with one parameter per field of `model`; `run(validated options)`."""
    params = []
    for field_name, field in model.model_fields.items():
        extra = field.json_schema_extra or {}
        cli_type = _cli_type(field.annotation)
        default = field.default
        if isinstance(default, list) and cli_type is str:
            default = ",".join(map(str, default))
        if extra.get("argument"):
            info = typer.Argument(help=field.description, show_default=default is not None)
        else:
            info = typer.Option(model.flag(field_name), help=field.description, show_default=default not in (None, False),
                                metavar="" if cli_type is bool else None)  # a flag takes no value: no <bool>
        params.append(inspect.Parameter(field_name, inspect.Parameter.KEYWORD_ONLY, annotation=Annotated[cli_type, info],
                                        default=inspect.Parameter.empty if field.is_required() else default))

    def command(**values):
        run(model.parse(values))

    command.__signature__ = inspect.Signature(params)
    command.__doc__ = doc
    command.__name__ = name
    app.command(name, cls=_Command)(command)


# --------------------------------------------------------------------------------------------
def _train(o: O.TrainOptions) -> None:
    if o.dry_run:
        from edgesent.dryrun import dry_run

        return dry_run(o.recipe, overrides=o.set or [], seeds=o.seeds, resume=o.resume, out=o.out)
    from edgesent.train import train_cli

    train_cli(o.recipe, overrides=o.set or [], seeds=o.seeds, resume=o.resume, out=o.out)


def _export(o: O.ExportOptions) -> None:
    from edgesent.export import export

    export(**o.model_dump())


def _predict(o: O.PredictOptions) -> None:
    if o.engine == "ray":
        from edgesent.scoring_ray import predict_ray_cli

        return predict_ray_cli(o.artifact, o.texts or [], file=o.file, column=o.column, out=o.out, model=o.model,
                               threads=o.threads, batch_size=o.batch_size, workers=o.workers, address=o.ray_address,
                               prefix=o.prefix, overwrite=o.overwrite)
    if o.ray_address or o.workers:
        from edgesent.errors import EdgesentError

        raise EdgesentError(f"{'--ray-address' if o.ray_address else '--workers'} needs --engine ray")
    from edgesent.scoring import predict_cli

    predict_cli(o.artifact, o.texts or [], file=o.file, column=o.column, out=o.out, model=o.model,
                threads=o.threads, batch_size=o.batch_size, engine=o.engine, overwrite=o.overwrite,
                prefix=o.prefix)


def _demo(o: O.DemoOptions) -> None:
    from edgesent.app import demo_cli

    demo_cli(o.artifact, host=o.host, port=o.port, auth=o.auth, model=o.model, engine=o.engine)


def _bench(o: O.BenchOptions) -> None:
    from edgesent.bench import bench

    bench(**o.model_dump())


def _sweep(o: O.SweepOptions) -> None:
    from edgesent.sweep import run_sweep

    run_sweep(o.recipe, trials=o.trials, timeout=o.timeout, storage=o.storage, metric=o.metric, seed=o.seed,
              overrides=o.set or [])


_command("train", O.TrainOptions, _train, "Fine-tune per RECIPE; writes a run folder under exports/.")
_command("export", O.ExportOptions, _export,
         "Merge LoRA, export ONNX, validate against PyTorch, quantize and write an artifact folder.")
_command("predict", O.PredictOptions, _predict, "Classify texts with an artifact (torch-free).")
_command("demo", O.DemoOptions, _demo, "Serve a local Gradio app on the artifact (INT8 when present).")
_command("bench", O.BenchOptions, _bench, "Latency, throughput, size, memory and accuracy of every variant.")
_command("sweep", O.SweepOptions, _sweep, "Bayesian (TPE) hyperparameter search; resumable.")


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
    from edgesent.scoring import predict_cli

    predict_cli(Path(args[1]), args[2:])
    return True


def main(argv: list[str] | None = None) -> None:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from edgesent.errors import EdgesentError, exit_on_error

    args = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if debug:
        os.environ["EDGESENT_DEBUG"] = "1"  # stages read it to let library logs through
    try:
        from typer._click import exceptions as click_errors  # typer >= 0.22 vendors click
    except ImportError:  # pragma: no cover - older typer on click
        from click import exceptions as click_errors

    try:
        if not _fast_predict(args):
            code = app(args=args, prog_name="edgesent", standalone_mode=False)
            if isinstance(code, int) and code:
                sys.exit(code)
    except click_errors.NoArgsIsHelpError as exc:
        print(exc.ctx.get_help())
        sys.exit(2)
    except click_errors.UsageError as exc:  # a value of the wrong type, a missing argument: one line too
        if debug:
            raise
        where = " ".join(["edgesent", *([exc.ctx.info_name] if exc.ctx is not None and exc.ctx.parent else [])])
        print(f"error: {' '.join(exc.format_message().split())} (see {where} --help)", file=sys.stderr)
        sys.exit(exc.exit_code)
    except EdgesentError as exc:
        if debug:
            raise
        exit_on_error(exc)
    except KeyboardInterrupt:
        print("error: interrupted (partial outputs were not moved into place)", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
