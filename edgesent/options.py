"""Every command's options, declared once: name, type, default, bounds and help.

Each command has one options model here (LitGPT's typed argument groups, in pydantic). The CLI
(`edgesent/cli.py`) builds its typer options from these fields, the stage functions validate
their keyword arguments through the same model, and a bad value is one line naming the option,
checked before any work starts:

    error: --max-drop: must be at least 0 (got -1.0)

Positional arguments are marked `argument=True`; comma-separated lists (`--batch-sizes 1,8`) are
parsed here too. Light to import: pydantic only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edgesent.errors import EdgesentError


def Arg(default: Any = ..., help: str = "", **kwargs) -> Any:  # noqa: N802 - reads like Field
    """A positional command-line argument."""
    return Field(default, description=help, json_schema_extra={"argument": True}, **kwargs)


def Opt(default: Any = None, help: str = "", *, flag: str | None = None, **kwargs) -> Any:  # noqa: N802
    """A `--option` (its name from the field, or `flag`)."""
    extra = {"flag": flag} if flag else None
    return Field(default, description=help, json_schema_extra=extra, **kwargs)


def _text(value):
    """Paths given to a str option (e.g. a run folder that may also be a hub id) become text."""
    import os

    return os.fspath(value) if isinstance(value, os.PathLike) else value


def _ints(value):
    """`"1,8,32"` -> [1, 8, 32]; lists pass through."""
    if isinstance(value, str):
        try:
            return [int(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated whole numbers, got {value!r}") from None
    return value


def _floats(value):
    """`"0.15,0.6"` -> [0.15, 0.6]; lists pass through."""
    if isinstance(value, str):
        try:
            return [float(x) for x in value.split(",") if x.strip()]
        except ValueError:
            raise ValueError(f"expected comma-separated numbers, got {value!r}") from None
    return value


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=(), arbitrary_types_allowed=True,
                              defer_build=True)  # schemas built on first use: `--help` never pays for them

    @classmethod
    def parse(cls, values: dict[str, Any] | None = None, **kwargs) -> Options:
        """Validate; the first problem becomes one EdgesentError line naming the option."""
        try:
            return cls.model_validate({**(values or {}), **kwargs})
        except ValidationError as exc:
            raise EdgesentError(describe(cls, exc)) from None

    @classmethod
    def flag(cls, name: str) -> str:
        field = cls.model_fields[name]
        extra = field.json_schema_extra or {}
        if extra.get("argument"):
            return name.upper()
        return extra.get("flag") or "--" + name.replace("_", "-")


def describe(cls: type[Options], exc: ValidationError) -> str:
    err = exc.errors()[0]
    name = str(err["loc"][0]) if err["loc"] else "?"
    where = cls.flag(name) if name in cls.model_fields else f"--{name.replace('_', '-')}"
    if err["type"] == "extra_forbidden":
        return f"unknown option {where}"
    ctx = err.get("ctx") or {}
    bounds = {"greater_than_equal": "must be at least {ge}", "greater_than": "must be more than {gt}",
              "less_than_equal": "must be at most {le}", "less_than": "must be less than {lt}"}
    msg = bounds[err["type"]].format(**ctx) if err["type"] in bounds else err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if value is None or err["type"] == "missing" or "got" in msg:
        return f"{where}: {msg}"
    return f"{where}: {msg} (got {value!r})"


# --------------------------------------------------------------------------------------------


class ExportOptions(Options):
    source: str | None = Arg(None, "Run folder, HF model folder or hub id (default: newest run in exports/).")
    int8: bool = Opt(False, "Also write an INT8 model, gated on accuracy.")
    fp16: bool = Opt(False, "Also write an fp16 model for GPU execution providers.")
    static: bool = Opt(False, "Static INT8 (QDQ) calibrated on training texts.")
    openvino: bool = Opt(False, 'Also write an OpenVINO INT8 model (NNCF static, gated on accuracy; '
                                'needs pip install "edgesent[openvino]").')
    calibration: int = Opt(256, "Calibration texts for --static and --openvino.", ge=1, le=100_000)
    max_drop: float = Opt(0.5, "Largest accepted INT8 accuracy drop, in points.", ge=0, le=100)
    eval_data: str | None = Opt(None, "Data (file/folder/hub id) for the accuracy gate.")
    eval_limit: int | None = Opt(None, "Evaluate the gate on at most N texts.", ge=1)
    out: Path | None = Opt(None, "Artifact folder (default: <run>/artifact).")
    overwrite: bool = Opt(False, "Replace an existing artifact folder.")
    random_head_ok: bool = Opt(False, "Export even if the classification head was never trained (random; for "
                                      "speed work on architecture-only folders).")
    set: list[str] | None = Opt(None, "Override an inference-time recipe key of a run, e.g. data.long_text=windows "
                                "(data.long_text, window, stride, max_windows, pool; repeatable).")

    _paths = field_validator("source", "eval_data", mode="before")(_text)


class BenchOptions(Options):
    target: str | None = Arg(None, "Artifact or run folder (default: newest export).")
    device: Literal["cpu", "cuda", "all"] = Opt("cpu", "cpu, cuda or all.")
    batch_sizes: list[int] = Opt([1, 8, 32], "Comma-separated batch sizes.", min_length=1)
    seq_lens: list[int] = Opt([32, 128, 256, 512], "Comma-separated sequence lengths.", min_length=1)
    threads: list[int] = Opt([1, 2], "Comma-separated thread counts.", min_length=1)
    data: str | None = Opt(None, "Data set (file/folder/hub id) for accuracy and throughput.")
    split: str = Opt("test", "Split of --data.")
    limit: int | None = Opt(None, "Use at most N texts of --data.", ge=1)
    budget: float = Opt(2.0, "Seconds of timed runs per latency cell.", gt=0, le=3600)
    out: Path | None = Opt(None, "Output folder (default: <target>/bench-<timestamp>).")
    llm_endpoint: str | None = Opt(None, "OpenAI-compatible chat completions URL (e.g. https://api.openai.com/v1): "
                                   "adds the LLM-API baseline row on the --data texts.")
    llm_model: str | None = Opt(None, "Model name sent to --llm-endpoint (required with it).", validate_default=True)
    llm_shots: int = Opt(0, "Few-shot examples taken from the train split of --data (0: zero-shot).", ge=0, le=200)
    llm_batch: int = Opt(10, "Reviews per request.", ge=1, le=500)
    llm_chars: int = Opt(500, "Characters sent per review (its last N).", ge=1, le=1_000_000)
    llm_price_per_mtok: list[float] | None = Opt(None, "USD per million input,output tokens, e.g. 0.15,0.6: "
                                                 "adds the cost per 1,000 reviews.")
    llm_key_env: str = Opt("OPENAI_API_KEY", "Environment variable holding the API key (the key is never written).",
                           pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    llm_concurrency: int = Opt(4, "Requests in flight at most.", ge=1, le=256)
    llm_timeout: float = Opt(60.0, "Seconds per request before it is retried.", gt=0, le=3600)

    _lists = field_validator("batch_sizes", "seq_lens", "threads", mode="before")(_ints)
    _paths = field_validator("target", "data", mode="before")(_text)
    _prices = field_validator("llm_price_per_mtok", mode="before")(_floats)

    @field_validator("llm_endpoint")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        from urllib.parse import urlsplit

        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s) URL such as https://api.openai.com/v1, got {value!r}")
        if parts.username or parts.password:
            raise ValueError("no credentials in the URL: put the key in the environment (see --llm-key-env)")
        return value

    @field_validator("llm_model")
    @classmethod
    def _model_with_endpoint(cls, value: str | None, info) -> str | None:
        endpoint = info.data.get("llm_endpoint")
        if endpoint and not value:
            raise ValueError("required with --llm-endpoint (the model name the endpoint serves)")
        if value and not endpoint:
            raise ValueError("needs --llm-endpoint")
        return value

    @field_validator("llm_price_per_mtok")
    @classmethod
    def _two_prices(cls, value: list[float] | None) -> list[float] | None:
        if value is not None and (len(value) != 2 or any(v < 0 for v in value)):
            raise ValueError("expected two non-negative prices IN,OUT in USD per million tokens, e.g. 0.15,0.6")
        return value

    @field_validator("batch_sizes", "seq_lens", "threads")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(v < 1 for v in value):
            raise ValueError(f"must be positive whole numbers, got {','.join(map(str, value))}")
        return value


class PredictOptions(Options):
    artifact: Path = Arg(..., "Artifact folder (from edgesent export).")
    texts: list[str] | None = Arg(None, "Texts to classify.")
    file: Path | None = Opt(None, "Score a .csv/.jsonl/.parquet/.txt file instead.")
    column: str = Opt("text", "Text column of --file.", min_length=1)
    out: Path | None = Opt(None, "Write scores here (.parquet/.csv/.jsonl).")
    model: str | None = Opt(None, "int8, fp32, fp16 (bf16 with openvino) or a file name.")
    threads: int | None = Opt(None, "Engine threads (default: one per core; capped at the cores).", ge=1)
    batch_size: int = Opt(32, "Texts per batch.", ge=1, le=4096)
    engine: Literal["onnxruntime", "openvino", "ray"] | None = Opt(
        None, "onnxruntime or openvino (default: the artifact's, set by export --openvino); ray scores --file on "
        "Ray Data into the folder --out (each actor with the artifact's engine).")
    ray_address: str | None = Opt(None, "With --engine ray: join this Ray cluster (default: start a local Ray).")
    workers: int | None = Opt(None, "With --engine ray: scoring actors (default: CPUs / threads).", ge=1, le=100_000)
    overwrite: bool = Opt(False, "Replace an existing --out file.")
    prefix: str = Opt("", "Prefix for the added columns (e.g. pred_ -> pred_label), to keep input columns "
                          "named label, confidence, prob_* or empty.", pattern=r"^[\w.-]*$")


class DemoOptions(Options):
    artifact: Path = Arg(..., "Artifact folder.")
    host: str = Opt("127.0.0.1", "Address to bind. Keep 127.0.0.1 unless you mean to expose it.", min_length=1)
    port: int = Opt(7860, "Port (0 = first free).", ge=0, le=65535)
    auth: str | None = Opt(None, "user:pass to require a login.")
    model: str | None = Opt(None, "int8, fp32 or a file name.")
    engine: Literal["onnxruntime", "openvino"] | None = Opt(
        None, "onnxruntime or openvino (default: the artifact's, set by export --openvino).")


class TrainOptions(Options):
    recipe: Path = Arg(..., "Recipe YAML, e.g. recipes/pythia14m.yaml.")
    set: list[str] | None = Opt(None, "Override a field: section.key=value (repeatable).")
    seeds: list[int] | None = Opt(None, "Run once per seed, e.g. 1,2,3, and report mean ± std.")
    resume: bool = Opt(False, "Continue the newest unfinished run of this recipe from its last checkpoint.")
    out: Path | None = Opt(None, "Run folder (default: <output_dir>/<name>-<timestamp>).")
    dry_run: bool = Opt(False, "Validate the recipe and overrides, print what would be loaded and the trainable "
                        "parameters (from a local config), then exit without downloading or training.")

    _lists = field_validator("seeds", mode="before")(_ints)


class SweepOptions(Options):
    recipe: Path = Arg(..., "Recipe YAML with a sweep: section.")
    trials: int = Opt(20, "Trials to run (in total, counting finished ones on resume).", ge=1, le=100_000)
    timeout: float | None = Opt(None, "Stop starting new trials after S seconds.", gt=0)
    storage: str | None = Opt(None, "Optuna storage URL (default: sqlite under exports/sweeps/).")
    metric: Literal["accuracy", "f1", "loss"] | None = Opt(None, "Metric to maximise (default: the recipe's).")
    seed: int = Opt(0, "Sampler seed.")
    set: list[str] | None = Opt(None, "Override a field: section.key=value (repeatable).")
