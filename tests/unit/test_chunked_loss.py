"""The chunked LM-head cross-entropy equals transformers' causal-LM loss, value and gradients."""

from __future__ import annotations

import math

import pytest
import torch

from alloylm.train.chunked_loss import causal_lm_loss, linear_cross_entropy_sum, next_token_targets


def test_hand_computed_two_token_vocabulary():
    # logits = h @ W^T = [0, ln 3]: softmax [1/4, 3/4]
    hidden = torch.tensor([[1.0], [1.0]], requires_grad=True)
    weight = torch.tensor([[0.0], [math.log(3.0)]], requires_grad=True)
    total = linear_cross_entropy_sum(hidden, weight, torch.tensor([0, 1]), chunk_rows=1)
    assert total.item() == pytest.approx(math.log(4.0) + math.log(4.0 / 3.0), abs=1e-6)
    total.backward()
    # d/dh = (softmax - onehot) @ W: row 0 (target 0): (-3/4)*0 + (3/4)*ln3; row 1: (1/4)*0 - (1/4)*ln3
    assert hidden.grad[:, 0].tolist() == pytest.approx(
        [0.75 * math.log(3.0), -0.25 * math.log(3.0)], abs=1e-6
    )
    # d/dW = (softmax - onehot)^T @ h, summed over both rows: [-3/4 + 1/4, 3/4 - 1/4]
    assert weight.grad[:, 0].tolist() == pytest.approx([-0.5, 0.5], abs=1e-6)


def test_targets_are_the_next_labels():
    labels = torch.tensor([[5, 6, 7], [8, -100, 9]])
    assert next_token_targets(labels).tolist() == [6, 7, -100, -100, 9, -100]
    given = torch.tensor([[1, 2, 3]])
    assert next_token_targets(labels[:1], given).tolist() == [1, 2, 3]


def _reference(hidden, weight, labels, num_items):
    logits = (hidden @ weight.T).float()
    targets = next_token_targets(labels)
    reduction = "mean" if num_items is None else "sum"
    loss = torch.nn.functional.cross_entropy(
        logits.reshape(-1, weight.shape[0]), targets, ignore_index=-100, reduction=reduction
    )
    return loss if num_items is None else loss / num_items


@pytest.mark.parametrize("num_items", [None, 40])
@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_equals_cross_entropy_in_fp32(num_items, chunk_rows):
    torch.manual_seed(0)
    hidden = torch.randn(2, 23, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    labels = torch.randint(0, 300, (2, 23))
    labels[0, :6] = -100  # a prompt that is not trained on
    expected = _reference(hidden, weight, labels, num_items)
    want = torch.autograd.grad(expected, (hidden, weight))
    got_loss = causal_lm_loss(
        hidden, weight, labels, num_items_in_batch=num_items, chunk_rows=chunk_rows
    )
    got = torch.autograd.grad(got_loss, (hidden, weight))
    assert got_loss.item() == pytest.approx(expected.item(), rel=1e-6)
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_under_bf16_autocast_the_logits_are_rounded_as_the_full_head_does():
    torch.manual_seed(1)
    hidden = torch.randn(3, 11, 32, requires_grad=True)
    weight = torch.randn(500, 32, requires_grad=True)
    labels = torch.randint(0, 500, (3, 11))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        expected = _reference(hidden, weight, labels, None)
        got = causal_lm_loss(hidden, weight, labels, chunk_rows=5)
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    grad_got = torch.autograd.grad(got, weight)[0]
    grad_want = torch.autograd.grad(expected, weight)[0]
    assert grad_got.dtype == torch.float32
    # both differentiate through bf16 products: equal to bf16 precision
    torch.testing.assert_close(grad_got, grad_want, rtol=2e-2, atol=2e-3)


def test_frozen_head_gets_no_gradient_and_no_work():
    hidden = torch.randn(1, 5, 8, requires_grad=True)
    weight = torch.randn(20, 8)  # requires_grad False, as a frozen LoRA head
    loss = causal_lm_loss(hidden, weight, torch.randint(0, 20, (1, 5)))
    loss.backward()
    assert hidden.grad is not None and weight.grad is None
