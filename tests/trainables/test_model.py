import pytest

from trainables.config import ConfigError, LoraSection
from trainables.model import build_model

H, L, INTER = 32, 2, 64  # tiny_bert: hidden, layers, intermediate


def lora_params(shapes, r):
    return sum(r * (i + o) for i, o in shapes)


# (preset, LoRA-wrapped (in, out) shapes per layer)
CASES = [
    ("qv", [(H, H)] * 2),
    ("qkv", [(H, H)] * 3),
    ("attn", [(H, H)] * 4),
    ("all", [(H, H)] * 4 + [(H, INTER), (INTER, H)]),
]


@pytest.mark.parametrize("preset,shapes", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("r", [1, 4])
def test_presets_wrap_the_expected_layers(tiny_bert, preset, shapes, r):
    model = build_model(str(tiny_bert), LoraSection(r=r, target_modules=preset), ["neg", "pos"])
    head = H * H + H + H * 2 + 2  # pooler is frozen; classifier (H->2) trained via modules_to_save
    lora = L * lora_params(shapes, r)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    assert trainable == lora + (H * 2 + 2), (trainable, lora, head)
    frozen_base = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n and "classifier" not in n]
    assert frozen_base == []


def test_unknown_module_lists_available(tiny_bert):
    with pytest.raises(ConfigError) as e:
        build_model(str(tiny_bert), LoraSection(target_modules=["query", "q_proj"]), ["a", "b"])
    msg = str(e.value)
    assert "q_proj" in msg and "attention.self.query" in msg and "intermediate.dense" in msg


def test_unknown_model_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match="cannot load"):
        build_model(str(tmp_path / "no-model"), LoraSection(), ["a", "b"])


def test_modules_to_save_trains_the_pooler_too(tiny_bert, tmp_path):
    """``lora.modules_to_save=[pooler]``: the pooler's H*H+H weights train and land in the adapter."""
    from safetensors.torch import load_file

    base = build_model(str(tiny_bert), LoraSection(r=4), ["neg", "pos"])
    model = build_model(str(tiny_bert), LoraSection(r=4, modules_to_save=["pooler"]), ["neg", "pos"])
    count = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)  # noqa: E731
    assert count(model) - count(base) == H * H + H
    model.save_pretrained(tmp_path)
    assert any("pooler" in k for k in load_file(str(tmp_path / "adapter_model.safetensors")))


def test_unknown_module_to_save_is_one_line(tiny_bert):
    with pytest.raises(ConfigError, match=r"lora.modules_to_save: \['poolr'\] match no module.*pooler"):
        build_model(str(tiny_bert), LoraSection(modules_to_save=["poolr"]), ["neg", "pos"])


@pytest.mark.parametrize("dropout,deterministic", [(None, False), (0.0, True)])
def test_model_dropout_sets_the_base_models_dropout(tiny_bert, dropout, deterministic):
    """``model.dropout=0`` turns off every dropout of the frozen base (hidden, attention, head input):
    two training-mode forwards agree; the model's own 0.1 makes them differ. LoRA's stays its own."""
    import torch

    model = build_model(str(tiny_bert), LoraSection(r=2, dropout=0.0), ["neg", "pos"], base_dropout=dropout).train()
    ids = torch.tensor([[101, 2204, 3185, 2003, 2200, 2204, 102]])
    with torch.no_grad():
        a, b = model(input_ids=ids).logits, model(input_ids=ids).logits
    assert torch.equal(a, b) == deterministic
    lora = build_model(str(tiny_bert), LoraSection(r=2, dropout=0.2), ["neg", "pos"], base_dropout=0.0)
    assert {m.p for n, m in lora.named_modules() if isinstance(m, torch.nn.Dropout) and "lora_dropout" in n} == {0.2}
