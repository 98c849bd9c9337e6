"""Models: load a backbone + classification head, apply the training method, load runs back.

Sources: a local folder in Hugging Face layout, a hub id (loaded through the hub; offline
machines get a one-line error saying how to point the recipe at a local folder), or an edgesent
run folder (its model/ -- LoRA merged -- and tokenizer/), so a student can start from a fine-tuned
teacher. `model.keep_layers` then keeps only the listed transformer blocks (`keep_layers`, for
distillation: edgesent/distill.py).

Security defaults: only safetensors are loaded unless `model.allow_pickle` is set, and
`trust_remote_code` stays off unless the recipe sets it.

Heads. `head: default` keeps the architecture's own head (BERT/DistilBERT/RoBERTa `classifier`,
decoder `score` on the last non-pad token). `head: mlp` replaces a single-Linear head with
Dropout -> Linear -> GELU -> Dropout -> Linear (the Pythia-14M card's head); for decoders the
transformers pooling (last non-pad token) is kept. The head spec is stored in `config.json` as
`edgesent_head`, so `load_model_dir` rebuilds the same module before loading the weights.

Run folder layout (written by `edgesent.train`):

    <run>/recipe.yaml   resolved recipe          <run>/metrics.json   final metrics
    <run>/model/        full/frozen/last_block: config.json + model.safetensors
    <run>/adapter/      lora: peft adapter (+ the trained head as modules_to_save)
    <run>/tokenizer/    tokenizer files          <run>/checkpoints/   Trainer checkpoints (--resume)
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgesent import archs
from edgesent.errors import ModelError, first_line, hub_error

WEIGHT_FILES_SAFE = ("model.safetensors", "model.safetensors.index.json")
WEIGHT_FILES_PICKLE = ("pytorch_model.bin", "pytorch_model.bin.index.json")


# --------------------------------------------------------------------------------------------
# Sources


def _hub_error(name: str, exc: Exception) -> ModelError:
    return hub_error(name, exc, "download it elsewhere and point the recipe at the folder, e.g. "
                     f"--set model.name_or_path=/path/to/{name.split('/')[-1]}", ModelError)


def check_local_model_dir(path: Path, allow_pickle: bool, need_weights: bool = True) -> None:
    if not path.is_dir():
        raise ModelError(f"model folder not found: {path}")
    if not (path / "config.json").is_file():
        raise ModelError(f"{path} holds no model (no config.json)")
    if not need_weights:
        return
    if any((path / f).is_file() for f in WEIGHT_FILES_SAFE):
        from edgesent.artifact import LFS_MAGIC

        weights = path / "model.safetensors"
        if weights.is_file():
            with open(weights, "rb") as fh:
                head = fh.read(64)
            if head.startswith(LFS_MAGIC):
                raise ModelError(f"{weights} is a git-lfs pointer, not the weights (run `git lfs pull`)")
            check_safetensors_complete(weights)
        return
    if any((path / f).is_file() for f in WEIGHT_FILES_PICKLE):
        if not allow_pickle:
            raise ModelError(
                f"{path} has only pickled weights (pytorch_model.bin), which can run code when loaded; "
                "convert them to safetensors or set model.allow_pickle: true if you trust the file"
            )
        return
    raise ModelError(
        f"{path} has a config.json but no weights (model.safetensors); "
        "set model.random_init: true to build random weights from the config"
    )


def check_safetensors_complete(path: Path) -> None:
    """Refuse a truncated or non-safetensors file with one line (safetensors itself raises a bare Rust error).

    The format is an 8-byte little-endian header length, a JSON header whose tensors' `data_offsets`
    end at the data size, then the data: comparing that size with the file's catches a cut download.
    """
    import json
    import struct

    size = path.stat().st_size
    try:
        with open(path, "rb") as fh:
            (header_len,) = struct.unpack("<Q", fh.read(8))
            if header_len > size - 8:
                raise ValueError
            header = json.loads(fh.read(header_len))
        end = max((t["data_offsets"][1] for k, t in header.items() if k != "__metadata__"), default=0)
    except (struct.error, ValueError, KeyError, TypeError, IndexError, UnicodeDecodeError):
        raise ModelError(f"{path} is not a valid safetensors file (truncated or corrupted): download it again") from None
    expected = 8 + header_len + end
    if size < expected:
        raise ModelError(f"{path} is truncated ({size} of {expected} bytes): download it again")


def is_local(name_or_path: str) -> bool:
    return Path(name_or_path).expanduser().exists() or name_or_path.startswith((".", "/", "~"))


def load_config(name_or_path: str, trust_remote_code: bool = False, **kwargs):
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(name_or_path, trust_remote_code=trust_remote_code, **kwargs)
    except (OSError, ValueError) as exc:
        if is_local(name_or_path):
            raise ModelError(f"cannot read the model config in {name_or_path}: {first_line(exc)}") from None
        raise _hub_error(name_or_path, exc) from None


TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model")


def load_tokenizer(name_or_path: str, pad_token: str | None = None, trust_remote_code: bool = False):
    """A fast tokenizer with a pad token and right padding."""
    from transformers import AutoTokenizer

    name_or_path = str(run_part(name_or_path, "tokenizer"))
    if is_local(name_or_path):
        folder = Path(name_or_path).expanduser()
        if not folder.is_dir():
            raise ModelError(f"model folder not found: {folder}")
        if not any((folder / f).is_file() for f in ("tokenizer.json", "tokenizer_config.json", "config.json")):
            raise ModelError(f"{folder} holds no model (no config.json) and no tokenizer (no tokenizer.json)")
        if not any((folder / f).is_file() for f in TOKENIZER_FILES):
            raise ModelError(f"{folder} has no tokenizer files (tokenizer.json); copy them from the base model's folder")
    try:
        tok = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, trust_remote_code=trust_remote_code)
    except (OSError, ValueError, TypeError) as exc:
        if is_local(name_or_path):
            raise ModelError(f"cannot load a tokenizer from {name_or_path}: {first_line(exc)}") from None
        raise _hub_error(name_or_path, exc) from None
    if not getattr(tok, "is_fast", False):
        raise ModelError(f"{name_or_path} has no fast tokenizer (tokenizer.json); edgesent needs one")
    if pad_token is not None and (tok.pad_token is None or pad_token != "eos"):
        value = tok.eos_token if pad_token == "eos" else pad_token
        if value is None:
            raise ModelError(f"model.pad_token is 'eos' but {name_or_path}'s tokenizer has no eos token")
        tok.pad_token = value
    if tok.pad_token is None:
        if tok.eos_token is None:
            raise ModelError(f"{name_or_path}'s tokenizer has no pad or eos token; set model.pad_token")
        tok.pad_token = tok.eos_token
    tok.padding_side = "right"
    return tok


# --------------------------------------------------------------------------------------------
# Heads


def mlp_head(in_features: int, hidden: int, out_features: int, dropout: float):
    import torch.nn as nn

    return nn.Sequential(
        nn.Dropout(dropout), nn.Linear(in_features, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, out_features)
    )


def attach_head(model, spec: dict | None):
    """Replace the single-Linear head by the MLP head described by `spec` (stored in config)."""
    import torch.nn as nn

    if not spec or spec.get("type") != "mlp":
        return model
    for name in archs.arch_for(model.config).head[-1:]:  # the final projection of the family's head
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            hidden = spec.get("hidden") or layer.in_features
            setattr(model, name, mlp_head(layer.in_features, hidden, layer.out_features, spec.get("dropout", 0.1)))
            model.config.edgesent_head = {"type": "mlp", "hidden": hidden, "dropout": spec.get("dropout", 0.1)}
            return model
    raise ModelError(
        f"model.head: mlp needs a single Linear classification head, {type(model).__name__} has another kind; use head: default"
    )


# --------------------------------------------------------------------------------------------
# Building for training


def build_model(recipe, labels: list[str], tokenizer=None):
    """Backbone + head per the recipe, with the training method applied (LoRA wraps in peft)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    m = recipe.model
    id2label = dict(enumerate(labels))
    label2id = {v: k for k, v in id2label.items()}
    kwargs: dict[str, Any] = dict(num_labels=len(labels), id2label=id2label, label2id=label2id)
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        kwargs["pad_token_id"] = tokenizer.pad_token_id
    torch.manual_seed(recipe.seed)
    if is_run_dir(m.name_or_path):  # start from a fine-tuned edgesent run (LoRA merged), e.g. a teacher's layers
        model = _model_from_run(Path(m.name_or_path).expanduser(), labels)
        return _finish(model, recipe, tokenizer)
    if is_local(m.name_or_path):
        check_local_model_dir(Path(m.name_or_path).expanduser(), m.allow_pickle, need_weights=not m.random_init)
    config = load_config(m.name_or_path, m.trust_remote_code, **kwargs)
    archs.arch_for(config)  # an unsupported family fails here, naming the supported ones
    if m.random_init:
        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=m.trust_remote_code)
    else:
        try:
            model = AutoModelForSequenceClassification.from_pretrained(
                m.name_or_path,
                config=config,
                use_safetensors=None if m.allow_pickle else True,
                trust_remote_code=m.trust_remote_code,
            )
        except OSError as exc:
            if is_local(m.name_or_path):
                raise ModelError(f"cannot load weights from {m.name_or_path}: {first_line(exc)}") from None
            raise _hub_error(m.name_or_path, exc) from None
    return _finish(model, recipe, tokenizer)


def _finish(model, recipe, tokenizer):
    """keep_layers, the recipe's head, the pad token and the training method, on a loaded classifier."""
    m = recipe.model
    if m.keep_layers is not None:
        keep_layers(model, m.keep_layers)
    if m.head == "mlp" and not getattr(model.config, "edgesent_head", None):
        attach_head(model, {"type": "mlp", "hidden": m.head_hidden, "dropout": m.head_dropout})
    if tokenizer is not None and tokenizer.pad_token_id is not None:
        model.config.pad_token_id = tokenizer.pad_token_id
    model.train()
    return apply_method(model, recipe)


def keep_layers(model, keep: list[int]):
    """Keep only the transformer blocks `keep` (in that order), in place; embeddings and head stay as they are.

    The config's depth key (archs.Arch.depth_key) is set to the new count, so the saved model loads
    back as the smaller model; per-layer config lists (`layer_types`) and the blocks' `layer_idx`
    follow the kept blocks.
    """
    import torch.nn as nn

    arch = archs.arch_for(model.config)
    if not arch.uniform_blocks:
        raise ModelError(f"model.keep_layers: the blocks of {arch.family} models differ from each other "
                         "(see edgesent/archs.py), so they cannot be dropped")
    old = archs.blocks(model)
    n = len(old)
    bad = [i for i in keep if not 0 <= i < n]
    if bad:
        raise ModelError(f"model.keep_layers {list(keep)}: {bad} out of range, the model has {n} blocks (0..{n - 1})")
    parent_path, _, attr = arch.layers.rpartition(".")
    parent = archs.get_module(model, parent_path) if parent_path else model
    setattr(parent, attr, nn.ModuleList([old[i] for i in keep]))
    for k, block in enumerate(archs.blocks(model)):
        for module in block.modules():
            if isinstance(getattr(module, "layer_idx", None), int):
                module.layer_idx = k
    setattr(model.config, arch.depth_key, len(keep))
    types = getattr(model.config, "layer_types", None)
    if isinstance(types, list) and len(types) == n:
        model.config.layer_types = [types[i] for i in keep]
    model.config.edgesent_keep_layers = list(keep)
    return model


def is_run_dir(name_or_path: str | os.PathLike) -> bool:
    """An edgesent run folder: recipe.yaml beside a trained model/ or adapter/."""
    path = Path(name_or_path).expanduser()
    return (path / "recipe.yaml").is_file() and ((path / "model").is_dir() or (path / "adapter").is_dir())


def run_part(name_or_path: str, part: str) -> str | Path:
    """`<run>/<part>` (model or tokenizer) when name_or_path is a run folder that has it, else name_or_path."""
    path = Path(name_or_path).expanduser()
    return path / part if is_run_dir(path) and (path / part).is_dir() else name_or_path


def _model_from_run(run: Path, labels: list[str]):
    model, _, recipe = load_run(run, merge=True)
    theirs = run_labels(run, recipe)
    if list(theirs) != list(labels):
        raise ModelError(f"model.name_or_path {run} was trained on labels {theirs}, the recipe has {list(labels)}")
    return model


def apply_method(model, recipe):
    m = recipe.model
    heads = archs.head_modules(model)
    if m.method == "full":
        return model
    if m.method in ("frozen", "last_block"):
        for name, p in model.named_parameters():
            p.requires_grad = name.split(".")[0] in heads
        if m.method == "last_block":
            for p in archs.blocks(model)[-1].parameters():
                p.requires_grad = True
        return model
    # LoRA
    from peft import LoraConfig, TaskType, get_peft_model

    targets = list(m.lora.target_modules or archs.arch_for(model.config).lora_targets)
    module_names = {n.split(".")[-1] for n, _ in model.named_modules()}
    missing = [t for t in targets if t not in module_names]
    if missing:
        # LoRA wraps linear layers (Conv1D in GPT-2), so those are the names worth suggesting
        linear = sorted({n.split(".")[-1] for n, mod in model.named_modules()
                         if type(mod).__name__ in ("Linear", "Conv1D") and not n.split(".")[-1].isdigit()})
        sample = linear or sorted(n for n in module_names if n and not n.isdigit())[:12]
        raise ModelError(
            f"model.lora.target_modules {missing} match no module of {type(model).__name__} "
            f"(its linear layers are: {', '.join(sample)})"
        )
    cfg = LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=m.lora.r,
        lora_alpha=m.lora.alpha,
        lora_dropout=m.lora.dropout,
        target_modules=targets,
        modules_to_save=heads,
    )
    return get_peft_model(model, cfg)


def count_parameters(model) -> tuple[int, int]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total


def head_parameter_names(model) -> set[str]:
    """Names of parameters that belong to the classification head (works through peft wrappers)."""
    base = model
    for attr in ("base_model", "model"):
        # PeftModel -> LoraModel -> transformers model
        base = getattr(base, attr, base) if type(base).__name__.startswith(("Peft", "Lora")) else base
    heads = archs.head_modules(base)
    out = set()
    for name, _ in model.named_parameters():
        parts = name.split(".")
        if any(h in parts for h in heads):
            out.add(name)
    return out


# --------------------------------------------------------------------------------------------
# Loading back


def load_model_dir(path: str | os.PathLike, allow_pickle: bool = False, trust_remote_code: bool = False):
    """A saved sequence classifier (ours with an edgesent_head, or any HF one) in eval mode."""
    import torch
    from transformers import AutoConfig, AutoModelForSequenceClassification

    path = Path(path)
    if is_local(str(path)):
        check_local_model_dir(path, allow_pickle)
        config = AutoConfig.from_pretrained(path, trust_remote_code=trust_remote_code)
    else:
        config = load_config(str(path), trust_remote_code)
    archs.arch_for(config)
    spec = getattr(config, "edgesent_head", None)
    if spec:
        from safetensors.torch import load_file

        model = AutoModelForSequenceClassification.from_config(config, trust_remote_code=trust_remote_code)
        attach_head(model, spec)
        state = {}
        index = path / "model.safetensors.index.json"
        if index.is_file():
            import json

            for shard in sorted(set(json.loads(index.read_text())["weight_map"].values())):
                state.update(load_file(path / shard))
        else:
            state = load_file(path / "model.safetensors")
        missing, unexpected = model.load_state_dict(state, strict=False)
        tied = set(getattr(model, "_tied_weights_keys", None) or [])
        missing = [k for k in missing if k not in tied]
        if missing or unexpected:
            raise ModelError(f"{path}: weights do not fit the model (missing {missing[:3]}, unexpected {unexpected[:3]})")
    else:
        try:
            model, info = AutoModelForSequenceClassification.from_pretrained(
                path, use_safetensors=None if allow_pickle else True, trust_remote_code=trust_remote_code,
                output_loading_info=True,
            )
            model.edgesent_missing_keys = list(info.get("missing_keys") or [])  # export refuses a random head
        except OSError as exc:
            if is_local(str(path)):
                raise ModelError(f"cannot load weights from {path}: {first_line(exc)}") from None
            raise _hub_error(str(path), exc) from None
    model.to(torch.float32)
    model.eval()
    return model


def load_run(run_dir: str | os.PathLike, merge: bool = False):
    """(model, tokenizer, recipe) of a finished run, in eval mode.

    LoRA runs come back as a PeftModel unless `merge` is set, in which case the adapter is merged
    into the base weights (`merge_and_unload`).
    """
    from edgesent.config import load_recipe

    run = Path(run_dir)
    if not (run / "recipe.yaml").is_file():
        raise ModelError(f"{run} is not an edgesent run folder (no recipe.yaml)")
    recipe = load_recipe(run / "recipe.yaml")
    tok_dir = run / "tokenizer"
    tokenizer = load_tokenizer(str(tok_dir if tok_dir.is_dir() else recipe.model.name_or_path), recipe.model.pad_token)
    if (run / "model").is_dir():
        model = load_model_dir(run / "model", recipe.model.allow_pickle, recipe.model.trust_remote_code)
    elif (run / "adapter").is_dir():
        model = load_lora_run(run, recipe, tokenizer, merge=merge)
    else:
        raise ModelError(f"{run} holds no trained model (no model/ or adapter/): did training finish?")
    return model, tokenizer, recipe


LABELS_FILE = "edgesent_labels.json"  # a LoRA run's label names (adapter/ has no config.json to hold them)


def run_labels(run: Path, recipe) -> list[str]:
    """Label names of a run in id order: the adapter's labels file for LoRA runs, else the recipe's."""
    import json

    labels_file = Path(run) / "adapter" / LABELS_FILE
    labels = json.loads(labels_file.read_text()) if labels_file.is_file() else recipe.data.labels
    return [str(x) for x in labels]


def load_lora_run(run: Path, recipe, tokenizer, merge: bool = False):
    from peft import PeftModel

    labels = run_labels(run, recipe)
    base_recipe = recipe.model_copy(deep=True)
    base_recipe.model.method = "full"
    base = build_model(base_recipe, labels, tokenizer)
    model = PeftModel.from_pretrained(base, run / "adapter")
    model.eval()
    if merge:
        model = model.merge_and_unload()
        model.eval()
    return model
