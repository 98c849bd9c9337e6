"""What is being exported: load a run folder, a Hugging Face model folder or a hub id as a `Source`.

`resolve_source` is the one entry point: it finds the newest run when no source is given, loads the
model in fp32 eval mode with the tokenizer and the `textproc.Preprocessor` the runtime will use, and
merges LoRA adapters into their base weights (`merge_lora`, checked on the probe batches).
"""

from __future__ import annotations

import copy
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgesent.archs import arch_for
from edgesent.data import make_preprocessor
from edgesent.errors import GateError, ModelError
from edgesent.export.parity import probe_batches, torch_logits

MERGE_ATOL = 1e-4

__all__ = ["MERGE_ATOL", "Source", "find_latest_run", "make_preprocessor", "merge_lora", "resolve_source"]


@dataclass
class Source:
    """A loaded model ready to export, with everything the artifact needs to describe it."""

    kind: str  # "run", "folder" or "hub"
    ref: str  # the path or hub id as resolved
    model: Any  # torch sequence classifier, fp32, eval mode, LoRA already merged
    tokenizer: Any  # transformers fast tokenizer
    labels: list[str]
    preprocessor: Any  # textproc.Preprocessor
    pad_token: str | None
    method: str = "full"
    base_model: str = ""
    recipe: Any = None  # config.Recipe for runs
    run: Path | None = None
    merge_max_abs_diff: float | None = None
    notes: list[str] = field(default_factory=list)


def find_latest_run(root: str | os.PathLike = "exports") -> Path:
    """The most recently modified run folder (with model/ or adapter/) under `root`."""
    root = Path(root)
    if not root.is_dir():
        raise ModelError(f"no run folder given and {root}/ does not exist; train one with `edgesent train RECIPE`")
    candidates = [
        p.parent
        for pattern in ("*/recipe.yaml", "*/*/recipe.yaml")
        for p in root.glob(pattern)
        if not p.parent.name.startswith(".") and ((p.parent / "model").is_dir() or (p.parent / "adapter").is_dir())
    ]
    if not candidates:
        raise ModelError(f"no finished run folder (with model/ or adapter/) under {root}/; train one with `edgesent train`")
    return max(candidates, key=lambda p: p.stat().st_mtime)


INFERENCE_KEYS = ("data.long_text", "data.window", "data.stride", "data.max_windows", "data.pool")


def resolve_source(source: str | os.PathLike | None, random_head_ok: bool = False,
                   overrides: list[str] | None = None) -> Source:
    """Load the model to export from a run folder, a HF folder or a hub id (None: newest run).

    A folder or hub model whose classification head is not in its checkpoint (a base or
    sentence-transformers model: transformers initialises the head at random) is refused unless
    `random_head_ok`: its artifact would predict noise. Run folders were trained by edgesent.
    `overrides` (`section.key=value`) change a run's inference-time keys (INFERENCE_KEYS: how long
    texts are scored), never what the model was trained with.
    """
    from edgesent import model as M

    path = find_latest_run() if source is None else Path(source).expanduser()
    for text in overrides or []:
        if text.split("=", 1)[0].strip() not in INFERENCE_KEYS:
            raise ModelError(f"--set {text!r}: export can only change {', '.join(INFERENCE_KEYS)}")
    if path.is_dir() and (path / "recipe.yaml").is_file():
        return _load_run_source(path.resolve(), overrides)
    if overrides:
        raise ModelError(f"--set needs an edgesent run folder (with recipe.yaml); {path} is not one")
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ModelError(f"{path} is neither an edgesent run folder (recipe.yaml) nor a model folder (config.json)")
        ref, kind = str(path.resolve()), "folder"
    elif source is not None and not M.is_local(str(source)) and re.fullmatch(r"[\w.-]+(/[\w.-]+)?", str(source)):
        ref, kind = str(source), "hub"
    else:
        raise ModelError(f"export source not found: {source}")
    return _load_model_source(ref, kind, random_head_ok)


def _check_weights(path: Path) -> None:
    """Export's own advice for folders without usable weights (the recipe keys train suggests do not apply)."""
    from edgesent import model as M

    if any((path / f).is_file() for f in M.WEIGHT_FILES_SAFE):
        return
    if any((path / f).is_file() for f in M.WEIGHT_FILES_PICKLE):
        raise ModelError(f"{path} has only pickled weights (pytorch_model.bin), which can run code when loaded; "
                         "export reads safetensors only: convert them (save_pretrained(..., safe_serialization=True))")
    raise ModelError(f"{path} has a config.json but no weights (model.safetensors); export needs trained weights: "
                     "train a run on it (model.random_init: true in the recipe for random weights) and export the run")


def check_head(model, ref: str, random_head_ok: bool) -> list[str]:
    """Refuse a model whose head modules (archs.head_modules) were missing from its checkpoint.

    Uses transformers' loading info (`edgesent_missing_keys`, set by `model.load_model_dir`), not
    its warning text. Returns notes for the manifest.
    """
    from edgesent.archs import head_modules

    heads = set(head_modules(model))
    missing = [k for k in getattr(model, "edgesent_missing_keys", []) if k.split(".")[0] in heads]
    if not missing:
        return []
    if not random_head_ok:
        raise ModelError(f"{ref}: the classification head was never trained (its checkpoint lacks {missing[0]}; "
                         "transformers would initialise it at random), so the artifact would predict noise; "
                         "fine-tune it with `edgesent train` and export the run, or pass --random-head-ok "
                         "if a random head is intended (speed work)")
    return [f"random classification head ({', '.join(missing)} not in the checkpoint; --random-head-ok)"]


def _load_model_source(ref: str, kind: str, random_head_ok: bool = False) -> Source:
    """A plain sequence classifier (folder or hub id): no recipe, so preprocessing takes the defaults."""
    from edgesent import model as M
    from edgesent.config import DataConfig

    if kind == "folder":
        _check_weights(Path(ref))
    torch_model = M.load_model_dir(ref)
    notes = check_head(torch_model, ref, random_head_ok)
    tokenizer = M.load_tokenizer(ref)
    if torch_model.config.pad_token_id is None:
        torch_model.config.pad_token_id = tokenizer.pad_token_id
    id2label = torch_model.config.id2label
    labels = [str(id2label[i]) for i in sorted(id2label)]
    max_length = min(DataConfig.model_fields["max_length"].default, int(tokenizer.model_max_length or 512))
    data_cfg = DataConfig(labels=labels, max_length=max_length)
    return Source(kind=kind, ref=ref, model=torch_model, tokenizer=tokenizer, labels=labels,
                  preprocessor=make_preprocessor(tokenizer, data_cfg), pad_token=tokenizer.pad_token,
                  base_model=ref, notes=[f"no recipe: preprocessing uses defaults (max_length {max_length}, head)",
                                         *notes])


def _load_run_source(run: Path, overrides: list[str] | None = None) -> Source:
    """An edgesent run folder: the recipe's preprocessing, LoRA merged into the base weights."""
    from edgesent import model as M
    from edgesent.config import apply_overrides, validate_recipe

    torch_model, tokenizer, recipe = M.load_run(run, merge=False)
    if overrides:
        recipe = validate_recipe(apply_overrides(recipe.model_dump(mode="json"), overrides), f"{run}/recipe.yaml")
    pre = make_preprocessor(tokenizer, recipe.data, max_tokens=arch_for(torch_model.config).max_tokens(torch_model.config))
    merge_diff = None
    if type(torch_model).__name__.startswith("Peft"):
        torch_model, merge_diff = merge_lora(torch_model, pre)
    return Source(kind="run", ref=str(run), model=torch_model, tokenizer=tokenizer, labels=M.run_labels(run, recipe),
                  preprocessor=pre, pad_token=tokenizer.pad_token, method=recipe.model.method,
                  base_model=recipe.model.name_or_path, recipe=recipe, run=run, merge_max_abs_diff=merge_diff)


def merge_lora(peft_model, preprocessor, atol: float = MERGE_ATOL):
    """Merge LoRA adapters into a deep copy; refuse if merged and adapter logits differ > atol."""
    peft_model.eval()
    merged = copy.deepcopy(peft_model).merge_and_unload()
    merged.eval()
    diff = 0.0
    for feed in probe_batches(preprocessor):
        diff = max(diff, float(np.abs(torch_logits(peft_model, feed) - torch_logits(merged, feed)).max()))
    if not diff <= atol:
        raise GateError(f"merged LoRA model differs from the adapter model by {diff:.2e} (> {atol:g}) on the probe batch")
    return merged, diff
