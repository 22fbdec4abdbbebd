"""Preference losses against numbers worked out by hand (see each test's comment)."""

from __future__ import annotations

import math

import pytest

from alloylm.train import losses


def test_dpo_sigmoid_hand_computed() -> None:
    # log-ratios: chosen -10 - (-11) = +1, rejected -12 - (-11) = -1, delta = 2, beta*delta = 0.2
    # sigmoid(0.2) = 1 / (1 + e^-0.2) = 1 / 1.8187308 = 0.5498340; -ln(0.5498340) = 0.5981389
    value = losses.dpo_sigmoid_loss(-10.0, -12.0, -11.0, -11.0, beta=0.1)
    assert value == pytest.approx(0.5981389, abs=1e-6)


def test_dpo_sigmoid_is_log2_when_policy_equals_reference() -> None:
    assert losses.dpo_sigmoid_loss(-7.0, -3.0, -7.0, -3.0, beta=0.05) == pytest.approx(math.log(2))


def test_dpo_rewards_and_margin() -> None:
    chosen, rejected = losses.dpo_rewards(-10.0, -12.0, -11.0, -11.0, beta=0.05)
    assert (chosen, rejected) == pytest.approx((0.05, -0.05))


def test_ipo_hand_computed() -> None:
    # per-token log-ratios: chosen (+1)/2 = 0.5, rejected (-1)/4 = -0.25, h = 0.75
    # 1/(2*beta) = 1 for beta 0.5, loss = (0.75 - 1)^2 = 0.0625
    value = losses.dpo_ipo_loss(-10.0, -12.0, -11.0, -11.0, beta=0.5, n_c=2, n_r=4)
    assert value == pytest.approx(0.0625)


def test_hinge_hand_computed_and_clamped() -> None:
    assert losses.dpo_hinge_loss(-10.0, -12.0, -11.0, -11.0, beta=0.1) == pytest.approx(0.8)
    assert losses.dpo_hinge_loss(-10.0, -12.0, -11.0, -11.0, beta=1.0) == 0.0


def test_orpo_hand_computed() -> None:
    # P_c = 0.5 -> odds 1; P_r = 0.2 -> odds 0.25; log odds ratio = ln 4 = 1.3862944
    # L_OR = -ln sigmoid(ln 4) = -ln(4/5) = ln 1.25 = 0.2231436; L = 2.0 + 0.1 * 0.2231436
    lor = losses.orpo_log_odds_ratio(math.log(0.5), math.log(0.2))
    assert lor == pytest.approx(math.log(4))
    assert losses.orpo_odds_ratio_loss(math.log(0.5), math.log(0.2)) == pytest.approx(
        0.2231436, abs=1e-7
    )
    assert losses.orpo_loss(2.0, math.log(0.5), math.log(0.2), beta=0.1) == pytest.approx(
        2.0223144, abs=1e-7
    )


def test_float_and_tensor_paths_agree() -> None:
    torch = pytest.importorskip("torch")
    args = [
        torch.tensor([-10.0, -3.0]),
        torch.tensor([-12.0, -2.5]),
        torch.tensor([-11.0, -3.2]),
        torch.tensor([-11.0, -2.0]),
    ]
    tensor_values = losses.dpo_sigmoid_loss(*args, beta=0.1)
    for i in range(2):
        floats = [float(a[i]) for a in args]
        assert float(tensor_values[i]) == pytest.approx(
            losses.dpo_sigmoid_loss(*floats, beta=0.1), rel=1e-6
        )
    c, r = torch.tensor([math.log(0.5), -0.01]), torch.tensor([math.log(0.2), -3.0])
    tensor_orpo = losses.orpo_odds_ratio_loss(c, r)
    for i in range(2):
        assert float(tensor_orpo[i]) == pytest.approx(
            losses.orpo_odds_ratio_loss(float(c[i]), float(r[i])), rel=1e-6
        )


def test_log1mexp_stable_near_zero_and_far() -> None:
    assert losses.log1mexp(-1e-10) == pytest.approx(math.log(1e-10), rel=1e-6)
    assert losses.log1mexp(-50.0) == pytest.approx(-math.exp(-50.0), rel=1e-6)
    assert losses.log_sigmoid(-1000.0) == pytest.approx(-1000.0)


def test_simpo_hand_computed() -> None:
    # beta * (mean c - mean r) - gamma = 2 * (-1 - (-2)) - 1 = 1; -ln sigmoid(1) = ln(1 + e^-1)
    assert losses.simpo_loss(-1.0, -2.0, beta=2.0, gamma=1.0) == pytest.approx(0.3132617, abs=1e-7)
    # gamma = beta * difference: the margin is exactly met, loss ln 2
    assert losses.simpo_loss(-1.0, -1.5, beta=2.0, gamma=1.0) == pytest.approx(math.log(2))


def test_cpo_hand_computed() -> None:
    # beta * (c - r) = 0.1 * 2 = 0.2: -ln sigmoid(0.2) = 0.5981389; + alpha * NLL = 1.0 * 2.0
    assert losses.cpo_loss(2.0, -10.0, -12.0, beta=0.1, alpha=1.0) == pytest.approx(
        2.5981389, abs=1e-6
    )
    assert losses.cpo_loss(2.0, -10.0, -12.0, beta=0.1, alpha=0.0) == pytest.approx(
        0.5981389, abs=1e-6
    )
