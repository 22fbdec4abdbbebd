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
