"""Preference diagnostics: rows from TRL logs, the two failure warnings."""

from __future__ import annotations

from alloylm.train import preference_callbacks as pc


def _row(
    step: int, loss: float, chosen: float, rejected: float, margin: float = 0.0
) -> dict[str, float]:
    return {
        "step": float(step),
        "loss": loss,
        "logp_chosen": chosen,
        "logp_rejected": rejected,
        "reward_margin": margin,
    }


def test_row_from_trl_logs() -> None:
    logs = {
        "loss": 0.69,
        "rewards/margins": 0.01,
        "rewards/accuracies": 0.5,
        "logps/chosen": -40.0,
        "logps/rejected": -42.0,
        "learning_rate": 1e-6,
    }
    assert pc.diagnostics_row(3, logs) == {
        "step": 3.0,
        "loss": 0.69,
        "reward_margin": 0.01,
        "reward_accuracy": 0.5,
        "logp_chosen": -40.0,
        "logp_rejected": -42.0,
    }
    assert pc.diagnostics_row(3, {"loss": 1.0, "train_runtime": 3.0}) is None


def test_both_falling_needs_both_and_the_window() -> None:
    # both drop from -100 to -130 (30% > 20%) over 3 logging steps
    falling = [_row(i, 0.6, -100 - 10 * i, -100 - 10 * i) for i in range(4)]
    assert pc.both_logps_falling(falling, window=3, fall=0.2)
    assert not pc.both_logps_falling(falling[:3], window=3, fall=0.2)  # not enough history yet
    only_rejected = [_row(i, 0.6, -100, -100 - 10 * i) for i in range(4)]
    assert not pc.both_logps_falling(only_rejected, window=3, fall=0.2)
    slow = [_row(i, 0.6, -100 - i, -100 - i) for i in range(4)]  # 3% fall
    assert not pc.both_logps_falling(slow, window=3, fall=0.2)


def test_loss_collapse() -> None:
    assert pc.loss_collapsed([_row(1, 0.69, -1, -1), _row(2, 5e-4, -1, -1)])
    assert not pc.loss_collapsed([_row(1, 0.3, -1, -1)])
    assert not pc.loss_collapsed([])


def test_warnings_are_raised_once_and_summarised() -> None:
    diag = pc.PreferenceDiagnostics(window=1, fall=0.2)
    assert diag.add(_row(1, 0.69, -100, -100, 0.0)) == []
    first = diag.add(_row(2, 0.5, -150, -160, 0.5))
    assert len(first) == 1 and "both fell" in first[0]
    assert diag.add(_row(3, 0.4, -250, -260, 0.7)) == []  # the same warning is not repeated
    collapse = diag.add(_row(4, 1e-5, -250, -400, 9.0))
    assert len(collapse) == 1 and "collapsed" in collapse[0]
    summary = diag.summary()
    assert (
        summary["margin_rise"] == 9.0
        and len(summary["warnings"]) == 2
        and len(summary["history"]) == 4
    )


def _dpo_row(step: int, chosen: float, rejected: float, r_chosen: float, r_rejected: float):
    return {
        "step": float(step),
        "loss": 0.69,
        "logp_chosen": chosen,
        "logp_rejected": rejected,
        "reward_chosen": r_chosen,
        "reward_rejected": r_rejected,
    }


def test_with_a_reference_the_fall_is_measured_on_the_same_pairs() -> None:
    # beta 0.05: reward -1.5 = 30 nats below the reference; -70 vs reference -40 is a 75% fall
    assert pc.below_reference(_dpo_row(1, -70, -80, -1.5, -2.0), beta=0.05, fall=0.2)
    assert not pc.below_reference(_dpo_row(1, -70, -80, -1.5, 0.1), beta=0.05, fall=0.2)
    assert not pc.below_reference(_dpo_row(1, -70, -80, -0.1, -0.1), beta=0.05, fall=0.2)  # 3%
    diag = pc.PreferenceDiagnostics(beta=0.05)
    assert diag.add(_dpo_row(1, -60, -60, 0.0, 0.0)) == []
    warned = diag.add(_dpo_row(2, -70, -80, -1.5, -2.0))
    assert len(warned) == 1 and "below the reference's on the same pairs" in warned[0]
    assert "-70.00 vs -40.00" in warned[0]


# Measured: the quickstart's DPO settings (beta 0.05, lr 5e-6, batch 2, logging every step) on
# the embedded SmolLM2-135M-Instruct, 2026-12-08: TRL's logps/rewards per step. The summed
# log-probs swing with each batch's replies while the policy stays within a few % of the reference.
QUICKSTART_DPO_STEPS = [
    (1, -97.189, -86.76, 0.0, 0.0),
    (2, -65.512, -122.311, 0.0, 0.0),
    (3, -77.711, -112.12, -0.0318, -0.0689),
    (4, -86.681, -105.591, 0.0192, -0.0062),
    (5, -115.045, -63.727, -0.0137, 0.0292),
    (6, -103.083, -85.378, -0.1012, -0.0331),
    (7, -80.596, -66.453, 0.0465, -0.0062),
    (8, -69.869, -69.577, 0.0278, 0.0128),
    (9, -52.020, -81.221, 0.0299, -0.0092),
    (10, -89.491, -75.693, 0.0308, 0.0535),
    (11, -79.251, -116.100, 0.0959, -0.0004),
    (12, -92.692, -86.510, -0.0015, -0.0428),
    (13, -84.512, -76.256, 0.0622, -0.0349),
    (14, -84.546, -121.725, 0.0091, 0.0831),
    (15, -51.927, -97.584, 0.0435, -0.1524),
    (16, -45.232, -119.999, 0.0633, -0.0278),
]


def test_batch_to_batch_swings_of_a_dpo_run_raise_no_warning() -> None:
    rows = [_dpo_row(*step) for step in QUICKSTART_DPO_STEPS]
    with_reference = pc.PreferenceDiagnostics(beta=0.05)
    assert all(with_reference.add(row) == [] for row in rows)
    # the summed log-probs of different batches: chosen -65.5 (step 2) to -115.0 (step 5)
    assert rows[4]["logp_chosen"] < 1.7 * rows[1]["logp_chosen"]
    # a batch whose chosen and rejected replies are both longer than three steps before (as
    # steps 2 -> 5 for chosen and 8 -> 11 for rejected were), the policy as near the reference:
    # the between-steps check (ORPO's, and DPO's before) calls it unlearning, the same-pairs one not
    longer = _dpo_row(
        17, 1.3 * rows[-3]["logp_chosen"], 1.3 * rows[-3]["logp_rejected"], 0.01, 0.01
    )
    assert with_reference.add(longer) == []
    between_steps = pc.PreferenceDiagnostics()
    for row in [*rows, longer]:
        between_steps.add(row)
    assert any("both fell" in w for w in between_steps.warnings)
