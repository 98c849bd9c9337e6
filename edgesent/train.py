"""`edgesent train`: fine-tune a sentiment classifier per recipe with `transformers.Trainer`.

Flow: check the output folder is writable -> read and check the data -> load tokenizer and model
(refusing bad folders with one line) -> only then create the run folder -> train, evaluating on
validation every epoch (or every `eval_steps`) and keeping the best checkpoint -> evaluate the best
model on validation and test -> write the run folder (layout in `edgesent/model.py`).

Decisions:
- The stock `Trainer` does the loop, mixed precision, accumulation, schedules, checkpointing,
  `--resume` and DDP (so the same code runs under `torchrun`/`accelerate launch`). It is subclassed
  only to build the optimizer's parameter groups: the head learns at `lr x model.head_lr_multiplier`,
  and biases/LayerNorm weights get no weight decay (Trainer's own `get_decay_parameter_names`).
- A `distill:` section swaps in edgesent/distill.py's loss, dataset and collator (teacher logits cached).
- Under several processes every rank needs the same run folder; rank 0 picks the name and
  broadcasts it. Only rank 0 writes recipe, tokenizer, model, metrics and prints the summary.
- The final model is written under a temporary name and renamed (`errors.atomic_dir`), so a
  killed run never leaves a half-written `model/`. `--resume` picks the newest run of the recipe
  that has a checkpoint but no `metrics.json` (i.e. did not finish).
- Reported metrics: accuracy, and precision/recall/F1 of the positive class for two labels (macro averages
  for more), from scikit-learn; test also gets the confusion matrix and the full classification report.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import time
from datetime import datetime
from pathlib import Path

from edgesent import distill
from edgesent.config import Recipe, load_recipe, save_recipe, with_absolute_paths
from edgesent.errors import (
    DataError,
    EdgesentError,
    RecipeError,
    atomic_dir,
    atomic_write_text,
    check_writable,
)
from edgesent.machine import check_threads, peak_memory_mb
from edgesent.metrics import METRIC_NAMES, classification_metrics
from edgesent.quiet import debug, interactive, quiet_libraries, quiet_trainer

logger = logging.getLogger("edgesent")


def _metrics_fn(names: list[str]):
    def compute(eval_pred) -> dict:
        logits, labels = eval_pred.predictions, eval_pred.label_ids
        logits = logits[0] if isinstance(logits, tuple) else logits
        return classification_metrics(labels, logits.argmax(-1), names)

    return compute


# --------------------------------------------------------------------------------------------
# The Trainer: only the optimizer's parameter groups differ


def parameter_groups(model, lr: float, weight_decay: float, head_lr_multiplier: float, decay_names) -> list[dict]:
    """Trainable parameters in up to four groups: (backbone | head) x (decay | no decay)."""
    from edgesent.model import head_parameter_names

    head = head_parameter_names(model)
    decay = set(decay_names)
    groups: dict[tuple[bool, bool], list] = {}
    for name, param in model.named_parameters():
        if param.requires_grad:
            groups.setdefault((name in head, name in decay), []).append(param)
    return [
        {"params": params, "lr": lr * (head_lr_multiplier if is_head else 1.0),
         "weight_decay": weight_decay if has_decay else 0.0}
        for (is_head, has_decay), params in sorted(groups.items())
    ]


def _trainer_class():
    from transformers import Trainer

    class EdgesentTrainer(Trainer):
        """Trainer whose optimizer gives the classification head its own learning rate."""

        def __init__(self, *args, head_lr_multiplier: float = 1.0, **kwargs):
            super().__init__(*args, **kwargs)
            self.head_lr_multiplier = head_lr_multiplier

        def create_optimizer(self):
            if self.optimizer is None:
                groups = parameter_groups(self.model, self.args.learning_rate, self.args.weight_decay,
                                          self.head_lr_multiplier, self.get_decay_parameter_names(self.model))
                optimizer_cls, kwargs = self.get_optimizer_cls_and_kwargs(self.args, self.model)
                kwargs.pop("lr", None)  # each group carries its own
                self.optimizer = optimizer_cls(groups, lr=self.args.learning_rate, **kwargs)
            return self.optimizer

    return EdgesentTrainer


def _log_callback():
    from transformers import TrainerCallback

    class LogToFile(TrainerCallback):
        """Sends Trainer logs (loss, lr, eval metrics) to the "edgesent" logger, i.e. to train.log."""

        def __init__(self):
            self.tokens_at_start = 0

        def on_train_begin(self, args, state, control, **kwargs):
            self.tokens_at_start = state.num_input_tokens_seen

        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs:
                logger.info("step %d: %s", state.global_step, json.dumps(logs, default=str))

    return LogToFile()


# --------------------------------------------------------------------------------------------
# Run folders


def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def _is_main_process() -> bool:
    return int(os.environ.get("RANK", "0")) == 0


def _shared(value):
    """`value` as rank 0 has it (run folder names must agree across torchrun processes)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return value
    import torch
    from accelerate import PartialState
    from accelerate.utils import broadcast_object_list

    # joins the process group torchrun prepared; on CPU, accelerate only goes multi-process (gloo) with cpu=True
    PartialState(cpu=not torch.cuda.is_available())
    box = [value]
    broadcast_object_list(box, from_process=0)
    return box[0]


def _new_run_dir(recipe: Recipe, suffix: str = "", stamp: str | None = None) -> Path:
    root = Path(recipe.output_dir)
    base = f"{recipe.name}-{stamp or _timestamp()}{suffix}"
    path, n = root / base, 2
    while path.exists():
        path, n = root / f"{base}-{n}", n + 1
    return path


def find_resumable(recipe: Recipe, out: Path | None = None) -> tuple[Path, str]:
    """(run folder, last checkpoint) of the newest unfinished run of this recipe."""
    from transformers.trainer_utils import get_last_checkpoint

    if out is not None:
        candidates = [Path(out)]
    else:
        root = Path(recipe.output_dir)
        candidates = sorted((p for p in root.glob(f"{recipe.name}-*") if p.is_dir()),
                            key=lambda p: p.stat().st_mtime, reverse=True)
    for run in candidates:
        if (run / "metrics.json").exists() or not (run / "checkpoints").is_dir():
            continue
        last = get_last_checkpoint(str(run / "checkpoints"))
        if last:
            return run, last
    where = out if out is not None else f"{recipe.output_dir}/{recipe.name}-*"
    raise EdgesentError(f"--resume: no unfinished run with a checkpoint in {where}; start a new run without --resume")


@contextlib.contextmanager
def _log_to(path: Path):
    """Copy the "edgesent" and transformers loggers into `path` for the duration of the run."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    ours, theirs = logging.getLogger("edgesent"), logging.getLogger("transformers")
    old_level = ours.level
    ours.setLevel(logging.INFO)
    ours.addHandler(handler)
    theirs.addHandler(handler)
    try:
        yield
    finally:
        ours.removeHandler(handler)
        theirs.removeHandler(handler)
        ours.setLevel(old_level)
        handler.close()


# --------------------------------------------------------------------------------------------
# Settings


def resolve_precision(precision: str) -> str:
    """auto -> bf16 on CUDA that supports it, fp16 on other CUDA, fp32 on CPU."""
    import torch

    cuda = torch.cuda.is_available()
    bf16_ok = cuda and torch.cuda.is_bf16_supported()
    if precision == "auto":
        return "bf16" if bf16_ok else "fp16" if cuda else "fp32"
    if precision == "fp16" and not cuda:
        raise RecipeError("training.precision fp16 needs a CUDA GPU; use auto or fp32 on CPU")
    if precision == "bf16" and cuda and not bf16_ok:
        raise RecipeError("training.precision bf16 is not supported by this GPU; use auto or fp16")
    return precision


def training_arguments(recipe: Recipe, checkpoints: Path, precision: str):
    import torch
    from transformers import TrainingArguments

    t = recipe.training
    strategy = "steps" if t.eval_steps else "epoch"
    best = "loss" if t.metric_for_best == "loss" else t.metric_for_best
    return TrainingArguments(
        output_dir=str(checkpoints),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.eval_batch_size or 2 * t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.lr,
        weight_decay=t.weight_decay,
        warmup_ratio=t.warmup_ratio,
        lr_scheduler_type=t.scheduler,
        max_grad_norm=t.max_grad_norm,
        bf16=precision == "bf16",
        use_cpu=not torch.cuda.is_available(),  # bf16 autocast on CPU, and gloo DDP under torchrun (accelerate MULTI_CPU)
        fp16=precision == "fp16",
        eval_strategy=strategy,
        save_strategy=strategy,
        eval_steps=t.eval_steps,
        save_steps=t.eval_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=True,
        metric_for_best_model=best,
        greater_is_better=best != "loss",
        logging_steps=t.logging_steps,
        logging_first_step=True,
        seed=recipe.seed,
        dataloader_num_workers=t.num_workers,
        group_by_length=t.group_by_length,
        remove_unused_columns=False,
        dataloader_pin_memory=torch.cuda.is_available(),
        label_names=["labels"],
        include_num_input_tokens_seen="non_padding",
        report_to=[],
        save_safetensors=True,
        **({} if debug() else {"disable_tqdm": not interactive()}),  # no bars in log files
    )


# --------------------------------------------------------------------------------------------
# Training


def train(recipe: Recipe, out: str | os.PathLike | None = None, resume: bool = False, callbacks=None) -> Path:
    """Train per `recipe`; return the run folder (recipe.yaml, tokenizer/, model/ or adapter/, metrics.json ...)."""
    quiet_libraries()  # before torch/transformers load: some chatter comes at import time
    import torch
    from transformers import EarlyStoppingCallback, set_seed

    from edgesent.archs import arch_for
    from edgesent.data import PadCollator, TokenizedDataset, load_splits, make_preprocessor
    from edgesent.model import build_model, count_parameters, load_tokenizer

    start = time.time()
    main = _is_main_process()
    if out is not None and Path(out).is_file():
        raise EdgesentError(f"--out {out} is a file, not a folder; choose a folder path for the run")
    check_writable(Path(out).parent if out is not None else recipe.output_dir)
    if recipe.model.trust_remote_code and main:
        print(f"warning: model.trust_remote_code is on: this runs Python code from '{recipe.model.name_or_path}'")
    if recipe.training.threads:
        torch.set_num_threads(check_threads(recipe.training.threads, "training.threads"))
    precision = resolve_precision(recipe.training.precision)

    # Everything that can be refused is checked before the run folder exists.
    if resume:
        run_dir, checkpoint = find_resumable(recipe, Path(out) if out is not None else None)
    else:
        run_dir, checkpoint = Path(out) if out is not None else None, None
        if run_dir is not None and run_dir.exists() and any(run_dir.iterdir()):
            raise EdgesentError(f"{run_dir} already exists and is not empty; choose another --out")
    labels = list(recipe.data.labels)
    teacher = distill.resolve_teacher(recipe) if recipe.distill else None
    splits = load_splits(recipe)
    train_split = splits["train"]
    if len(train_split) < recipe.training.batch_size:
        raise DataError(
            f"data: train ({train_split.origin}) has {len(train_split)} rows, fewer than training.batch_size "
            f"{recipe.training.batch_size}; add data or lower the batch size"
        )
    m = recipe.model
    tokenizer = load_tokenizer(m.name_or_path, m.pad_token, m.trust_remote_code)
    set_seed(recipe.seed)
    model = build_model(recipe, labels, tokenizer)
    preprocessor = make_preprocessor(tokenizer, recipe.data, max_tokens=arch_for(model.config).max_tokens(model.config))
    trainable, total = count_parameters(model)
    datasets = {name: TokenizedDataset(split, preprocessor) for name, split in splits.items()}
    collator, trainer_cls = PadCollator(preprocessor), _trainer_class()
    if teacher is not None:  # teacher logits once per training text (cached), carried by each example
        soft, cache, reused = distill.teacher_logits(recipe, teacher, train_split.texts)
        datasets["train"] = distill.DistillDataset(datasets["train"], soft)
        collator = distill.collator(collator)
        trainer_cls = distill.trainer_class(trainer_cls, recipe.distill.temperature, recipe.distill.alpha)

    run_dir = Path(_shared(str(run_dir or _new_run_dir(recipe))))
    args = training_arguments(recipe, run_dir / "checkpoints", precision)  # may still refuse: before mkdir
    run_dir.mkdir(parents=True, exist_ok=True)
    if main:
        save_recipe(with_absolute_paths(recipe), run_dir / "recipe.yaml", header=f"Resolved recipe of this run. Reproduce: edgesent train {run_dir / 'recipe.yaml'}")
        tokenizer.save_pretrained(run_dir / "tokenizer")

    log_callback = _log_callback()
    extra = [log_callback, *(callbacks or [])]
    if recipe.training.early_stopping_patience:
        extra.append(EarlyStoppingCallback(early_stopping_patience=recipe.training.early_stopping_patience))
    trainer = trainer_cls(
        model=model,
        args=args,
        train_dataset=datasets["train"],
        eval_dataset=datasets["validation"],
        data_collator=collator,
        compute_metrics=_metrics_fn(labels),
        callbacks=extra,
        head_lr_multiplier=m.head_lr_multiplier,
    )
    quiet_trainer(trainer, METRIC_NAMES)
    device = str(args.device)
    with _log_to(run_dir / "train.log") if main else contextlib.nullcontext():
        logger.info("run %s: %d train / %d validation / %d test rows, %s of %s parameters trainable, precision %s",
                    run_dir, len(train_split), len(splits["validation"]), len(splits["test"]),
                    f"{trainable:,}", f"{total:,}", precision)
        if checkpoint:
            logger.info("resuming from %s", checkpoint)
        result = trainer.train(resume_from_checkpoint=checkpoint)
        validation = trainer.evaluate(datasets["validation"], metric_key_prefix="eval")
        prediction = trainer.predict(datasets["test"])
        tokens = trainer.state.num_input_tokens_seen - log_callback.tokens_at_start
        runtime = result.metrics.get("train_runtime") or (time.time() - start)
        metrics = {
            "validation": {k: validation[f"eval_{k}"] for k in (*METRIC_NAMES, "loss") if f"eval_{k}" in validation},
            "test": classification_metrics(prediction.label_ids, prediction.predictions.argmax(-1), labels, full=True),
            "wall_time_s": round(time.time() - start, 2),
            "train_tokens_per_s": round(tokens / runtime, 1) if runtime else None,
            "peak_memory_mb": round(peak_memory_mb(device), 1),
            "trainable_params": trainable,
            "total_params": total,
            "trainable_pct": round(100 * trainable / total, 4),
            "global_step": trainer.state.global_step,
            "best_checkpoint": trainer.state.best_model_checkpoint,
            "run_dir": str(run_dir),
            "seed": recipe.seed,
            "device": device,
            "precision": precision,
            "world_size": args.world_size,  # processes (torchrun/accelerate); global batch = batch x accum x this
        }
        if teacher is not None:
            metrics["distill"] = distill.summary(recipe, teacher, cache, reused)
        if trainer.is_world_process_zero():
            _save_model(trainer.model, run_dir, m.method, labels)
            atomic_write_text(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")
            logger.info("metrics: %s", json.dumps(metrics))
            print_summary(metrics)
    return run_dir


def _save_model(model, run_dir: Path, method: str, labels: list[str]) -> None:
    """model/ (full weights, config keeps edgesent_head) or adapter/ (LoRA), written atomically."""
    from edgesent.model import LABELS_FILE

    model.eval()
    if method == "lora":
        with atomic_dir(run_dir / "adapter", overwrite=True) as tmp:
            model.save_pretrained(tmp)
            (tmp / LABELS_FILE).write_text(json.dumps(labels) + "\n", encoding="utf-8")
    else:
        with atomic_dir(run_dir / "model", overwrite=True) as tmp:
            model.save_pretrained(tmp, safe_serialization=True)


def print_summary(metrics: dict) -> None:
    print(f"\n{'split':<12}" + "".join(f"{name:>11}" for name in METRIC_NAMES))
    for split in ("validation", "test"):
        row = metrics.get(split, {})
        print(f"{split:<12}" + "".join(f"{row.get(name, float('nan')):>11.4f}" for name in METRIC_NAMES))
    print(
        f"\nrun folder: {metrics['run_dir']}\n"
        f"wall time {metrics['wall_time_s']:.1f} s, peak memory {metrics['peak_memory_mb']:.0f} MB, "
        f"{metrics['train_tokens_per_s'] or 0:,.0f} train tokens/s on {metrics['device']}\n"
        f"trainable parameters {metrics['trainable_params']:,} of {metrics['total_params']:,} "
        f"({metrics['trainable_pct']:.2f}%)"
    )


# --------------------------------------------------------------------------------------------
# Several seeds and the CLI


def train_seeds(recipe: Recipe, seeds: list[int]) -> tuple[list[Path], Path]:
    """One run per seed (`<name>-<ts>-seed<N>`); mean ± std of each test metric printed and saved."""
    stamp = _shared(_timestamp())
    runs, tests = [], []
    for seed in seeds:
        run_recipe = recipe.model_copy(update={"seed": seed}, deep=True)
        run = train(run_recipe, out=_shared(str(_new_run_dir(run_recipe, f"-seed{seed}", stamp))))
        runs.append(run)
        tests.append(json.loads((run / "metrics.json").read_text())["test"] if _is_main_process() else {})
    summary = {"recipe": recipe.name, "seeds": seeds, "runs": [str(r) for r in runs], "test": {}}
    for name in METRIC_NAMES:
        values = [t[name] for t in tests if name in t]
        if values:
            std = statistics.stdev(values) if len(values) > 1 else 0.0
            summary["test"][name] = {"mean": statistics.fmean(values), "std": std, "values": values}
    path = Path(recipe.output_dir) / f"{recipe.name}-seeds-{stamp}.json"
    if _is_main_process():
        atomic_write_text(path, json.dumps(summary, indent=2) + "\n")
        print(f"\ntest metrics over seeds {', '.join(map(str, seeds))}:")
        for name, stats in summary["test"].items():
            print(f"  {name:<10} {stats['mean']:.4f} ± {stats['std']:.4f}")
        print(f"summary: {path}")
    return runs, path


def check_seeds(seeds: list[int] | None, resume: bool, out) -> None:
    """--seeds runs several fresh runs: not with --resume or --out, and each seed once."""
    if seeds and (resume or out is not None):
        raise EdgesentError("--seeds cannot be combined with --resume or --out")
    if seeds and len(set(seeds)) != len(seeds):
        raise EdgesentError(f"--seeds lists a seed twice: {seeds}")


def train_cli(recipe_path, overrides: list[str] | None = None, seeds: list[int] | None = None,
              resume: bool = False, out=None) -> None:
    recipe = load_recipe(recipe_path, overrides)
    check_seeds(seeds, resume, out)
    if seeds:
        train_seeds(recipe, seeds)
    else:
        train(recipe, out=out, resume=resume)
