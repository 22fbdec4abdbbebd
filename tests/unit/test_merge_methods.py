"""Each merge method: identities on random tensors and hand-computed values."""

from __future__ import annotations

import pytest
import torch

from alloylm.merge.methods.dare import dare_linear, dare_ties, random_drop
from alloylm.merge.methods.linear import linear
from alloylm.merge.methods.model_stock import model_stock
from alloylm.merge.methods.slerp import slerp
from alloylm.merge.methods.spec import MergeMethod
from alloylm.merge.methods.task_arithmetic import task_arithmetic
from alloylm.merge.methods.ties import elect_sign, magnitude_trim, ties
from alloylm.registry import MERGE_METHODS


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def x() -> torch.Tensor:
    torch.manual_seed(0)
    return torch.randn(16, 8)


def test_every_registered_method_declares_itself():
    for name in MERGE_METHODS.names():
        method = MERGE_METHODS.get(name)
        assert isinstance(method, MergeMethod) and callable(method.apply)


def test_equal_inputs_give_the_input(x):
    assert torch.allclose(slerp(0.37, x, x.clone()), x, atol=1e-6)
    assert torch.allclose(linear([x, x, x], [0.2, 0.3, 0.5]), x, atol=1e-6)
    assert torch.allclose(task_arithmetic(x, [x, x], [0.5, 2.0]), x)
    assert torch.allclose(ties(x, [x, x], [1.0, 1.0], [0.5, 0.5]), x)
    assert torch.allclose(dare_linear(x, [x, x], [1.0, 1.0], [0.3, 0.3], gen()), x)
    assert torch.allclose(dare_ties(x, [x, x], [1.0, 1.0], [0.3, 0.3], gen()), x)


def test_zero_task_vectors_give_the_base(x):
    base = x
    others = [base.clone(), base.clone()]
    assert torch.equal(task_arithmetic(base, others, [0.7, 0.3]), base)
    assert torch.equal(ties(base, others, [0.7, 0.3], [1.0, 1.0]), base)
    assert torch.equal(dare_linear(base, others, [0.7, 0.3], [0.5, 0.5], gen()), base)
    assert torch.equal(dare_ties(base, others, [0.7, 0.3], [0.5, 0.5], gen()), base)


def test_linear_by_hand():
    a, b = torch.tensor([0.0, 2.0]), torch.tensor([4.0, 6.0])
    assert torch.allclose(linear([a, b], [1.0, 3.0]), torch.tensor([3.0, 5.0]))
    assert torch.allclose(linear([a, b], [1.0, 3.0], normalize=False), torch.tensor([12.0, 20.0]))


def test_task_arithmetic_by_hand():
    base = torch.tensor([1.0, 1.0])
    result = task_arithmetic(
        base, [torch.tensor([3.0, 0.0]), torch.tensor([1.0, 5.0])], [0.5, 0.25], lambda_=2.0
    )
    # deltas [2, -1] and [0, 4]; 0.5*[2,-1] + 0.25*[0,4] = [1, 0.5]; x2 -> [2, 1]
    assert torch.allclose(result, torch.tensor([3.0, 2.0]))


def test_ties_by_hand():
    base = torch.zeros(3)
    m1, m2 = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([-3.0, 1.0, 1.0])
    # elected signs from the sum [-2, -1, 4]: [-, -, +]; agreeing entries averaged
    assert torch.allclose(
        ties(base, [m1, m2], [1.0, 1.0], [1.0, 1.0]), torch.tensor([-3.0, -2.0, 2.0])
    )
    assert torch.equal(elect_sign([m1, m2]), torch.tensor([-1.0, -1.0, 1.0]))
    assert torch.equal(
        magnitude_trim(torch.tensor([1.0, -5.0, 2.0, 0.5]), 0.5),
        torch.tensor([0.0, -5.0, 2.0, 0.0]),
    )


def test_dare_is_seeded_and_keeps_the_l1_norm(x):
    delta = x
    first = random_drop(delta, 0.5, gen(1))
    assert torch.equal(first, random_drop(delta, 0.5, gen(1)))
    assert not torch.equal(first, random_drop(delta, 0.5, gen(2)))
    assert 0.3 < float((first != 0).float().mean()) < 0.7
    assert float(first.abs().sum()) == pytest.approx(float(delta.abs().sum()), rel=1e-5)
    base = torch.zeros_like(x)
    assert torch.equal(
        dare_linear(base, [x], [1.0], [1.0], gen()), task_arithmetic(base, [x], [1.0])
    )


def test_model_stock_by_hand():
    base = torch.zeros(2)
    # orthogonal task vectors: cos 0 -> t 0 -> the base
    assert torch.allclose(
        model_stock(base, [torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])]), base
    )
    # identical task vectors: cos 1 -> t = 2 / 2 = 1 -> their average
    same = torch.tensor([1.0, 2.0])
    assert torch.allclose(model_stock(base, [same, same.clone()]), same)
    with pytest.raises(ValueError):
        model_stock(base, [same])
