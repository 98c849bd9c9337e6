"""Shared fixtures: tiny random models and tokenizers built inside the tests (nothing is downloaded).

- `make_tokenizer(kind, dir)`: a `tokenizers` BPE/WordPiece trained on sentences the test writes,
  saved as a transformers fast tokenizer (kind: gpt_neox, roberta, bert, distilbert, gpt2).
- `make_model_dir(kind, dir)`: a tiny random sequence classifier (hidden 32, 2 layers) + tokenizer.
- `write_sentiment_data(dir)`: a separable synthetic sentiment set as parquet train/validation/test.
- `tiny_recipe(...)`: a recipe dict for a tiny local model and synthetic data, fast on CPU.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("EDGESENT_SHARED", ROOT.parent / "shared"))

POS = ["great", "wonderful", "excellent", "superb", "loved", "brilliant", "delightful", "amazing", "fantastic", "moving"]
NEG = ["awful", "terrible", "boring", "dreadful", "hated", "horrible", "dull", "poor", "painful", "worst"]
FILLER = ["the", "movie", "film", "plot", "actors", "story", "was", "really", "quite", "and", "this", "scene",
          "music", "director", "ending", "a", "it", "felt", "i", "thought", "cast", "script", "very", "so"]


def sentences(n: int = 400, seed: int = 0) -> list[tuple[str, int]]:
    """Separable synthetic reviews: the label is carried by sentiment words among filler."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = i % 2
        words = rng.choices(FILLER, k=rng.randint(4, 14))
        cue = POS if label else NEG
        for _ in range(rng.randint(1, 3)):
            words.insert(rng.randrange(len(words) + 1), rng.choice(cue))
        rows.append((" ".join(words), label))
    rng.shuffle(rows)
    return rows


def make_tokenizer(kind: str, out: Path, vocab_size: int = 300):
    """Train a small tokenizer of the family `kind` and save it as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = [s for s, _ in sentences(600, seed=123)] + [" ".join(POS + NEG + FILLER)] * 3
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if kind in ("bert", "distilbert"):
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = __import__("tokenizers").normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(corpus, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials))
        cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)]
        )
        tok.decoder = decoders.WordPiece()
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]", model_max_length=512)
    else:
        tok = Tokenizer(models.BPE())
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        if kind == "roberta":
            specials = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
            tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
            tok.post_processor = processors.RobertaProcessing(("</s>", tok.token_to_id("</s>")), ("<s>", tok.token_to_id("<s>")))
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                           pad_token="<pad>", cls_token="<s>", sep_token="</s>", mask_token="<mask>",
                                           model_max_length=512)
        else:  # gpt_neox / gpt2: no pad token, like the real ones
            specials = ["<|endoftext|>"]
            tok.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
            tok.post_processor = processors.ByteLevel(trim_offsets=False)
            fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>",
                                           unk_token="<|endoftext|>", model_max_length=2048)
    fast.save_pretrained(out)
    return fast


TOKENIZER_KIND = {"modernbert": "bert", "xlm-roberta": "roberta"}  # families that reuse another's tokenizer


def tiny_config(kind: str, vocab_size: int, pad_token_id: int | None, num_labels: int = 2, tok=None):
    from transformers import (
        BertConfig,
        DistilBertConfig,
        GPT2Config,
        GPTNeoXConfig,
        ModernBertConfig,
        RobertaConfig,
        XLMRobertaConfig,
    )

    common = dict(num_labels=num_labels, id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1})
    if kind == "gpt_neox":
        return GPTNeoXConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=512, rotary_pct=0.25,
                             pad_token_id=pad_token_id, tie_word_embeddings=False, **common)
    if kind in ("roberta", "xlm-roberta"):
        return (RobertaConfig if kind == "roberta" else XLMRobertaConfig)(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                             intermediate_size=64, max_position_embeddings=520, pad_token_id=pad_token_id,
                             bos_token_id=0, eos_token_id=2, type_vocab_size=1, **common)
    if kind == "bert":
        return BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                          intermediate_size=64, max_position_embeddings=512, pad_token_id=pad_token_id, **common)
    if kind == "distilbert":
        return DistilBertConfig(vocab_size=vocab_size, dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                max_position_embeddings=512, pad_token_id=pad_token_id, **common)
    if kind == "gpt2":
        return GPT2Config(vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=2, n_positions=512,
                          pad_token_id=pad_token_id, **common)
    if kind == "modernbert":
        return ModernBertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                intermediate_size=64, max_position_embeddings=512, pad_token_id=pad_token_id,
                                cls_token_id=tok.cls_token_id, sep_token_id=tok.sep_token_id,
                                bos_token_id=tok.cls_token_id, eos_token_id=tok.sep_token_id,
                                attn_implementation="eager", reference_compile=False, **common)
    raise ValueError(kind)


def make_model_dir(kind: str, out: Path, seed: int = 0) -> Path:
    """A tiny random sequence classifier of family `kind`, saved with its tokenizer (safetensors)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    out = Path(out)
    tok = make_tokenizer(TOKENIZER_KIND.get(kind, kind), out)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
        tok.save_pretrained(out)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(kind, len(tok), tok.pad_token_id, tok=tok))
    model.eval()
    model.save_pretrained(out, safe_serialization=True)
    return out


def write_sentiment_data(out: Path, n_train: int = 320, n_val: int = 80, n_test: int = 120, fmt: str = "parquet") -> Path:
    import pandas as pd

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows = sentences(n_train + n_val + n_test, seed=7)
    parts = {"train": rows[:n_train], "validation": rows[n_train:n_train + n_val], "test": rows[n_train + n_val:]}
    for split, part in parts.items():
        df = pd.DataFrame(part, columns=["text", "label"])
        if fmt == "parquet":
            df.to_parquet(out / f"{split}.parquet", index=False)
        elif fmt == "csv":
            df.to_csv(out / f"{split}.csv", index=False)
        else:
            df.to_json(out / f"{split}.jsonl", orient="records", lines=True)
    return out


def tiny_recipe(model_dir: Path, data_dir: Path, out_root: Path, **sections) -> dict:
    recipe = {
        "name": "tiny",
        "seed": 0,
        "output_dir": str(out_root),
        "model": {"name_or_path": str(model_dir), "method": "full"},
        "data": {"dataset": str(data_dir), "max_length": 32},
        "training": {"epochs": 3, "batch_size": 16, "lr": 3e-3, "logging_steps": 5, "threads": 1},
    }
    for key, value in sections.items():
        recipe[key].update(value) if isinstance(value, dict) and isinstance(recipe.get(key), dict) else recipe.__setitem__(key, value)
    return recipe


def run_cli(argv: list, capsys) -> tuple[int, str, str]:
    """(exit code, stdout, stderr) of `edgesent ARGV` run in this process."""
    from edgesent.cli import main

    capsys.readouterr()
    try:
        main([str(a) for a in argv])
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    out, err = capsys.readouterr()
    return code, out, err


# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def model_factory(tmp_path_factory):
    """model_factory(kind) -> path of a cached tiny model folder of that family."""
    cache: dict[str, Path] = {}

    def make(kind: str) -> Path:
        if kind not in cache:
            cache[kind] = make_model_dir(kind, tmp_path_factory.mktemp(f"model-{kind}"))
        return cache[kind]

    return make


@pytest.fixture(scope="session")
def sentiment_data(tmp_path_factory) -> Path:
    return write_sentiment_data(tmp_path_factory.mktemp("data"))


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, model_factory, sentiment_data) -> Path:
    """A tiny BERT run trained on the synthetic reviews (one per test module: tests may export into it)."""
    from test_export import write_run

    root = tmp_path_factory.mktemp("runs")
    recipe = tiny_recipe(model_factory("bert"), sentiment_data, root / "exports")
    return write_run(root / "exports" / "tiny-20250101-000000", recipe, train=True, data_dir=sentiment_data)


@pytest.fixture(autouse=True)
def _one_thread():
    try:
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    yield


def pytest_collection_modifyitems(config, items):
    import shutil

    skip_shared = pytest.mark.skip(reason=f"needs {SHARED} (real models and data)")
    skip_browser = pytest.mark.skip(reason="needs chromium (apt-get install chromium)")
    have_cuda = False
    try:
        import torch

        have_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    for item in items:
        if "shared" in item.keywords and not (SHARED / "models").is_dir():
            item.add_marker(skip_shared)
        if "gpu" in item.keywords and not have_cuda:
            item.add_marker(pytest.mark.skip(reason="needs CUDA"))
        if "browser" in item.keywords and not (shutil.which("chromium") or shutil.which("chromium-browser")):
            item.add_marker(skip_browser)
