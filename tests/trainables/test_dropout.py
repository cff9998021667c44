import math

import pytest
import torch

from trainables.config import LoraSection
from trainables.dropout import FastDropout, use_fast_dropout
from trainables.model import build_model

N = 1_000_000  # elements per statistical check: 5 standard errors of a rate are < 0.0025


def _tol(p: float, n: int = N) -> float:
    return 5 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("p", [0.05, 0.1, 0.3, 0.5, 0.9])
def test_keep_rate_and_unbiased_output(p):
    torch.manual_seed(0)
    x = torch.ones(N)
    out = FastDropout(p).train()(x)
    kept = out != 0
    assert abs(kept.float().mean().item() - (1 - p)) < _tol(p)
    assert torch.allclose(out[kept], torch.full_like(out[kept], out[kept][0].item()))
    p16 = round(p * 65536) / 65536  # p is rounded to a multiple of 2^-16 …
    assert abs(out[kept][0].item() - 1 / (1 - p16)) < 1e-5  # … and the inverted-dropout scale uses it
    assert abs(out.mean().item() - 1.0) < _tol(p) / (1 - p)  # E[out] = x


def test_the_four_lanes_of_a_draw_are_independent():
    """Each 64-bit draw feeds 4 elements: every lane keeps at 1-p and neighbours are uncorrelated."""
    torch.manual_seed(1)
    keep = (FastDropout(0.3).train()(torch.ones(N)) != 0).float().view(-1, 4)
    for lane in range(4):
        assert abs(keep[:, lane].mean().item() - 0.7) < _tol(0.3, N // 4)
    corr = torch.corrcoef(keep.T)
    off_diagonal = corr[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.abs().max().item() < 0.02


@pytest.mark.parametrize("shape", [(7,), (3, 5, 11), (2, 1, 384)])
def test_gradient_uses_the_forward_mask(shape):
    torch.manual_seed(2)
    x = torch.randn(shape, requires_grad=True)
    out = FastDropout(0.2).train()(x)
    out.sum().backward()
    mask = (out != 0).float()
    assert torch.allclose(x.grad, mask / (1 - 0.2), atol=1e-4)
    assert torch.allclose(out, x.detach() * mask / (1 - 0.2), atol=1e-5)


def test_seeded_reproducible_and_identity_when_off():
    x = torch.randn(4, 9)
    torch.manual_seed(3)
    a = FastDropout(0.1).train()(x)
    torch.manual_seed(3)
    b = FastDropout(0.1).train()(x)
    assert torch.equal(a, b)
    assert torch.equal(FastDropout(0.1).eval()(x), x)
    assert torch.equal(FastDropout(0.0).train()(x), x)


def test_use_fast_dropout_swaps_every_dropout_of_a_lora_model(tiny_bert):
    model = build_model(str(tiny_bert), LoraSection(r=4, dropout=0.1), ["neg", "pos"])
    before = [n for n, m in model.named_modules() if type(m) is torch.nn.Dropout and m.p > 0]
    assert any("lora_dropout" in n for n in before) and any("classifier" not in n for n in before)
    model.eval()
    ids = torch.randint(5, 100, (2, 6))
    ref = model(input_ids=ids).logits
    assert use_fast_dropout(model) == len(before)
    assert [n for n, m in model.named_modules() if isinstance(m, FastDropout)] == before
    assert not [m for m in model.modules() if type(m) is torch.nn.Dropout and m.p > 0]
    assert torch.equal(model(input_ids=ids).logits, ref)  # eval: dropout off, same model
    model.train()
    loss = model(input_ids=ids, labels=torch.tensor([0, 1])).loss
    loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
