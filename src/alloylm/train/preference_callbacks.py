"""Diagnostics that explain a preference run (DPO, ORPO), at every logging step.

TRL logs, per logging step, the implicit rewards of chosen and rejected replies and their
log-probabilities. We show the reward margin, the reward accuracy (share of pairs whose chosen
reward beats the rejected one) and both log-probs, keep their history for the stage's summary,
and warn about two known failure modes:

- both log-probs fall fast together: the policy pushes chosen *and* rejected down, only the
  rejected faster (the margin still grows, the model gets worse at the chosen replies too;
  "likelihood displacement", Razin et al. 2024, https://arxiv.org/abs/2410.08847). With a
  reference model (DPO) this is measured on each step's own pairs: TRL's implicit rewards are
  beta * (policy - reference) log-probs of the same pairs, so the reference's log-prob is
  logp - reward / beta. Comparing log-probs *between* logging steps compares different pairs:
  with the quickstart's DPO settings (batches of two pairs) on the embedded model, the summed
  log-probs moved by -50 % to +78 % between logging steps 3 apart, while on each step's own pairs
  the policy stayed within 3.3 % of the reference (16 steps, 2026-12-08); the shipped recipes'
  warning at DPO step 11 (issue 24) was this between-batch comparison. Without a reference
  (ORPO) the between-steps check remains;
- the loss collapses to ~0: the pairs are trivially separable or the policy has run far from
  the reference (raise beta, lower the learning rate, check the data).

The checks are pure functions of the recorded history; the callback only feeds them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from transformers import TrainerCallback

# TRL log keys -> our names
LOG_KEYS = {
    "loss": "loss",
    "rewards/margins": "reward_margin",
    "rewards/accuracies": "reward_accuracy",
    "logps/chosen": "logp_chosen",
    "logps/rejected": "logp_rejected",
    "rewards/chosen": "reward_chosen",
    "rewards/rejected": "reward_rejected",
}
DEFAULT_WINDOW = 3  # logging steps over which a fall is measured
DEFAULT_FALL = 0.2  # relative drop of both log-probs over the window that counts as "fast"
DEFAULT_COLLAPSE = 1e-3  # loss below this is "collapsed"


def diagnostics_row(step: int, logs: dict[str, Any]) -> dict[str, float] | None:
    """Our diagnostics from one TRL log entry, or None when it holds no preference metrics."""
    if "rewards/margins" not in logs and "logps/chosen" not in logs:
        return None
    row: dict[str, float] = {"step": float(step)}
    for key, name in LOG_KEYS.items():
        if key in logs and logs[key] is not None:
            row[name] = float(logs[key])
    return row


def both_logps_falling(
    history: list[dict[str, float]], window: int = DEFAULT_WINDOW, fall: float = DEFAULT_FALL
) -> bool:
    """True when chosen and rejected log-probs both dropped by more than `fall` (relative)
    between `window` logging steps ago and now."""
    rows = [r for r in history if "logp_chosen" in r and "logp_rejected" in r]
    if len(rows) <= window:
        return False
    then, now = rows[-1 - window], rows[-1]

    def dropped(key: str) -> bool:
        return now[key] < then[key] - fall * max(abs(then[key]), 1e-6)

    return dropped("logp_chosen") and dropped("logp_rejected")


def below_reference(row: dict[str, float], beta: float, fall: float = DEFAULT_FALL) -> bool:
    """True when, on this step's pairs, the policy's chosen and rejected log-probs are both more
    than `fall` (relative) below the reference's (reference = logp - reward / beta)."""
    keys = ("logp_chosen", "logp_rejected", "reward_chosen", "reward_rejected")
    if beta <= 0 or not all(k in row for k in keys):
        return False

    def dropped(side: str) -> bool:
        policy = row[f"logp_{side}"]
        reference = policy - row[f"reward_{side}"] / beta
        return policy < reference - fall * max(abs(reference), 1e-6)

    return dropped("chosen") and dropped("rejected")


def loss_collapsed(history: list[dict[str, float]], threshold: float = DEFAULT_COLLAPSE) -> bool:
    """True when the latest logged loss is finite and below `threshold`."""
    losses = [r["loss"] for r in history if "loss" in r]
    return bool(losses) and math.isfinite(losses[-1]) and abs(losses[-1]) < threshold


@dataclass
class PreferenceDiagnostics:
    """History and warnings of one run (what goes into StageResult.details['diagnostics'])."""

    window: int = DEFAULT_WINDOW
    fall: float = DEFAULT_FALL
    collapse: float = DEFAULT_COLLAPSE
    # DPO's beta: log-probs are then compared with the reference's on the same pairs (from TRL's
    # rewards); None (ORPO, no reference): between logging steps, over `window`
    beta: float | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def add(self, row: dict[str, float]) -> list[str]:
        """Record a row; return warnings raised for the first time by it."""
        self.history.append(row)
        new: list[str] = []
        step = int(row["step"])
        if self.beta is not None:
            if below_reference(row, self.beta, self.fall) and not self._warned("log-probs"):
                reference = {
                    side: row[f"logp_{side}"] - row[f"reward_{side}"] / self.beta
                    for side in ("chosen", "rejected")
                }
                new.append(
                    f"step {step}: chosen and rejected log-probs are both more than {self.fall:.0%} "
                    f"below the reference's on the same pairs (chosen {row['logp_chosen']:.2f} vs "
                    f"{reference['chosen']:.2f}, rejected {row['logp_rejected']:.2f} vs "
                    f"{reference['rejected']:.2f}); the model is unlearning the chosen replies too: "
                    "lower the learning rate or raise beta"
                )
        elif both_logps_falling(self.history, self.window, self.fall) and not self._warned(
            "log-probs"
        ):
            new.append(
                f"step {step}: chosen and rejected log-probs both fell by more than {self.fall:.0%} over "
                f"{self.window} logging steps (chosen {row.get('logp_chosen', float('nan')):.2f}, "
                f"rejected {row.get('logp_rejected', float('nan')):.2f}); the model is unlearning the "
                "chosen replies too: lower the learning rate or raise beta (these are different "
                "batches: with small batches, long replies alone can do this)"
            )
        if loss_collapsed(self.history, self.collapse) and not self._warned("loss collapsed"):
            new.append(
                f"step {step}: loss collapsed to {row['loss']:.2e}: the pairs are separated completely; "
                "check for trivially different chosen/rejected replies, raise beta or lower the learning rate"
            )
        self.warnings.extend(new)
        return new

    def _warned(self, text: str) -> bool:
        return any(text in w for w in self.warnings)

    def summary(self) -> dict[str, Any]:
        last = self.history[-1] if self.history else {}
        first = self.history[0] if self.history else {}
        return {
            "first": first,
            "last": last,
            "margin_rise": (last.get("reward_margin", 0.0) - first.get("reward_margin", 0.0))
            if self.history
            else None,
            "warnings": list(self.warnings),
            "history": self.history,
        }


class PreferenceCallback(TrainerCallback):
    """Progress with preference fields (margin, accuracy, log-probs) and failure warnings."""

    def __init__(
        self, progress: Any, log: Any, diagnostics: PreferenceDiagnostics, description: str
    ) -> None:
        self.progress = progress
        self.log = log  # ctx.log: messages for the user
        self.diagnostics = diagnostics
        self.description = description
        self._start = 0.0
        self._start_step = 0

    def on_train_begin(self, args, state, control, **kwargs):  # noqa: ANN001 - transformers' signature
        self._start, self._start_step = time.perf_counter(), state.global_step
        if state.is_world_process_zero:
            self.progress.start(state.max_steps, self.description)

    def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
        row = diagnostics_row(state.global_step, logs or {})
        if row is None or not state.is_world_process_zero:
            return
        for warning in self.diagnostics.add(row):
            self.log(f"WARNING {warning}")
        fields = {k: v for k, v in row.items() if k != "step"}
        done = state.global_step - self._start_step
        if done > 0 and state.max_steps:
            fields["eta_s"] = (
                (state.max_steps - state.global_step) * (time.perf_counter() - self._start) / done
            )
        self.progress.update(state.global_step, **fields)

    def on_train_end(self, args, state, control, **kwargs):  # noqa: ANN001
        if state.is_world_process_zero:
            self.progress.finish()
