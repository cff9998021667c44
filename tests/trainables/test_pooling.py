"""trainables.pooling + model.pooling: mean pooling is the masked mean, ``auto`` follows what the
encoder was trained with, and what cannot work fails in one line."""

from __future__ import annotations

import pytest
import torch

from trainables.config import ConfigError, LoraSection, TrialConfig
from trainables.model import build_model, trained_with_mean_pooling
from trainables.pooling import MeanPooler, pooling_of, use_mean_pooling


@pytest.fixture(scope="module")
def tiny_roberta(tmp_path_factory, tiny_st_bert):
    """A RoBERTa (its head reads the first token itself: no pooler), also marked as trained with mean pooling."""
    import shutil

    from transformers import RobertaConfig, RobertaForSequenceClassification

    out = tmp_path_factory.mktemp("tiny_roberta")
    torch.manual_seed(0)
    RobertaForSequenceClassification(RobertaConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                                   intermediate_size=64)).save_pretrained(out)
    shutil.copytree(tiny_st_bert / "1_Pooling", out / "1_Pooling")
    return out


# (model fixture, model.pooling, what the model gets — or the error)
CASES = [
    ("tiny_bert", "auto", "cls"),
    ("tiny_bert", "mean", "mean"),
    ("tiny_st_bert", "auto", "mean"),
    ("tiny_st_bert", "cls", "cls"),
    ("tiny_roberta", "auto", "cls"),  # trained with mean pooling, but its head has no pooler to replace
    ("tiny_roberta", "mean", "reads no pooler"),
]


@pytest.mark.parametrize("fixture,pooling,expected", CASES, ids=[f"{c[0]}-{c[1]}" for c in CASES])
def test_pooling_resolution(fixture, pooling, expected, request):
    path = str(request.getfixturevalue(fixture))
    if expected in ("cls", "mean"):
        assert pooling_of(build_model(path, LoraSection(r=2), ["neg", "pos"], pooling)) == expected
    else:
        with pytest.raises(ConfigError, match=f"model.pooling=mean: .*{expected}"):
            build_model(path, LoraSection(r=2), ["neg", "pos"], pooling)


def test_the_embedded_minilm_was_trained_with_mean_pooling():
    assert trained_with_mean_pooling("embedded-minilm")
    assert TrialConfig.from_dict({}).model.pooling == "auto"


def test_mean_pooler_is_the_masked_mean(tiny_bert):
    """The classifier sees the mean over real tokens only; padding rows never enter it."""
    model = build_model(str(tiny_bert), LoraSection(r=2), ["neg", "pos"], "mean").eval()
    seen = {}
    pooler = next(m for m in model.modules() if isinstance(m, MeanPooler))
    pooler.register_forward_hook(lambda m, args, out: seen.update(h=args[0], out=out))
    ids = torch.tensor([[101, 2204, 3185, 102, 0, 0], [101, 2919, 2143, 2003, 2919, 102]])
    mask = (ids != 0).long()
    with torch.inference_mode():
        model(input_ids=ids, attention_mask=mask)
    h = seen["h"]
    torch.testing.assert_close(seen["out"][0], h[0, :4].mean(0))
    torch.testing.assert_close(seen["out"][1], h[1].mean(0))


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_logits_do_not_depend_on_padding(tiny_bert, pooling):
    """A sentence alone and padded inside a batch with a longer one: the same logits."""
    model = build_model(str(tiny_bert), LoraSection(r=2), ["neg", "pos"], pooling).eval()
    short, long_ = [101, 2204, 3185, 102], [101, 2919, 2143, 2003, 2919, 1010, 2200, 2919, 102]
    with torch.inference_mode():
        alone = model(input_ids=torch.tensor([short])).logits[0]
        batch = model(input_ids=torch.tensor([short + [0] * 5, long_]),
                      attention_mask=torch.tensor([[1] * 4 + [0] * 5, [1] * 9])).logits[0]
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=1e-5)


def test_mean_pooling_changes_what_the_head_reads(tiny_bert):
    """Not a no-op: same weights, cls vs mean pooling, different logits."""
    torch.manual_seed(0)
    cls = build_model(str(tiny_bert), LoraSection(r=2), ["neg", "pos"], "cls").eval()
    torch.manual_seed(0)
    mean = build_model(str(tiny_bert), LoraSection(r=2), ["neg", "pos"], "mean").eval()
    ids = torch.tensor([[101, 2204, 3185, 102]])
    with torch.inference_mode():
        assert not torch.allclose(cls(input_ids=ids).logits, mean(input_ids=ids).logits)


def test_training_the_pooler_with_mean_pooling_is_an_error(tiny_st_bert):
    with pytest.raises(ConfigError, match="pooler has no weights with mean pooling"):
        build_model(str(tiny_st_bert), LoraSection(modules_to_save=["pooler"]), ["neg", "pos"])


def test_use_mean_pooling_is_idempotent(tiny_bert):
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(tiny_bert)
    use_mean_pooling(model)
    hooks = len(model.bert._forward_pre_hooks)
    use_mean_pooling(model)
    assert len(model.bert._forward_pre_hooks) == hooks and pooling_of(model) == "mean"
