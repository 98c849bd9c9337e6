"""Recipe schema: the single source of truth for every option, its default and its meaning.

A recipe is a YAML file validated against `Recipe`. Unknown keys are errors (with the nearest
valid key suggested), values are type-checked, and `--set section.key=value` overrides go through
the same validation. The resolved recipe is written beside every run as `recipe.yaml`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from edgesent.errors import RecipeError


def _increasing(value: list[int]) -> list[int]:
    if any(i < 0 for i in value):
        raise ValueError("layer indices must be >= 0")
    if any(b <= a for a, b in zip(value, value[1:], strict=False)):
        raise ValueError("layer indices must be strictly increasing (sorted, no duplicates)")
    return value


def _three_ratios(value: list[float]) -> list[float]:
    if len(value) != 3 or any(v < 0 for v in value) or abs(sum(value) - 1.0) > 1e-6:
        raise ValueError("must be three non-negative ratios train,validation,test summing to 1")
    return value


LayerIndices = Annotated[list[int], AfterValidator(_increasing)]  # model.keep_layers
SplitRatios = Annotated[list[float], AfterValidator(_three_ratios)]  # data.resplit


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, protected_namespaces=())


class LoraConfig(_Strict):
    r: int = Field(8, gt=0, description="LoRA rank.")
    alpha: int = Field(16, gt=0, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout on the LoRA branch.")
    target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="Module-name suffixes that get LoRA adapters (default: the architecture's attention "
        "projections from edgesent/archs.py, e.g. query,value for BERT/RoBERTa, query_key_value for GPT-NeoX).",
    )


class ModelConfig(_Strict):
    name_or_path: str = Field(
        ...,
        min_length=1,
        description="Hub id (e.g. EleutherAI/pythia-14m) or a local folder in Hugging Face layout.",
    )
    method: Literal["full", "lora", "frozen", "last_block"] = Field(
        "full",
        description="full: train everything; lora: peft LoRA adapters + head; frozen: head only; "
        "last_block: last transformer block + head.",
    )
    head: Literal["default", "mlp"] = Field(
        "default",
        description="default: the architecture's own classification head; mlp: Dropout -> Linear -> GELU -> "
        "Dropout -> Linear in place of a single-Linear head (decoders pool the last non-pad token).",
    )
    head_hidden: int | None = Field(None, gt=0, description="Hidden width of the mlp head (default: model hidden size).")
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0, description="Dropout of the mlp head.")
    head_lr_multiplier: float = Field(1.0, gt=0.0, description="Head learning rate = training.lr x this.")
    pad_token: str | None = Field(
        None,
        description="Token used for padding when the tokenizer has none (e.g. '<|endoftext|>' for GPT-NeoX). "
        "'eos' means the tokenizer's eos token.",
    )
    random_init: bool = Field(
        False,
        description="Build the model from config.json with random weights (for speed/size work on *-arch folders).",
    )
    trust_remote_code: bool = Field(False, description="Allow model code from the hub. Off by default: it runs code.")
    allow_pickle: bool = Field(
        False, description="Allow loading pickled weights (pytorch_model.bin). Off by default: pickle can run code."
    )
    lora: LoraConfig = Field(default_factory=LoraConfig, description="Used when method is lora.")
    keep_layers: LayerIndices | None = Field(
        None,
        min_length=1,
        description="Build the model keeping only these transformer blocks of name_or_path (0-based, increasing; "
        "embeddings and head are copied): e.g. [1, 3, 5] makes a 3-block student of a 6-block model. "
        "name_or_path may be an edgesent run folder, so a student starts from a fine-tuned teacher's own layers.",
    )


class DataConfig(_Strict):
    dataset: str = Field(
        "stanfordnlp/imdb",
        description="Hub id, a local folder holding train/validation/test files (parquet, csv, jsonl), or one file.",
    )
    train_file: str | None = Field(None, description="Explicit train file (overrides dataset's train split).")
    validation_file: str | None = Field(None, description="Explicit validation file.")
    test_file: str | None = Field(None, description="Explicit test file.")
    text_column: str = Field("text", min_length=1, description="Column holding the text.")
    label_column: str = Field("label", min_length=1, description="Column holding the label.")
    labels: list[str] = Field(
        default_factory=lambda: ["negative", "positive"],
        min_length=2,
        description="Label names in id order. Integer labels index this list; string labels must be in it.",
    )
    validation_size: float = Field(
        0.1, gt=0.0, lt=0.5, description="Fraction of train carved out (stratified, seeded) when there is no validation split."
    )
    resplit: SplitRatios | None = Field(
        None, description="Optional full re-split of all rows by ratios train,validation,test (e.g. [0.8, 0.1, 0.1])."
    )
    max_train_samples: int | None = Field(None, gt=0, description="Use a seeded random subset of train.")
    max_eval_samples: int | None = Field(None, gt=0, description="Use a seeded random subset of validation.")
    max_test_samples: int | None = Field(None, gt=0, description="Use a seeded random subset of test.")
    lowercase: bool = Field(False, description="Lowercase texts before tokenizing.")
    max_length: int = Field(256, ge=8, le=8192, description="Tokens per text, special tokens included.")
    truncation: Literal["head", "tail", "head+tail"] = Field(
        "head", description="Which tokens to keep from a long text: the start, the end, or both."
    )
    head_share: float = Field(
        0.25, ge=0.0, le=1.0, description="With head+tail: share of the token budget taken from the start."
    )
    long_text: Literal["truncate", "windows"] = Field(
        "truncate",
        description="Texts longer than max_length at inference (runtime, predict, demo, export gate, bench): "
        "truncate (the `truncation` strategy) or windows (score overlapping windows and pool their logits). "
        "Training always uses `truncation`.",
    )
    window: int | None = Field(
        None, ge=8, le=8192, description="With windows: tokens per window, special tokens included (default: "
        "max_length); at most the model's positions."
    )
    stride: int | None = Field(
        None, gt=0, description="With windows: tokens between window starts, at most the window's content tokens "
        "(default: 3/4 of them). The last window is aligned to the text's end."
    )
    max_windows: int | None = Field(
        None, ge=1, description="With windows: cap per text (default: none). Past it, max_windows windows are spread "
        "evenly from the text's start to its end (gaps instead of overlaps); 1 = plain truncation."
    )
    pool: Literal["mean"] = Field("mean", description="With windows: how window logits become a text's logits.")

    @field_validator("stride")
    @classmethod
    def _stride(cls, value, info):
        window = info.data.get("window") or info.data.get("max_length")
        if value is not None and window is not None and value > window:
            raise ValueError(f"stride {value} is larger than the window ({window} tokens): text would be skipped")
        return value


class TrainingConfig(_Strict):
    epochs: float = Field(3, gt=0, description="Training epochs.")
    batch_size: int = Field(16, gt=0, description="Per-device train batch size.")
    eval_batch_size: int | None = Field(None, gt=0, description="Per-device eval batch size (default: 2 x batch_size).")
    grad_accum: int = Field(1, gt=0, description="Gradient accumulation steps.")
    lr: float = Field(5e-5, gt=0.0, description="Peak learning rate of the backbone (and LoRA).")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay.")
    warmup_ratio: float = Field(0.0, ge=0.0, lt=1.0, description="Fraction of steps for linear warm-up.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "linear", description="Learning-rate schedule after warm-up."
    )
    max_grad_norm: float = Field(1.0, gt=0.0, description="Gradient clipping norm.")
    precision: Literal["auto", "fp32", "fp16", "bf16"] = Field(
        "auto",
        description="auto: bf16 on CUDA that supports it, else fp16 on CUDA, fp32 on CPU. bf16 on a CPU with "
        "native bf16 (avx512_bf16 / AMX) is mixed precision with fp32 master weights: about 2x faster here "
        "(bench/train_speed.py).",
    )
    metric_for_best: Literal["accuracy", "f1", "loss"] = Field(
        "accuracy", description="Validation metric that picks the kept checkpoint."
    )
    early_stopping_patience: int | None = Field(None, gt=0, description="Stop after N evaluations without improvement.")
    eval_steps: int | None = Field(None, gt=0, description="Evaluate (and checkpoint) every N steps instead of every epoch.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept for --resume (the best one is always kept).")
    logging_steps: int = Field(20, gt=0, description="Log loss every N steps.")
    max_steps: int | None = Field(None, gt=0, description="Stop after N optimizer steps (overrides epochs).")
    group_by_length: bool = Field(
        False,
        description="Batch texts of similar length together (transformers' LengthGroupedSampler): less padding, "
        "faster epochs on long-tailed data such as IMDB; order stays random across groups.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes.")
    threads: int | None = Field(None, gt=0, description="torch CPU threads (default: torch's choice).")


class DistillConfig(_Strict):
    """Knowledge distillation: train the model on a teacher's soft labels as well as the gold labels."""

    teacher: str = Field(
        ..., min_length=1,
        description="The teacher: an edgesent run folder, an artifact folder (fastest: torch-free), or a model "
        "folder/hub id of a sequence classifier with the same label names as data.labels.",
    )
    temperature: float = Field(2.0, gt=0.0, description="Softmax temperature T of the soft loss.")
    alpha: float = Field(
        0.5, ge=0.0, le=1.0,
        description="loss = alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * cross-entropy on the gold label.",
    )
    batch_size: int = Field(64, gt=0, description="Texts per batch when computing the teacher's logits (once, cached).")


class SweepParam(_Strict):
    type: Literal["categorical", "float", "int"] = Field(..., description="Kind of search dimension.")
    choices: list[Any] | None = Field(None, description="For categorical.")
    low: float | None = Field(None, description="Lower bound (float/int).")
    high: float | None = Field(None, description="Upper bound (float/int).")
    log: bool = Field(False, description="Sample on a log scale.")

    @model_validator(mode="after")
    def _check(self):
        if self.type == "categorical" and not self.choices:
            raise ValueError("categorical needs choices")
        if self.type in ("float", "int"):
            if self.low is None or self.high is None or self.low > self.high:
                raise ValueError(f"{self.type} needs low <= high")
            if self.log and self.low <= 0:
                raise ValueError("log scale needs low > 0")
        return self


class SweepConfig(_Strict):
    """Search space for `edgesent sweep`: keys are recipe fields (section.key), values their ranges."""

    space: dict[str, SweepParam] = Field(default_factory=dict, description="recipe field -> search dimension.")
    metric: Literal["accuracy", "f1", "loss"] = Field("accuracy", description="Validation metric to optimise.")
    pruner: Literal["median", "successive_halving", "none"] = Field("median", description="Stops bad trials early.")


class Recipe(_Strict):
    name: str = Field(..., min_length=1, pattern=r"^[A-Za-z0-9_.-]+$", description="Run name prefix.")
    seed: int = Field(42, description="Seed for splits, init and data order.")
    output_dir: str = Field("exports", description="Root folder for runs and artifacts.")
    model: ModelConfig
    data: DataConfig = Field(default_factory=DataConfig)
    training: TrainingConfig = Field(default_factory=TrainingConfig)
    sweep: SweepConfig | None = Field(None, description="Search space for edgesent sweep.")
    distill: DistillConfig | None = Field(None, description="Distil from a teacher (edgesent/distill.py).")

    @model_validator(mode="after")
    def _cross_checks(self):
        if self.sweep:
            for key in self.sweep.space:
                _check_path(self, key)
        return self

    def to_yaml(self) -> str:
        data = self.model_dump(mode="json")
        for optional in ("sweep", "distill"):  # no `sweep: null` line in run recipes and sweep best recipes
            if data.get(optional) is None:
                data.pop(optional, None)
        return yaml.safe_dump(data, sort_keys=False)


def _check_path(recipe: BaseModel, dotted: str) -> None:
    node: Any = recipe
    for part in dotted.split("."):
        if not isinstance(node, BaseModel) or part not in type(node).model_fields:
            raise ValueError(f"sweep.space key {dotted!r} is not a recipe field")
        node = getattr(node, part)


# --------------------------------------------------------------------------------------------
# Loading, overrides and one-line errors


def _model_at(path: tuple) -> type[BaseModel] | None:
    """The pydantic model class found by walking `path` (of field names) from Recipe."""
    cls: Any = Recipe
    for part in path:
        if not (isinstance(cls, type) and issubclass(cls, BaseModel)) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        inner = [a for a in getattr(ann, "__args__", (ann,)) if isinstance(a, type) and issubclass(a, BaseModel)]
        cls = inner[0] if inner else ann
    return cls if isinstance(cls, type) and issubclass(cls, BaseModel) else None


def _all_keys() -> list[str]:
    out = []

    def walk(cls, prefix):
        for name in cls.model_fields:
            out.append(prefix + name)
            sub = _model_at(tuple((prefix + name).split(".")))
            if sub is not None and sub is not SweepConfig:
                walk(sub, prefix + name + ".")

    walk(Recipe, "")
    return out


# Names other tools use for our keys (transformers TrainingArguments, common habits).
_ALIASES = {
    "learning_rate": "lr", "num_train_epochs": "epochs", "num_epochs": "epochs", "per_device_train_batch_size": "batch_size",
    "train_batch_size": "batch_size", "gradient_accumulation_steps": "grad_accum", "lr_scheduler_type": "scheduler",
    "model_name": "name_or_path", "model_name_or_path": "name_or_path", "max_seq_length": "max_length",
}


def _suggest(loc: tuple) -> str:
    bad = str(loc[-1])
    parent = _model_at(tuple(loc[:-1]))
    candidates = list(parent.model_fields) if parent else []
    alias = _ALIASES.get(bad.lower())
    if alias:
        if alias in candidates:
            return ".".join([*map(str, loc[:-1]), alias])
        bad = alias
    # the exact name in another section (e.g. `lr` under model instead of training) beats a fuzzy match here
    exact = [k for k in _all_keys() if k.split(".")[-1] == bad]
    if exact and bad not in candidates:
        return exact[0]
    close = difflib.get_close_matches(bad, candidates, n=1, cutoff=0.6)
    if close:
        return ".".join([*map(str, loc[:-1]), close[0]])
    # maybe it lives in another section (e.g. `lr` under model instead of training)
    full = [k for k in _all_keys() if k.split(".")[-1] == bad or difflib.get_close_matches(bad, [k.split(".")[-1]], cutoff=0.8)]
    return full[0] if full else ""


def format_validation_error(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    loc = tuple(p for p in err["loc"] if not isinstance(p, int) or True)
    key = ".".join(str(p) for p in loc) or "(top level)"
    if err["type"] == "extra_forbidden":
        hint = _suggest(loc)
        msg = f"{source}: unknown key '{key}'" + (f" (did you mean '{hint}'?)" if hint else "")
    elif err["type"] == "missing":
        msg = f"{source}: missing required key '{key}'"
    else:
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        msg = f"{source}: invalid value for '{key}': {shown} ({err['msg']})"
    more = len(exc.errors()) - 1
    return msg + (f" [+{more} more problem{'s' if more > 1 else ''}]" if more else "")


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise RecipeError(f"--set {text!r}: expected section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key or any(not p for p in key.split(".")):
        raise RecipeError(f"--set {text!r}: expected section.key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    if isinstance(value, str) and "," in value and key.endswith(("target_modules", "labels")):
        value = [v.strip() for v in value.split(",")]
    return key.split("."), value


def apply_overrides(data: dict, overrides: list[str] | None) -> dict:
    for text in overrides or []:
        parts, value = parse_override(text)
        node = data
        for part in parts[:-1]:
            nxt = node.get(part)
            if nxt is None:
                nxt = node[part] = {}
            if not isinstance(nxt, dict):
                raise RecipeError(f"--set {text!r}: '{part}' is not a section")
            node = nxt
        node[parts[-1]] = value
    return data


def validate_recipe(data: Any, source: str = "recipe") -> Recipe:
    if data is None:
        raise RecipeError(f"{source}: the recipe is empty")
    if not isinstance(data, dict):
        raise RecipeError(f"{source}: expected a mapping of sections at the top level, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(format_validation_error(exc, source)) from None


def load_recipe(path: str | Path, overrides: list[str] | None = None) -> Recipe:
    """Read, override and validate a recipe file; raise RecipeError with one line on any problem."""
    path = Path(path)
    if path.is_dir():
        raise RecipeError(f"{path} is a folder, not a recipe file; give a YAML file such as {path}/recipe.yaml")
    if not path.is_file():
        raise RecipeError(f"recipe file not found: {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RecipeError(f"{path}: not a UTF-8 text file") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or "syntax error"
        raise RecipeError(f"{path}: YAML syntax error{where}: {problem}") from None
    if data is None:
        raise RecipeError(f"{path}: the recipe is empty")
    if isinstance(data, dict):
        data = apply_overrides(data, overrides)
    return validate_recipe(data, str(path))


def with_absolute_paths(recipe: Recipe) -> Recipe:
    """Local model/data/teacher paths made absolute (a run's recipe.yaml then works from any folder); hub ids kept."""
    def absolute(value: str | None) -> str | None:
        return str(Path(value).expanduser().resolve()) if value and Path(value).expanduser().exists() else value

    data = {k: absolute(getattr(recipe.data, k)) for k in ("dataset", "train_file", "validation_file", "test_file")}
    update = {"model": recipe.model.model_copy(update={"name_or_path": absolute(recipe.model.name_or_path)}),
              "data": recipe.data.model_copy(update=data)}
    if recipe.distill is not None:
        update["distill"] = recipe.distill.model_copy(update={"teacher": absolute(recipe.distill.teacher)})
    return recipe.model_copy(update=update)


def save_recipe(recipe: Recipe, path: str | Path, header: str | None = None) -> Path:
    from edgesent.errors import atomic_write_text

    text = recipe.to_yaml()
    if header:
        text = "".join(f"# {line}\n" for line in header.splitlines()) + text
    return atomic_write_text(path, text)
