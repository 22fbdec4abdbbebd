"""The tokens a training stage trained on, counted the same way for every stage kind.

transformers counts `state.num_input_tokens_seen` from the batch's `input_ids` only (every
position, padding included). That key does not fit every trainer's batch: ORPO's has
`chosen_input_ids` and `rejected_input_ids` (nothing was counted: 0 tokens), DPO's and unpacked
SFT's rows are padded to the longest one (the padding was counted). `count_trained_tokens`
replaces that counter on one trainer: a micro-batch counts the non-padding tokens of every
sequence the model is trained on, prompt included, which for a preference pair is the prompt +
chosen and the prompt + rejected sequence. A batch without an attention mask (packed
padding-free rows, cpt's packed rows) has no padding: every `input_ids` position counts.

The count stays in `state.num_input_tokens_seen`, so the logs, the progress line's tokens/s, a
checkpoint (a resumed run goes on from it) and the stage's `tokens_trained` metric all read it.
Summed over processes (each rank counts its own batches).
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from typing import Any

# The attention masks of the sequences a trainer's model is trained on: `attention_mask` (cpt,
# sft, dpo: chosen and rejected rows stacked in one batch), `chosen_` and `rejected_` (ORPO and
# the other trainers of TRL's paired format, whose `prompt_attention_mask` is the prompt again).
TRAINED_MASKS = ("attention_mask", "chosen_attention_mask", "rejected_attention_mask")


def batch_tokens(inputs: Mapping[str, Any]) -> int:
    """Non-padding tokens of the sequences the model is trained on in one micro-batch."""
    masks = [inputs[key] for key in TRAINED_MASKS if key in inputs]
    if masks:
        return sum(int(mask.sum()) for mask in masks)
    ids = inputs.get("input_ids")
    return int(ids.numel()) if ids is not None else 0


def count_trained_tokens(trainer: Any) -> bool:
    """Make `trainer` count `batch_tokens` into `state.num_input_tokens_seen`, whatever its
    `include_num_input_tokens_seen`. False when this transformers has no such counter to replace
    (its own count then stands)."""
    if not callable(getattr(trainer, "_track_num_input_tokens", None)):
        return False

    def track(self: Any, inputs: Mapping[str, Any]) -> None:
        import torch

        tokens = torch.as_tensor(batch_tokens(inputs), device=self.args.device, dtype=torch.int64)
        self.state.num_input_tokens_seen += int(self.accelerator.gather(tokens).sum().item())

    trainer._track_num_input_tokens = types.MethodType(track, trainer)
    return True
