"""What edgesent needs to know about each architecture family, in one table.

One `Arch` entry per transformers `model_type`. Everything that differs between families lives
here and nowhere else: where the transformer blocks are, which top-level modules form the
classification head, how the head pools (first token or last non-pad token), the default LoRA
targets, the config keys for depth and positions. ONNX node patterns are derived from the same
facts, because torch.onnx names nodes after module paths (`/bert/encoder/layer.1/attention/...`,
`/classifier/Gemm`).

Adding an architecture = one entry below plus its tiny-model case in `tests/conftest.py`;
`tests/test_archs.py` then trains, exports, checks parity and quantizes a tiny model of every entry.
Torch-free: the runtime and bench read it without importing torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from edgesent.errors import ModelError


@dataclass(frozen=True)
class Arch:
    family: str  # transformers config.model_type
    layers: str  # dotted path, from the sequence classifier, to the ModuleList of transformer blocks
    head: tuple[str, ...]  # top-level module names of the classification head
    pooling: Literal["first", "last"]  # first token ([CLS]/<s>) or last non-pad token (decoders)
    lora_targets: tuple[str, ...]  # default LoRA target module names
    depth_key: str = "num_hidden_layers"  # config key holding the number of blocks
    positions_key: str = "max_position_embeddings"  # config key holding the largest position
    position_offset: int = 0  # positions the model reserves (RoBERTa starts at padding_idx + 1)
    padding_side: Literal["right"] = "right"  # see README "One preprocessing function"
    uniform_blocks: bool = True  # every block has the same structure, so model.keep_layers may drop any of them

    @property
    def onnx_block(self) -> re.Pattern:
        """Matches an ONNX node of block i (group 1 = i): `/bert/encoder/layer.3/...`."""
        return re.compile("/" + re.escape(self.layers.replace(".", "/")) + r"\.(\d+)/")

    @property
    def onnx_head(self) -> tuple[str, ...]:
        """ONNX node-name prefixes of the head's nodes."""
        return tuple(f"/{name}/" for name in self.head)

    def num_layers(self, config) -> int:
        return int(getattr(config, self.depth_key))

    def max_tokens(self, config) -> int | None:
        """The longest input the model's positions allow (None: no fixed limit)."""
        value = getattr(config, self.positions_key, None)
        return None if value is None else int(value) - self.position_offset


ARCHS: dict[str, Arch] = {a.family: a for a in (
    Arch("bert", "bert.encoder.layer", ("classifier",), "first", ("query", "value")),
    Arch("distilbert", "distilbert.transformer.layer", ("pre_classifier", "classifier"), "first", ("q_lin", "v_lin"),
         depth_key="n_layers"),
    Arch("roberta", "roberta.encoder.layer", ("classifier",), "first", ("query", "value"), position_offset=2),
    Arch("xlm-roberta", "roberta.encoder.layer", ("classifier",), "first", ("query", "value"), position_offset=2),
    Arch("modernbert", "model.layers", ("head", "classifier"), "first", ("Wqkv",),
         uniform_blocks=False),  # block 0 has no attention norm, and blocks alternate global/local attention
    Arch("gpt_neox", "gpt_neox.layers", ("score",), "last", ("query_key_value",)),
    Arch("gpt2", "transformer.h", ("score",), "last", ("c_attn",), depth_key="n_layer", positions_key="n_positions"),
)}


def supported() -> str:
    return ", ".join(sorted(ARCHS))


def arch_for(config_or_type) -> Arch:
    """The entry for a transformers config (or model_type string); one line naming the families otherwise."""
    model_type = config_or_type if isinstance(config_or_type, str) else getattr(config_or_type, "model_type", None)
    arch = ARCHS.get(str(model_type))
    if arch is None:
        raise ModelError(f"model type '{model_type}' is not supported by edgesent (supported: {supported()})")
    return arch


def get_module(model, dotted: str):
    """The submodule at a dotted path (`bert.encoder.layer`), or None."""
    node = model
    for part in dotted.split("."):
        node = getattr(node, part, None)
        if node is None:
            return None
    return node


def blocks(model):
    """The ModuleList of transformer blocks of a (non-peft) sequence classifier."""
    arch = arch_for(model.config)
    found = get_module(model, arch.layers)
    if found is None:
        raise ModelError(f"cannot find the transformer blocks of {type(model).__name__} at {arch.layers}")
    return found


def head_modules(model) -> list[str]:
    """Top-level module names of the classification head that this model has."""
    arch = arch_for(model.config)
    names = {n for n, _ in model.named_children()}
    found = [n for n in arch.head if n in names]
    if not found:
        raise ModelError(f"cannot find the classification head ({', '.join(arch.head)}) of {type(model).__name__}")
    return found
