"""Model Breadcrumbs (merge/methods/breadcrumbs.py) on hand-computed tensors, and through the
engine's parameter resolution as a registered method."""

from __future__ import annotations

import pytest
import torch

from alloylm.merge.apply import TensorContext, apply_method
from alloylm.merge.jobs import TensorJob
from alloylm.merge.methods.breadcrumbs import breadcrumbs, magnitude_band

DELTA = torch.tensor([1.0, -2.0, 3.0, -4.0, 5.0, -6.0, 7.0, -8.0, 9.0, -10.0])


def test_band_drops_the_top_outliers_and_the_smallest():
    # 10 entries, density 0.5 keeps 5, gamma 0.1 drops the largest (|-10|), then the 4 smallest
    kept = magnitude_band(DELTA, 0.5, 0.1)
    assert kept.tolist() == [0, 0, 0, 0, 5, -6, 7, -8, 9, 0]


def test_band_rescale_restores_the_l1_norm():
    kept = magnitude_band(DELTA, 0.5, 0.1, rescale=True)
    # |kept| sums to 5+6+7+8+9 = 35 before rescaling; the task vector's L1 norm is 55
    assert torch.allclose(kept.abs().sum(), torch.tensor(55.0))
    assert torch.allclose(kept[4], torch.tensor(5 * 55 / 35))


def test_fewer_outliers_are_dropped_when_density_needs_them():
    # keep 9 of 10 with gamma 0.2: 9 + 2 > 10, so only the single largest goes
    assert magnitude_band(DELTA, 0.9, 0.2).tolist() == [1, -2, 3, -4, 5, -6, 7, -8, 9, 0]


def test_density_one_is_task_arithmetic():
    base = torch.arange(10.0)
    merged = breadcrumbs(base, [base + DELTA], [0.5], [1.0], [0.01])
    assert torch.allclose(merged, base + 0.5 * DELTA)


def test_equal_inputs_give_the_base():
    base = torch.randn(4, 6, generator=torch.Generator().manual_seed(0))
    merged = breadcrumbs(base, [base.clone(), base.clone()], [1.0, 1.0], [0.3, 0.3], [0.1, 0.1])
    assert torch.allclose(merged, base)


def test_two_models_weighted_and_normalized():
    base = torch.zeros(10)
    other = -DELTA  # its band: the same positions, the opposite signs
    merged = breadcrumbs(
        base, [DELTA, other * 2], [3.0, 1.0], [0.5, 0.5], [0.1, 0.1], normalize=True, lambda_=2.0
    )
    band = torch.tensor([0, 0, 0, 0, 5, -6, 7, -8, 9, 0.0])
    # (3 * band + 1 * (-2 * band)) / (3 + 1) * 2 = band / 2
    assert torch.allclose(merged, band / 2)


def test_registered_method_resolves_its_parameters():
    job = TensorJob(
        out_name="w", sources=["w", "w"], position=0.0, model_parameters=[{}, {"weight": 1.0}]
    )
    base, model = torch.zeros(10), DELTA.clone()
    ctx = TensorContext(job, [base, model], has_base=True, seed=0)
    merged = apply_method("breadcrumbs", ctx, {"density": 0.5, "gamma": 0.1}, None)
    assert merged.tensor.tolist() == [0, 0, 0, 0, 5, -6, 7, -8, 9, 0]


def test_weight_is_required():
    job = TensorJob(out_name="w", sources=["w", "w"], position=0.0, model_parameters=[{}, {}])
    ctx = TensorContext(job, [torch.zeros(3), torch.ones(3)], has_base=True, seed=0)
    with pytest.raises(Exception, match="weight"):
        apply_method("breadcrumbs", ctx, {}, None)
