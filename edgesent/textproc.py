"""Text -> token ids, shared by training, export validation and the torch-free runtime.

Imports only `tokenizers` and `numpy`, so the edge runtime can use it. Training, export and serving
all call `Preprocessor.encode`/`pad`, which is what guarantees that the artifact sees exactly the
tokens the model was trained on.

Truncation works on content tokens, then the tokenizer's own special tokens are added around them:
- `head`: keep the first tokens (what `truncation=True` does in transformers);
- `tail`: keep the last tokens (long reviews often state their verdict at the end);
- `head+tail`: keep `head_share` of the budget from the start and the rest from the end.

Long texts (`long_text: windows`): instead of truncating, `encode_windows` cuts the content tokens
into overlapping windows of `window` tokens (special tokens included, each window wrapped in the
tokenizer's own special tokens), starting every `stride` content tokens; the last window is aligned
to the text's end, so every window of a long text is full and the end is always seen. A text that
fits one window is exactly `encode`'s ids. Past `max_windows` windows, `max_windows` windows are
spread evenly from the first token to the last (the first at the start, the last at the end: the
whole text is still sampled, with gaps instead of overlaps); `max_windows: 1` is plain truncation
with the `truncation` strategy. `pooled_logits` is the ONE function that scores texts from their
windows -- every window of every text in shared length-bucketed batches through a `run(ids)`
callable, then the mean of each text's window logits -- used by the runtime, the export gate and
bench alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

PROBE = "a"
LONG_TEXT = ("truncate", "windows")
WINDOW_KEYS = ("long_text", "window", "stride", "max_windows", "pool")  # recipe data keys for long texts
POOLS = ("mean",)


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
    long_text: str = "truncate"  # truncate | windows
    window: int | None = None  # tokens per window, special tokens included (None: max_length)
    stride: int | None = None  # content tokens between window starts (None: 3/4 of a window's content)
    max_windows: int | None = None  # cap per text (None: no cap)
    pool: str = "mean"

    @classmethod
    def create(cls, tokenizer, *, max_length, truncation="head", head_share=0.25, lowercase=False,
               padding_side="right", pad_token_id=0, long_text="truncate", window=None, stride=None,
               max_windows=None, pool="mean", max_tokens=None) -> Preprocessor:
        """Build from a `tokenizers.Tokenizer` (a transformers fast tokenizer's `backend_tokenizer`).

        `max_tokens`: the model's positions, which a window must fit (None: not checked). Bad
        settings raise ValueError whose message starts with the setting's name.
        """
        if truncation not in ("head", "tail", "head+tail"):
            raise ValueError(f"truncation must be head, tail or head+tail, got {truncation!r}")
        if padding_side not in ("left", "right"):
            raise ValueError(f"padding_side must be left or right, got {padding_side!r}")
        if long_text not in LONG_TEXT:
            raise ValueError(f"long_text must be {' or '.join(LONG_TEXT)}, got {long_text!r}")
        if pool not in POOLS:
            raise ValueError(f"pool must be {' or '.join(POOLS)}, got {pool!r}")
        tokenizer.no_truncation()
        tokenizer.no_padding()
        prefix, suffix = special_template(tokenizer)
        n_special = len(prefix) + len(suffix)
        if max_length <= n_special:
            raise ValueError(f"max_length {max_length} leaves no room for text")
        if window is not None and int(window) <= n_special:
            raise ValueError(f"window {window} leaves no room for text ({n_special} special tokens)")
        content = int(window or max_length) - n_special
        if stride is not None and not 0 < int(stride) <= content:
            raise ValueError(f"stride {stride} must be between 1 and the window's {content} content tokens "
                             f"(window {window or max_length} minus {n_special} special tokens)")
        if long_text == "windows" and max_tokens is not None and int(window or max_length) > max_tokens:
            raise ValueError(f"window {window or max_length}{'' if window else ' (= max_length)'} is longer than the "
                             f"model's {max_tokens} positions; lower it")
        if max_windows is not None and int(max_windows) < 1:
            raise ValueError(f"max_windows {max_windows} must be at least 1")
        return cls(tokenizer, max_length, truncation, head_share, lowercase, padding_side, pad_token_id, prefix, suffix,
                   long_text, None if window is None else int(window), None if stride is None else int(stride),
                   None if max_windows is None else int(max_windows), pool)

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
            long_text=pre.get("long_text", "truncate"),  # artifacts exported before windows existed truncate
            window=pre.get("window"),
            stride=pre.get("stride"),
            max_windows=pre.get("max_windows"),
            pool=pre.get("pool", "mean"),
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
            "long_text": self.long_text,
            "window": self.window_length,
            "stride": self.window_stride,
            "max_windows": self.max_windows,
            "pool": self.pool,
        }

    @property
    def window_length(self) -> int:
        """Tokens per window, special tokens included."""
        return self.window or self.max_length

    @property
    def window_content(self) -> int:
        return self.window_length - len(self.prefix) - len(self.suffix)

    @property
    def window_stride(self) -> int:
        return self.stride or max(1, (self.window_content * 3) // 4)

    # ----------------------------------------------------------------------------------------
    def truncate(self, ids: list[int], budget: int | None = None) -> list[int]:
        budget = budget or self.max_length - len(self.prefix) - len(self.suffix)
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

    def window_starts(self, n: int) -> list[int]:
        """Start offsets (in content tokens) of the windows of a text with `n` content tokens."""
        last = n - self.window_content
        if last <= 0:
            return [0]
        count = -(-last // self.window_stride) + 1
        if self.max_windows is not None and count > self.max_windows:
            if self.max_windows == 1:
                return [0]
            return [round(i * last / (self.max_windows - 1)) for i in range(self.max_windows)]
        return [min(i * self.window_stride, last) for i in range(count)]

    def encode_windows(self, texts: list[str]) -> list[list[list[int]]]:
        """Per text, its windows of ids (special tokens included, unpadded).

        `long_text: truncate` gives one window per text, `encode`'s ids; `windows` see the module docstring.
        """
        if self.long_text == "truncate":
            return [[ids] for ids in self.encode(texts)]
        texts = [t.lower() if self.lowercase else t for t in texts]
        size, out = self.window_content, []
        for enc in self.tokenizer.encode_batch(texts, add_special_tokens=False):
            ids = enc.ids
            if len(ids) > size and self.max_windows == 1:
                out.append([self.prefix + self.truncate(ids, size) + self.suffix])
                continue
            out.append([self.prefix + ids[s:s + size] + self.suffix for s in self.window_starts(len(ids))])
        return out

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


def pooled_logits(windows: list[list[list[int]]], run: Callable[[list[list[int]]], np.ndarray], batch_size: int,
                  pool: str = "mean") -> np.ndarray:
    """Logits per text from its windows (`Preprocessor.encode_windows`): the one scoring loop.

    Every window of every text goes into shared length-bucketed batches of at most `batch_size`
    windows (`run(list of ids) -> logits (n, labels)`; a long text's windows all have the same length,
    so they sit side by side in the sorted order); then each text gets the mean of its windows'
    logits. Texts of one window cost exactly what truncation costs: the same batches, the same calls,
    the same logits.
    """
    if pool not in POOLS:
        raise ValueError(f"pool must be {' or '.join(POOLS)}, got {pool!r}")
    flat = [w for ws in windows for w in ws]
    owner = np.repeat(np.arange(len(windows)), [len(ws) for ws in windows])
    scores: np.ndarray | None = None
    for bucket in length_buckets([len(x) for x in flat], max(1, int(batch_size))):
        got = np.asarray(run([flat[i] for i in bucket]), dtype=np.float32)
        if scores is None:
            scores = np.zeros((len(flat), got.shape[-1]), dtype=np.float32)
        scores[bucket] = got
    if scores is None:
        return np.zeros((len(windows), 0), dtype=np.float32)
    if len(flat) == len(windows):
        return scores
    total = np.zeros((len(windows), scores.shape[1]), dtype=np.float64)
    np.add.at(total, owner, scores)
    return (total / np.bincount(owner, minlength=len(windows))[:, None]).astype(np.float32)
