"""Text -> token ids, shared by training, export validation and the torch-free runtime.

Imports only `tokenizers` and `numpy`, so the edge runtime can use it. Training, export and serving
all call `Preprocessor.encode`/`pad`, which is what guarantees that the artifact sees exactly the
tokens the model was trained on.

Truncation works on content tokens, then the tokenizer's own special tokens are added around them:
- `head`: keep the first tokens (what `truncation=True` does in transformers);
- `tail`: keep the last tokens (long reviews often state their verdict at the end);
- `head+tail`: keep `head_share` of the budget from the start and the rest from the end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROBE = "a"


@dataclass
class Preprocessor:
    tokenizer: Any  # tokenizers.Tokenizer
    max_length: int = 256
    truncation: str = "head"
    head_share: float = 0.25
    lowercase: bool = False
    padding_side: str = "right"
    pad_token_id: int = 0
    prefix: list[int] = field(default_factory=list)
    suffix: list[int] = field(default_factory=list)

    @classmethod
    def create(cls, tokenizer, *, max_length, truncation="head", head_share=0.25, lowercase=False,
               padding_side="right", pad_token_id=0) -> Preprocessor:
        """Build from a `tokenizers.Tokenizer` (a transformers fast tokenizer's `backend_tokenizer`)."""
        if truncation not in ("head", "tail", "head+tail"):
            raise ValueError(f"truncation must be head, tail or head+tail, got {truncation!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        prefix, suffix = special_template(tokenizer)
        if max_length <= len(prefix) + len(suffix):
            raise ValueError(f"max_length {max_length} leaves no room for text")
        return cls(tokenizer, max_length, truncation, head_share, lowercase, padding_side, pad_token_id, prefix, suffix)

    @classmethod
    def from_manifest(cls, tokenizer, pre: dict) -> Preprocessor:
        return cls.create(
            tokenizer,
            max_length=int(pre["max_length"]),
            truncation=pre["truncation"],
            head_share=float(pre.get("head_share", 0.25)),
            lowercase=bool(pre.get("lowercase", False)),
            padding_side=pre.get("padding_side", "right"),
            pad_token_id=int(pre["pad_token_id"]),
        )

    def to_manifest(self, pad_token: str | None = None) -> dict:
        return {
            "max_length": self.max_length,
            "truncation": self.truncation,
            "head_share": self.head_share,
            "lowercase": self.lowercase,
            "padding_side": self.padding_side,
            "pad_token": pad_token,
            "pad_token_id": self.pad_token_id,
        }

    # ----------------------------------------------------------------------------------------
    def truncate(self, ids: list[int]) -> list[int]:
        budget = self.max_length - len(self.prefix) - len(self.suffix)
        if len(ids) <= budget:
            return ids
        if self.truncation == "head":
            return ids[:budget]
        if self.truncation == "tail":
            return ids[len(ids) - budget:]
        n_head = int(round(budget * self.head_share))
        n_tail = budget - n_head
        return ids[:n_head] + (ids[len(ids) - n_tail:] if n_tail else [])

    def encode(self, texts: list[str]) -> list[list[int]]:
        """Token ids (special tokens included, unpadded) for each text."""
        texts = [t.lower() if self.lowercase else t for t in texts]
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [self.prefix + self.truncate(e.ids) + self.suffix for e in encs]

    def pad(self, batch: list[list[int]], pad_to: int | None = None) -> dict[str, np.ndarray]:
        """Pad a batch to its longest member (dynamic padding) on `padding_side`."""
        width = max(pad_to or 0, max((len(x) for x in batch), default=1), 1)
        ids = np.full((len(batch), width), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(batch), width), dtype=np.int64)
        for i, row in enumerate(batch):
            n = len(row)
            if self.padding_side == "right":
                ids[i, :n] = row
                mask[i, :n] = 1
            else:
                ids[i, width - n:] = row
                mask[i, width - n:] = 1
        return {"input_ids": ids, "attention_mask": mask}


def special_template(tokenizer) -> tuple[list[int], list[int]]:
    """The special-token ids the tokenizer puts before and after a single sequence."""
    plain = tokenizer.encode(PROBE, add_special_tokens=False).ids
    full = tokenizer.encode(PROBE, add_special_tokens=True).ids
    for start in range(len(full) - len(plain) + 1):
        if full[start:start + len(plain)] == plain:
            return full[:start], full[start + len(plain):]
    return [], []


def length_buckets(lengths: list[int], batch_size: int) -> list[list[int]]:
    """Indices grouped into batches of similar length (sorted), for padding-free-ish throughput."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
