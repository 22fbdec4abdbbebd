"""The methods mergekit 0.1.5 has beyond the first eight: values by hand and the identities
(equal inputs give the input; t = 0 or a zero weight gives the base, or the first model where the
method has no base). Equality with mergekit itself: tests/component/test_merge_mergekit.py."""

from __future__ import annotations

import math

import pytest
import torch

from alloylm.errors import ConfigError
from alloylm.merge.methods.arcee_fusion import arcee_fusion
from alloylm.merge.methods.breadcrumbs_ties import breadcrumbs_ties
from alloylm.merge.methods.della import della, della_linear, magprune
from alloylm.merge.methods.karcher import karcher
from alloylm.merge.methods.multislerp import multislerp
from alloylm.merge.methods.nearswap import nearswap
from alloylm.merge.methods.nuslerp import nuslerp
from alloylm.merge.methods.passthrough import passthrough
from alloylm.merge.methods.sce import sce
from alloylm.merge.methods.ties import ties

H = math.sqrt(0.5)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture()
def x() -> torch.Tensor:
    return torch.randn(12, 6, generator=gen(1))


@pytest.fixture()
def y() -> torch.Tensor:
    return torch.randn(12, 6, generator=gen(2))


def close(a: torch.Tensor, b, atol: float = 1e-6) -> bool:
    return torch.allclose(a, torch.as_tensor(b, dtype=torch.float32), atol=atol)


def test_nuslerp(x, y):
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    # weights 1, 1: t = 1/2, theta = pi/2: sin(pi/4) e0 + sin(pi/4) e1
    assert close(nuslerp([e0, e1], [1.0, 1.0]), [H, H])
    # t = 3/4 of the way from e0 to e1 on the quarter circle: angle 3 pi/8
    assert close(
        nuslerp([e0, e1], [1.0, 3.0]), [math.cos(3 * math.pi / 8), math.sin(3 * math.pi / 8)]
    )
    # with a base, the task vectors are interpolated and added back
    base = torch.tensor([1.0, 1.0])
    assert close(nuslerp([base + e0, base + e1], [1.0, 1.0], base), [1 + H, 1 + H])
    # by row (flatten off): each row its own angle; row_wise: each column
    rows = nuslerp([torch.stack([e0, e0]), torch.stack([e1, e0])], [1.0, 1.0], flatten=False)
    assert close(rows, [[H, H], [1.0, 0.0]])
    columns = torch.stack([e0, e1]).T
    assert close(
        nuslerp([columns, columns.flip(1)], [1.0, 1.0], flatten=False, row_wise=True),
        [[H, H], [H, H]],
    )
    # identities
    assert close(nuslerp([x, x.clone()], [0.3, 0.7]), x, 1e-5)
    assert close(nuslerp([x, y], [1.0, 0.0]), x, 1e-5)
    assert close(nuslerp([x, y], [0.0, 1.0]), y, 1e-5)
    assert close(nuslerp([y, x], [1.0, 0.0], x), y, 1e-5)  # zero weight on the second
    assert close(nuslerp([x, x.clone()], [0.4, 0.6], x), x)  # zero task vectors: the base
    with pytest.raises(ValueError, match="exactly two"):
        nuslerp([x, y, x], [1.0, 1.0, 1.0])


def test_multislerp(x, y):
    e0, e1 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 2.0])
    # unit vectors e0, e1/2: tangent point (1, 1)/sqrt 2, the tangents cancel; mean norm 1.5
    assert close(multislerp([e0, e1], [1.0, 1.0]), [1.5 * H, 1.5 * H], 1e-6)
    three = [
        torch.tensor([1.0, 0.0, 0.0]),
        torch.tensor([0.0, 1.0, 0.0]),
        torch.tensor([0.0, 0.0, 1.0]),
    ]
    r = 1 / math.sqrt(3)
    assert close(multislerp(three, [2.0, 2.0, 2.0]), [r, r, r], 1e-6)  # weights normalized
    # a base: task vectors, added back
    base = torch.tensor([5.0, 5.0])
    assert close(
        multislerp([base + e0, base + e1], [1.0, 1.0], base), [5 + 1.5 * H, 5 + 1.5 * H], 1e-5
    )
    # identities
    assert torch.equal(multislerp([x], [1.0]), x)
    assert close(multislerp([x, x.clone(), x.clone()], [0.2, 0.5, 0.3]), x, 1e-5)
    assert close(multislerp([x, y], [1.0, 0.0]), x, 1e-5)
    assert close(multislerp([y, x], [1.0, 0.0], x), y, 1e-5)
    # antipodal with balancing weights: two fall back to linear, three are refused
    assert close(multislerp([e0, -e0], [1.0, 1.0]), [0.0, 0.0])
    with pytest.raises(ConfigError, match="antipodal"):
        multislerp([e0, -e0, e0 * 0], [1.0, 1.0, 1.0])


def test_karcher(x, y):
    # directions e0, e1: mean direction (1, 1)/sqrt 2 (the log maps cancel), mean norm (2 + 4)/2
    assert close(
        karcher([torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])]), [3 * H, 3 * H], 1e-5
    )
    # three orthogonal unit vectors: their spherical mean is the diagonal
    r = 1 / math.sqrt(3)
    eye = torch.eye(3)
    assert close(karcher([eye[0], eye[1], eye[2]]), [r, r, r], 1e-5)
    # the geodesic mean is not the chordal one: e0 twice and e1 once -> angle pi/6 from e0
    assert close(
        karcher([eye[0], eye[0], eye[1]]), [math.cos(math.pi / 6), math.sin(math.pi / 6), 0.0], 1e-4
    )
    # identities; zero tensors are left out of the direction
    assert torch.equal(karcher([x]), x)
    assert close(karcher([x, x.clone(), x.clone()]), x, 1e-5)
    assert close(karcher([x, torch.zeros_like(x)]), x / 2, 1e-5)
    assert torch.equal(karcher([torch.zeros(3), torch.zeros(3)]), torch.zeros(3))


def test_breadcrumbs_ties():
    base = torch.zeros(4)
    m1, m2 = torch.tensor([1.0, -2.0, 3.0, -4.0]), torch.tensor([-1.0, 3.0, -5.0, 2.0])
    # density 1/2, gamma 1/4 of 4 entries: drop the largest, keep the next two
    # m1 -> [0, -2, 3, 0], m2 -> [0, 3, 0, 2]; signs of the sum [0, 1, 3, 2]: all +
    out = breadcrumbs_ties(base, [m1, m2], [1.0, 1.0], [0.5, 0.5], [0.25, 0.25])
    assert close(out, [0.0, 3.0, 3.0, 2.0])
    # density 1: no band, TIES with normalize off
    assert close(
        breadcrumbs_ties(base, [m1, m2], [1.0, 1.0], [1.0, 1.0], [0.0, 0.0], normalize=True),
        ties(base, [m1, m2], [1.0, 1.0], [1.0, 1.0]),
    )
    # identities: zero task vectors or zero weights give the base
    assert torch.equal(
        breadcrumbs_ties(m1, [m1.clone(), m1.clone()], [1.0, 1.0], [0.5, 0.5], [0.1, 0.1]), m1
    )
    assert torch.equal(breadcrumbs_ties(m1, [m2, base], [0.0, 0.0], [0.5, 0.5], [0.1, 0.1]), m1)


def test_della(x, y):
    # keep probabilities by rank in a row: density - eps ... density + eps
    row = torch.tensor([[0.1, -1.0, 10.0]]).expand(20000, 3).contiguous()
    kept = magprune(row, 0.5, 0.3, gen(), rescale=False)
    frequency = (kept != 0).float().mean(dim=0)
    assert torch.allclose(frequency, torch.tensor([0.2, 0.5, 0.8]), atol=0.02)
    # rescale: the kept vector has the original L1 norm
    one = magprune(torch.tensor([0.1, -1.0, 10.0, 3.0]), 0.5, 0.3, gen(3))
    assert math.isclose(float(one.abs().sum()), 14.1, rel_tol=1e-6)
    # same seed, same merge; density 1: TIES (della) or task arithmetic (della_linear)
    a = della(x, [y, x * 2], [1.0, 0.5], [0.5, 0.5], [0.1, 0.1], gen(5))
    assert torch.equal(a, della(x, [y, x * 2], [1.0, 0.5], [0.5, 0.5], [0.1, 0.1], gen(5)))
    assert close(
        della(x, [y, x * 2], [1.0, 0.5], [1.0, 1.0], [0.1, 0.1], gen()),
        ties(x, [y, x * 2], [1.0, 0.5], [1.0, 1.0]),
    )
    assert close(della_linear(x, [y], [0.5], [1.0], [0.1], gen()), x + 0.5 * (y - x))
    # identities
    assert torch.equal(
        della(x, [x.clone(), x.clone()], [1.0, 1.0], [0.5, 0.5], [0.1, 0.1], gen()), x
    )
    assert torch.equal(della_linear(x, [y, y], [0.0, 0.0], [0.5, 0.5], [0.1, 0.1], gen()), x)
    with pytest.raises(ConfigError, match=r"density 0.9 \+/- epsilon 0.15"):
        della(x, [y], [1.0], [0.9], [0.15], gen())


def test_sce(x, y):
    base = torch.zeros(2)
    m1, m2, m3 = torch.tensor([2.0, 1.0]), torch.tensor([1.0, -1.0]), torch.tensor([-1.0, 3.0])
    # energies mean(tau^2): 2.5, 1, 5; signs of the sum [2, 3]: +, +
    # entry 0: m1, m2 agree -> (2 * 2.5 + 1 * 1) / 3.5; entry 1: m1, m3 -> (1 * 2.5 + 3 * 5) / 7.5
    assert close(sce(base, [m1, m2, m3]), [6 / 3.5, 17.5 / 7.5])
    # select_topk 1/2: only entry 1 (variance 26/9 > 14/9) is kept, then the energies are those
    # of the selected vectors (0.5, 0.5, 4.5): (1 * 0.5 + 3 * 4.5) / 5
    assert close(sce(base, [m1, m2, m3], 0.5), [0.0, 14 / 5])
    # identities
    assert torch.equal(sce(x, [x.clone(), x.clone()]), x)
    assert close(sce(x, [y]), y, 1e-6)
    assert torch.equal(sce(x, [y], 0.0), x)


def test_arcee_fusion(x, y):
    base = torch.zeros(1, 8)
    model = torch.tensor([[1.0, 2, 3, 4, 5, 6, 7, 30]])
    # one row: importance = KL * |x|; quartiles at sorted indices 1, 3, 5 -> KL * (4 + 1.5 * (6 - 2))
    # = KL * 10: only the 30 passes
    assert close(arcee_fusion(base, model), [[0, 0, 0, 0, 0, 0, 0, 30.0]])
    # identities: equal inputs, and a tensor that differs nowhere by much
    assert torch.equal(arcee_fusion(x, x.clone()), x)
    merged = arcee_fusion(x, y)
    kept = merged == x
    assert kept.any() and not kept.all()
    assert torch.allclose(merged[~kept], y[~kept], atol=1e-6)


def test_nearswap(x, y):
    base, other = torch.zeros(3), torch.tensor([0.1, 1.0, 4.0])
    # w = clamp(0.5 / |a - b|, 0, 1) = [1, 0.5, 0.125]
    assert close(nearswap(0.5, base, other), [0.1, 0.5, 0.5])
    assert torch.equal(nearswap(0.0, x, y), x)  # t = 0: the base
    assert torch.equal(nearswap(0.7, x, x.clone()), x)
    assert close(nearswap(1e9, x, y), y)  # every entry within t: the other model


def test_passthrough(x):
    assert torch.equal(passthrough(x), x)
    assert torch.equal(passthrough(x, 2.0), 2 * x)
    assert torch.equal(passthrough(x.to(torch.bfloat16)), x.to(torch.bfloat16).float())


MERGEKIT_0_1_5 = {
    "linear",
    "slerp",
    "nuslerp",
    "multislerp",
    "karcher",
    "task_arithmetic",
    "ties",
    "dare_ties",
    "dare_linear",
    "breadcrumbs",
    "breadcrumbs_ties",
    "della",
    "della_linear",
    "model_stock",
    "sce",
    "arcee_fusion",
    "nearswap",
    "passthrough",
}  # fmt: skip  (mergekit 0.1.5 also registers ram and ramplus_tl: not implemented here)


def test_alloy_ls_lists_every_mergekit_method(capsys):
    from alloylm.cli.main import main
    from alloylm.registry import MERGE_METHODS

    assert set(MERGE_METHODS.names()) >= MERGEKIT_0_1_5
    assert main(["ls"]) == 0
    listed = capsys.readouterr().out
    assert all(f" {name} " in listed for name in MERGEKIT_0_1_5)


def test_only_an_interpolation_t_warns_outside_0_1():
    from alloylm.merge.checks import interpolation_warnings
    from alloylm.merge.config import settings_from_dict

    base = {"base_model": "tiny:llama", "models": ["tiny:llama:1"]}
    slerp = settings_from_dict({**base, "method": "slerp", "parameters": {"t": 1.7}})
    assert any("outside [0, 1]" in w for w in interpolation_warnings(slerp))
    nearswap = settings_from_dict({**base, "method": "nearswap", "parameters": {"t": 5.0}})
    assert interpolation_warnings(nearswap) == []  # a distance, not a fraction
