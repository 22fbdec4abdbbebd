"""FastDropout: drop probability p to 1/65536, inverted scaling, the same mask in backward."""

from __future__ import annotations

import pytest
import torch

from alloylm.train.fast_dropout import FastDropout, drop_threshold, fast_dropout, keep_mask


def test_threshold_is_p_in_65536ths():
    assert drop_threshold(0.05) == 3277  # round(0.05 * 65536 = 3276.8)
    assert drop_threshold(0.0) == 0 and drop_threshold(0.5) == 32768


def test_drop_fraction_matches_p():
    torch.manual_seed(0)
    keep = keep_mask(torch.Size([1_000_000]), 0.05)
    # binomial sd for n=1e6, p=0.05: 2.2e-4; 5 sd
    assert abs((~keep).float().mean().item() - 3277 / 65536) < 1.1e-3


def test_kept_values_are_scaled_and_backward_uses_the_mask():
    torch.manual_seed(0)
    x = torch.randn(64, 33, requires_grad=True)
    y = fast_dropout(x, 0.5)
    kept = y != 0
    scale = 65536 / (65536 - 32768)
    torch.testing.assert_close(y[kept], x.detach()[kept] * scale)
    y.sum().backward()
    assert torch.equal(x.grad != 0, kept)
    assert set(x.grad.unique().tolist()) == {0.0, scale}


def test_identity_when_evaluating_or_p_is_zero():
    x = torch.randn(4, 4)
    layer = FastDropout(0.1).eval()
    assert layer(x) is x
    assert fast_dropout(x, 0.0) is x


def test_seeded_runs_draw_the_same_mask():
    x = torch.ones(1000)
    torch.manual_seed(3)
    a = fast_dropout(x, 0.2)
    torch.manual_seed(3)
    b = fast_dropout(x, 0.2)
    assert torch.equal(a, b) and not torch.equal(a, x)


@pytest.mark.parametrize("shape", [(3,), (5, 7), (2, 3, 5)])
def test_any_shape(shape):
    assert fast_dropout(torch.ones(shape), 0.3).shape == torch.Size(shape)
