"""The shared preprocessing keeps the tokens the recipe asks for, identically to transformers."""

import numpy as np
import pytest

from edgesent.textproc import Preprocessor, length_buckets, special_template


@pytest.fixture(scope="module")
def roberta_tok(model_factory):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_factory("roberta"))


def make(tok, **kw):
    kw.setdefault("max_length", 12)
    return Preprocessor.create(tok.backend_tokenizer, pad_token_id=tok.pad_token_id, **kw)


LONG = " ".join(f"w{i}" for i in range(40))


def test_special_template_roberta(roberta_tok):
    prefix, suffix = special_template(roberta_tok.backend_tokenizer)
    assert prefix == [roberta_tok.bos_token_id] and suffix == [roberta_tok.eos_token_id]


def test_head_matches_transformers_truncation(roberta_tok):
    pre = make(roberta_tok, truncation="head")
    ref = roberta_tok([LONG, "short one"], truncation=True, max_length=12)["input_ids"]
    assert pre.encode([LONG, "short one"]) == ref


@pytest.mark.parametrize("strategy,head_share", [("head", 0.25), ("tail", 0.25), ("head+tail", 0.25), ("head+tail", 0.5)])
def test_truncation_keeps_right_tokens(roberta_tok, strategy, head_share):
    pre = make(roberta_tok, truncation=strategy, head_share=head_share)
    content = roberta_tok(LONG, add_special_tokens=False)["input_ids"]
    ids = pre.encode([LONG])[0]
    assert len(ids) == 12 and ids[0] == roberta_tok.bos_token_id and ids[-1] == roberta_tok.eos_token_id
    body, budget = ids[1:-1], 10
    if strategy == "head":
        assert body == content[:budget]
    elif strategy == "tail":
        assert body == content[-budget:]
    else:
        n_head = round(budget * head_share)
        assert body == content[:n_head] + content[-(budget - n_head):]


def test_lowercase(roberta_tok):
    pre = make(roberta_tok, lowercase=True)
    assert pre.encode(["GREAT Movie"]) == make(roberta_tok).encode(["great movie"])


@pytest.mark.parametrize("side", ["right", "left"])
def test_pad(roberta_tok, side):
    pre = make(roberta_tok, padding_side=side)
    batch = pre.pad([[5, 6, 7], [8]])
    pad = roberta_tok.pad_token_id
    if side == "right":
        assert batch["input_ids"].tolist() == [[5, 6, 7], [8, pad, pad]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    else:
        assert batch["input_ids"].tolist() == [[5, 6, 7], [pad, pad, 8]]
        assert batch["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]
    assert batch["input_ids"].dtype == np.int64


def test_manifest_round_trip(roberta_tok):
    pre = make(roberta_tok, truncation="tail", lowercase=True)
    again = Preprocessor.from_manifest(roberta_tok.backend_tokenizer, pre.to_manifest("<pad>"))
    assert again.encode([LONG]) == pre.encode([LONG])


def test_length_buckets_group_similar_lengths():
    lengths = [5, 1, 9, 2, 8, 3]
    buckets = length_buckets(lengths, 2)
    assert sorted(i for b in buckets for i in b) == list(range(6))
    assert [sorted(lengths[i] for i in b) for b in buckets] == [[1, 2], [3, 5], [8, 9]]


@pytest.mark.parametrize("stride", [1, 4, 10])
def test_windows_cover_every_token_and_end_at_the_end(roberta_tok, stride):
    pre = make(roberta_tok, long_text="windows", stride=stride)
    content = roberta_tok(LONG, add_special_tokens=False)["input_ids"]
    windows = pre.encode_windows([LONG, "short one"])
    assert windows[1] == pre.encode(["short one"])  # fits one window: exactly the truncation ids
    long = windows[0]
    assert all(len(w) == 12 and w[0] == roberta_tok.bos_token_id and w[-1] == roberta_tok.eos_token_id for w in long)
    assert long[0][1:-1] == content[:10] and long[-1][1:-1] == content[-10:]
    starts = pre.window_starts(len(content))
    assert all(b - a <= stride for a, b in zip(starts[:-1], starts[1:], strict=True)) and starts[-1] == len(content) - 10
    assert [w[1:-1] for w in long] == [content[s:s + 10] for s in starts]


def test_window_settings_are_checked(roberta_tok):
    with pytest.raises(ValueError, match="^stride 11 must be between 1 and the window's 10 content tokens"):
        make(roberta_tok, long_text="windows", stride=11)
    with pytest.raises(ValueError, match="^max_windows 0"):
        make(roberta_tok, long_text="windows", max_windows=0)
    with pytest.raises(ValueError, match="^window 2 leaves no room"):
        make(roberta_tok, long_text="windows", window=2)
