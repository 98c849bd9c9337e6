"""`edgesent train RECIPE --dry-run`: what training would load and check, without downloading or training.

The recipe and every `--set` go through the same validation as a real run (`config.load_recipe`).
Then each source is resolved without contacting the hub:

- model: a local folder is checked like training checks it (config, weights unless `random_init`,
  tokenizer with a pad token); its config builds the model on the meta device (no memory, no
  weights), the head and the training method are applied and the parameters counted, so the
  trainable-parameter figure is the one training would log. A hub id is reported as "would download
  from the hub" and nothing is counted (the config is not here).
- data: a local folder or file is read and split exactly as training would (`data.load_splits`:
  resplit, carving, `max_*_samples`), so the row counts are the real ones; a hub id is reported only.
- training: resolved precision, steps per epoch when the rows are known, the run folder, `--resume`
  / `--out` refusals, `--seeds`; a `sweep:` section has its bounds checked (`sweep.check_space`).

Everything is printed (the resolved recipe as YAML, then the summary) and returned as a dict.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any

from edgesent.config import Recipe, load_recipe
from edgesent.errors import DataError, EdgesentError

HUB = "would download from the hub (not contacted by --dry-run)"


def dry_run(recipe_path, overrides: list[str] | None = None, seeds: list[int] | None = None, resume: bool = False,
            out=None, show: bool = True) -> dict[str, Any]:
    recipe = load_recipe(recipe_path, overrides)
    if not os.environ.get("EDGESENT_DEBUG"):  # library chatter (bitsandbytes' CPU kernel notice...) stays behind --debug
        for name in ("bitsandbytes", "transformers", "peft"):
            logging.getLogger(name).setLevel(logging.ERROR)
    summary = {"recipe": str(recipe_path), "model": model_summary(recipe), "data": data_summary(recipe)}
    summary["training"] = training_summary(recipe, summary["data"], seeds, resume, out)
    if recipe.sweep is not None:
        summary["sweep"] = sweep_summary(recipe)
    if show:
        print(render(recipe, summary))
    return summary


# --------------------------------------------------------------------------------------------


def model_summary(recipe: Recipe) -> dict[str, Any]:
    from edgesent.model import check_local_model_dir, is_local

    m = recipe.model
    out: dict[str, Any] = {"name_or_path": m.name_or_path, "method": m.method, "head": m.head,
                           "head_lr_multiplier": m.head_lr_multiplier}
    if m.method == "lora":
        out["lora"] = {"r": m.lora.r, "alpha": m.lora.alpha, "target_modules": m.lora.target_modules}
    if not is_local(m.name_or_path):
        out["source"] = "hub"
        return out
    folder = Path(m.name_or_path).expanduser().resolve()
    check_local_model_dir(folder, m.allow_pickle, need_weights=not m.random_init)
    out.update(source="local", folder=str(folder), weights="random (model.random_init)" if m.random_init else "local")
    from edgesent.model import load_tokenizer

    tokenizer = load_tokenizer(str(folder), m.pad_token, m.trust_remote_code)
    out["pad_token"] = tokenizer.pad_token
    family, trainable, total, targets = count_on_meta(recipe, str(folder), tokenizer)
    out.update(family=family, trainable_params=trainable, total_params=total)
    if m.method == "lora":
        out["lora"]["target_modules"] = targets
    return out


def count_on_meta(recipe: Recipe, folder: str, tokenizer) -> tuple[str, int, int, list[str] | None]:
    """(family, trainable, total, LoRA targets) of the model training would build, built on the meta device."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgesent import archs
    from edgesent.model import apply_method, attach_head, count_parameters, load_config

    m, labels = recipe.model, list(recipe.data.labels)
    id2label = dict(enumerate(labels))
    kwargs: dict[str, Any] = dict(num_labels=len(labels), id2label=id2label, label2id={v: k for k, v in id2label.items()})
    if tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    config = load_config(folder, m.trust_remote_code, **kwargs)
    arch = archs.arch_for(config)
    with torch.device("meta"):
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=m.trust_remote_code)
        if m.head == "mlp":
            attach_head(model, {"type": "mlp", "hidden": m.head_hidden, "dropout": m.head_dropout})
        model = apply_method(model, recipe)
    trainable, total = count_parameters(model)
    targets = list(m.lora.target_modules or arch.lora_targets) if m.method == "lora" else None
    return arch.family, trainable, total, targets


def data_summary(recipe: Recipe) -> dict[str, Any]:
    from edgesent.data import load_splits, looks_like_path

    d = recipe.data
    out: dict[str, Any] = {"dataset": d.dataset, "max_length": d.max_length, "truncation": d.truncation}
    local = Path(d.dataset).expanduser().exists() or d.train_file is not None
    if not local:
        if looks_like_path(d.dataset):
            raise DataError(f"data not found: {d.dataset} (data.dataset is neither a folder, a file nor a hub id)")
        out["source"] = "hub"
        return out
    splits = load_splits(recipe)
    out.update(source="local", rows={name: len(split) for name, split in splits.items()},
               files={name: split.origin for name, split in splits.items()})
    return out


def training_summary(recipe: Recipe, data: dict, seeds, resume: bool, out) -> dict[str, Any]:
    from edgesent.train import resolve_precision

    t = recipe.training
    summary: dict[str, Any] = {"precision": resolve_precision(t.precision), "epochs": t.epochs, "batch_size": t.batch_size,
                               "grad_accum": t.grad_accum, "lr": t.lr, "scheduler": t.scheduler, "max_steps": t.max_steps}
    rows = (data.get("rows") or {}).get("train")
    if rows:
        per_epoch = math.ceil(rows / (t.batch_size * t.grad_accum))
        summary["steps"] = t.max_steps or math.ceil(per_epoch * t.epochs)
        if rows < t.batch_size:
            raise DataError(f"data: train has {rows} rows, fewer than training.batch_size {t.batch_size}; "
                            "add data or lower the batch size")
    from edgesent.train import check_seeds

    check_seeds(seeds, resume, out)
    if seeds:
        summary["seeds"] = list(seeds)
    if resume:
        from edgesent.train import find_resumable

        run, checkpoint = find_resumable(recipe, Path(out) if out is not None else None)
        summary["run_dir"], summary["resume_from"] = str(run), checkpoint
    elif out is not None:
        if Path(out).exists() and any(Path(out).iterdir()):
            raise EdgesentError(f"{out} already exists and is not empty; choose another --out")
        summary["run_dir"] = str(Path(out))
    else:
        summary["run_dir"] = os.path.join(recipe.output_dir, f"{recipe.name}-<timestamp>")
    return summary


def sweep_summary(recipe: Recipe) -> dict[str, Any]:
    from edgesent.sweep import check_space

    check_space(recipe)
    space = {}
    for key, p in recipe.sweep.space.items():
        if p.type == "categorical":
            space[key] = "one of " + ", ".join(map(str, p.choices))
        else:
            space[key] = f"{p.type} {p.low:g} .. {p.high:g}" + (" (log)" if p.log else "")
    return {"metric": recipe.sweep.metric, "pruner": recipe.sweep.pruner, "space": space}


# --------------------------------------------------------------------------------------------


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"


def render(recipe: Recipe, s: dict[str, Any]) -> str:
    m, d, t = s["model"], s["data"], s["training"]
    lines = [f"# resolved recipe ({s['recipe']})", recipe.to_yaml().rstrip(), "",
             f"dry run of {s['recipe']}: nothing downloaded, nothing trained"]
    if m["source"] == "hub":
        lines.append(f"  model:     {m['name_or_path']}: hub id, {HUB}")
    else:
        lines.append(f"  model:     {m['folder']} (local folder, {m['family']}, weights {m['weights']}, "
                     f"pad token {m['pad_token']!r})")
    method = m["method"] + (f", head {m['head']}" if m["head"] != "default" else "")
    if m["head_lr_multiplier"] != 1:
        method += f", head lr x{m['head_lr_multiplier']:g}"
    if "lora" in m:
        targets = m["lora"]["target_modules"]
        method += (f", LoRA r={m['lora']['r']} alpha={m['lora']['alpha']} on "
                   + (",".join(targets) if targets else "the architecture's default targets (edgesent/archs.py)"))
    lines.append(f"  method:    {method}")
    if m.get("total_params"):
        pct = 100 * m["trainable_params"] / m["total_params"]
        lines.append(f"  trainable: {_count(m['trainable_params'])} of {_count(m['total_params'])} parameters "
                     f"({pct:.2f} %), counted on the meta device from the local config")
    else:
        lines.append("  trainable: unknown until the config is downloaded (point model.name_or_path at a local "
                     "folder to count)")
    if d["source"] == "hub":
        lines.append(f"  data:      {d['dataset']}: hub id, {HUB}")
    else:
        lines.append("  data:      " + ", ".join(f"{name} {n:,} rows" for name, n in d["rows"].items()))
        lines += [f"             {origin}" for origin in d["files"].values()]
    lines.append(f"  tokens:    max_length {d['max_length']}, truncation {d['truncation']}")
    steps = f", {t['steps']:,} optimizer steps" if t.get("steps") else ""
    lines.append(f"  training:  {t['epochs']:g} epoch(s), batch {t['batch_size']} x accum {t['grad_accum']}, "
                 f"lr {t['lr']:g} ({t['scheduler']}), precision {t['precision']}{steps}")
    if t.get("seeds"):
        lines.append(f"  seeds:     {', '.join(map(str, t['seeds']))} (one run each)")
    lines.append(f"  run:       {t['run_dir']}" + (f" (resuming {t['resume_from']})" if t.get("resume_from") else ""))
    if "sweep" in s:
        sw = s["sweep"]
        lines.append(f"  sweep:     edgesent sweep {s['recipe']} optimises validation {sw['metric']} "
                     f"(pruner {sw['pruner']}) over:")
        lines += [f"             {key}: {desc}" for key, desc in sw["space"].items()]
    return "\n".join(lines)
