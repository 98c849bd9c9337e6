"""The inputs bench feeds a model: the target's own preprocessing and batches of exactly `seq_len` tokens.

- `preprocessing_for` / `labels_for`: the tokenizer file, preprocessing settings and label names of a
  target -- the artifact's manifest, or the run's recipe when it has not been exported;
- `load_preprocessor`: the shared `textproc.Preprocessor` built from those settings;
- `synthetic_batch`: random non-special token ids between the template's special tokens, full mask;
- `text_batch`: real texts truncated (the artifact's strategy) and padded to exactly `seq_len`;
- `token_lengths` / `length_bucket`: a text's full token count (special tokens included) and its
  length bucket (<= 256, 257-512, 513-1024, > 1024 tokens), for per-length accuracy and latency.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from edgesent.bench.plan import Target


def preprocessing_for(target: Target, workdir: Path) -> tuple[str, dict]:
    """(tokenizer.json path, preprocessing settings): the artifact's, or the run's recipe when not exported.

    A run's tokenizer is saved as `tokenizer.json` under `workdir` so that workers load it the same way.
    """
    if target.artifact is not None:
        return str(target.artifact / "tokenizer.json"), dict(target.manifest["preprocessing"])
    from edgesent.config import load_recipe
    from edgesent.data import make_preprocessor
    from edgesent.model import load_tokenizer

    recipe = load_recipe(target.run / "recipe.yaml")
    tok_dir = target.run / "tokenizer"
    tok = load_tokenizer(str(tok_dir if tok_dir.is_dir() else recipe.model.name_or_path), recipe.model.pad_token)
    path = Path(workdir) / "tokenizer.json"
    tok.backend_tokenizer.save(str(path))
    return str(path), make_preprocessor(tok, recipe.data).to_manifest(tok.pad_token)


def labels_for(target: Target) -> list[str]:
    if target.manifest is not None:
        return list(target.manifest["labels"])
    from edgesent.config import load_recipe

    return list(load_recipe(target.run / "recipe.yaml").data.labels)


def load_preprocessor(tokenizer_file: str, preprocessing: dict):
    """The target's own Preprocessor (tokenizer.json + preprocessing settings)."""
    from tokenizers import Tokenizer

    from edgesent.textproc import Preprocessor

    return Preprocessor.from_manifest(Tokenizer.from_file(tokenizer_file), preprocessing)


def synthetic_batch(pre, batch: int, seq_len: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Exactly `seq_len` tokens per row: the template's special tokens around random non-special ids."""
    tok = pre.tokenizer
    special = {i for i, t in tok.get_added_tokens_decoder().items() if t.special} | {pre.pad_token_id}
    pool = np.setdiff1d(np.arange(tok.get_vocab_size()), np.fromiter(special, dtype=np.int64))
    n_content = max(seq_len - len(pre.prefix) - len(pre.suffix), 0)
    rows = [pre.prefix + rng.choice(pool, n_content).tolist() + pre.suffix for _ in range(batch)]
    rows = [r[:seq_len] for r in rows]
    return pre.pad(rows, pad_to=seq_len)


def text_batch(pre, texts: list[str], batch: int, seq_len: int, start: int = 0) -> dict[str, np.ndarray]:
    """`batch` real texts truncated (the artifact's strategy) and padded to exactly `seq_len` tokens."""
    sized = replace(pre, max_length=seq_len)
    chosen = [texts[(start + i) % len(texts)] for i in range(batch)]
    return sized.pad(sized.encode(chosen), pad_to=seq_len)


LENGTH_BUCKETS = ((256, "<=256"), (512, "257-512"), (1024, "513-1024"), (None, ">1024"))


def token_lengths(pre, texts: list[str]) -> list[int]:
    """Tokens per text before any truncation, the template's special tokens included."""
    encs = pre.tokenizer.encode_batch([t.lower() if pre.lowercase else t for t in texts], add_special_tokens=False)
    return [len(e.ids) + len(pre.prefix) + len(pre.suffix) for e in encs]


def length_bucket(n_tokens: int) -> str:
    return next(name for top, name in LENGTH_BUCKETS if top is None or n_tokens <= top)
