"""SLERP against hand-computed values (mergekit semantics: normalized angle, unnormalized combine)."""

from __future__ import annotations

import math

import pytest
import torch

from alloylm.merge.methods.slerp import (
    DOT_THRESHOLD,
    slerp,
    slerp_coefficients,
    slerp_geometry,
    uses_linear_fallback,
)


def test_orthogonal_unnormalized_vectors_use_sine_weights():
    v0, v1 = torch.tensor([2.0, 0.0]), torch.tensor([0.0, 3.0])
    # theta = pi/2, sin(theta) = 1: s0 = sin(pi/4), s1 = sin(pi/4) at t = 0.5
    assert torch.allclose(
        slerp(0.5, v0, v1), torch.tensor([2 * math.sqrt(0.5), 3 * math.sqrt(0.5)]), atol=1e-6
    )
    # t = 1/3: s0 = sin(pi/3), s1 = sin(pi/6)
    assert torch.allclose(
        slerp(1 / 3, v0, v1), torch.tensor([2 * math.sqrt(3) / 2, 3 * 0.5]), atol=1e-6
    )


def test_angle_of_45_degrees():
    v0, v1 = torch.tensor([1.0, 0.0]), torch.tensor([1.0, 1.0])
    theta = math.pi / 4
    s0 = math.sin(theta / 2) / math.sin(theta)
    s1 = math.sin(theta / 2) / math.sin(theta)
    expected = torch.tensor([s0 + s1, s1])
    assert torch.allclose(slerp(0.5, v0, v1), expected, atol=1e-6)
    assert not uses_linear_fallback(v0, v1)


def test_colinear_vectors_fall_back_to_linear_interpolation():
    v0, v1 = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([2.0, 4.0, 6.0])
    assert uses_linear_fallback(v0, v1)
    assert torch.allclose(slerp(0.25, v0, v1), torch.tensor([1.25, 2.5, 3.75]))
    # antiparallel: |cos| = 1 also falls back
    assert uses_linear_fallback(v0, -v0)
    assert torch.allclose(slerp(0.5, v0, -v0), torch.zeros(3))


def test_threshold_is_on_absolute_cosine():
    angle_just_inside = math.acos(DOT_THRESHOLD) * 0.9  # cos > 0.9995 -> linear
    angle_just_outside = math.acos(DOT_THRESHOLD) * 1.1  # cos < 0.9995 -> spherical
    v0 = torch.tensor([1.0, 0.0])
    inside = torch.tensor([math.cos(angle_just_inside), math.sin(angle_just_inside)])
    outside = torch.tensor([math.cos(angle_just_outside), math.sin(angle_just_outside)])
    assert slerp_geometry(v0, inside).colinear
    assert not slerp_geometry(v0, outside).colinear
    assert slerp_coefficients(0.3, slerp_geometry(v0, inside)) == pytest.approx((0.7, 0.3))


def test_t0_returns_base_and_t1_returns_other_exactly():
    torch.manual_seed(0)
    v0, v1 = torch.randn(7, 5), torch.randn(7, 5)
    assert torch.equal(slerp(0.0, v0, v1), v0)
    assert torch.equal(slerp(1.0, v0, v1), v1)


def test_matrices_are_flattened_for_the_angle():
    v0 = torch.tensor([[1.0, 0.0], [0.0, 0.0]])
    v1 = torch.tensor([[0.0, 0.0], [0.0, 1.0]])
    result = slerp(0.5, v0, v1)
    assert result.shape == (2, 2)
    assert torch.allclose(
        result, torch.tensor([[math.sqrt(0.5), 0.0], [0.0, math.sqrt(0.5)]]), atol=1e-6
    )


def test_zero_vector_is_not_normalized():
    # mergekit leaves a vector with norm <= eps as it is: cos = 0, theta = pi/2
    v0, v1 = torch.zeros(3), torch.tensor([0.0, 2.0, 0.0])
    assert slerp_geometry(v0, v1).cos_theta == 0.0
    assert torch.allclose(
        slerp(0.5, v0, v1), torch.tensor([0.0, 2 * math.sqrt(0.5), 0.0]), atol=1e-6
    )


def test_long_vectors_keep_an_accurate_cosine():
    # A single float32 BLAS dot over millions of elements drifts by ~1e-4: enough to cross 0.9995.
    torch.manual_seed(0)
    v0 = torch.randn(3_000_000)
    v1 = v0 + 0.05 * torch.randn(3_000_000)
    exact = float(v0.double() @ v1.double() / (v0.double().norm() * v1.double().norm()))
    assert slerp_geometry(v0, v1).cos_theta == pytest.approx(exact, abs=1e-12)


def test_matches_mergekit_when_it_is_installed():
    slerp_module = pytest.importorskip("mergekit.merge_methods.slerp")
    torch.manual_seed(1)
    v0, v1 = torch.randn(64, 32), torch.randn(64, 32)
    for t in (0.0, 0.3, 0.5, 1.0):
        try:  # mergekit <= 0.1.4: slerp(t, v0, v1); 0.1.5: batched, t a tensor
            theirs = slerp_module.slerp(t, v0, v1)
        except AttributeError:
            theirs = slerp_module.slerp(torch.tensor([t]), v0[None], v1[None])[0]
        assert torch.allclose(slerp(t, v0, v1), theirs.float(), atol=1e-5)


def test_a_bfloat16_pair_has_the_cosine_of_its_float32_widening():
    # Widened a span at a time, never whole (3 spans and a short tail here): the cosine of the
    # widened pair, exact, and the hand-checked value on a small exact case.
    from alloylm.merge.methods import slerp as slerp_module

    torch.manual_seed(2)
    numel = 3 * slerp_module.SPAN + 1234
    v0 = torch.randn(numel).to(torch.bfloat16)
    v1 = (v0.float() + 0.1 * torch.randn(numel)).to(torch.bfloat16)
    assert slerp_geometry(v0, v1).cos_theta == slerp_geometry(v0.float(), v1.float()).cos_theta
    # and it is the true cosine: float32 chunk dots were 6.5e-6 off on this pair (MKL, 2 cores)
    exact = float(v0.double() @ v1.double() / (v0.double().norm() * v1.double().norm()))
    assert slerp_geometry(v0, v1).cos_theta == pytest.approx(exact, abs=1e-12)
    # [3, 4] . [4, 3] = 24 over |5| |5|: exact in bfloat16
    pair = (
        torch.tensor([3.0, 4.0], dtype=torch.bfloat16),
        torch.tensor([4.0, 3.0], dtype=torch.bfloat16),
    )
    assert slerp_geometry(*pair).cos_theta == 24 / 25
