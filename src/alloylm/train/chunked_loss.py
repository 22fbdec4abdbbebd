"""The causal-LM loss without the full logits: the LM head and cross-entropy, a block of rows at a time.

A 135M model with a 49k vocabulary spends a large share of a CPU training step on its logits:
a batch of 4 x 512 tokens makes a 2048 x 49152 matrix (400 MB in fp32), which transformers'
loss upcasts, log-softmaxes, and walks again in backward. Here the head's product, the
log-softmax and the gradient of the softmax are computed for `chunk_rows` rows at a time, inside
one autograd node whose forward already produces the gradients of its inputs (the loss is the
last operation, so its backward only scales them). Rows whose label is ignored are never
projected. This is the chunked fused linear cross-entropy of Wijmans et al. 2024, "Cut Your
Losses in Large-Vocabulary Language Models" (https://arxiv.org/abs/2411.09009), and of Liger
Kernel (https://arxiv.org/abs/2410.10989), in plain torch.

The value is transformers' `ForCausalLMLoss`: the next-token NLL summed over labels != -100,
divided by `num_items_in_batch` (the tokens of the whole accumulated batch) or averaged when it
is None. Under bf16 autocast the products run in bf16 and the logits are rounded to bf16 before
the fp32 softmax, as autocast does with the full head.
"""

from __future__ import annotations

from typing import Any

import torch

IGNORE_INDEX = -100
# Logits per block: 2**25 fp32 values (128 MiB), 682 rows of a 49k vocabulary. Larger blocks ran
# faster on 2 CPU cores (fewer passes over the head's gradient); 2048 rows of full logits are 400 MB.
BLOCK_ELEMENTS = 1 << 25


def block_rows(vocab_size: int) -> int:
    return max(1, BLOCK_ELEMENTS // vocab_size)


class _LinearCrossEntropySum(torch.autograd.Function):
    """sum_i [logsumexp(h_i W^T) - (h_i W^T)[y_i]] over the rows of `hidden`; gradients computed
    in forward, one block of rows at a time."""

    @staticmethod
    def forward(ctx: Any, hidden, weight, targets, chunk_rows: int, compute_dtype):  # noqa: ANN001
        need_hidden, need_weight = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        device_type = hidden.device.type
        with torch.autocast(device_type, enabled=False):
            head = weight.to(compute_dtype)
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            grad_hidden = torch.empty_like(hidden) if need_hidden else None
            grad_weight = torch.zeros_like(weight, dtype=torch.float32) if need_weight else None
            for start in range(0, hidden.shape[0], chunk_rows):
                rows = hidden[start : start + chunk_rows].to(compute_dtype)
                target = targets[start : start + chunk_rows]
                log_probs = torch.log_softmax((rows @ head.T).float(), dim=-1)
                total -= log_probs.gather(1, target[:, None]).sum()
                if not (need_hidden or need_weight):
                    continue
                # d/dlogits of the summed NLL: softmax - one_hot(target), in place
                probs = log_probs.exp_()
                probs[torch.arange(len(target), device=probs.device), target] -= 1.0
                grad_logits = probs.to(compute_dtype)
                if need_hidden:
                    grad_hidden[start : start + chunk_rows] = grad_logits @ head
                if need_weight:
                    grad_weight += (grad_logits.T @ rows).float()
        # the gradients, not inputs or outputs: kept on ctx until backward scales them
        ctx.grads = (grad_hidden, grad_weight)
        ctx.weight_dtype = weight.dtype
        return total

    @staticmethod
    def backward(ctx: Any, grad_total):  # noqa: ANN001
        grad_hidden, grad_weight = ctx.grads
        if grad_hidden is not None:
            grad_hidden = grad_hidden * grad_total
        if grad_weight is not None:
            grad_weight = (grad_weight * grad_total).to(ctx.weight_dtype)
        return grad_hidden, grad_weight, None, None, None


def linear_cross_entropy_sum(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    targets: torch.Tensor,
    *,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """Summed NLL of `targets` (N,) under logits `hidden` (N, H) @ `weight` (V, H)^T, every target
    a real token id. Products run in autocast's dtype when autocast is on, else in weight's."""
    device_type = hidden.device.type
    if torch.is_autocast_enabled(device_type):
        compute_dtype = torch.get_autocast_dtype(device_type)
    else:
        compute_dtype = weight.dtype
    rows = chunk_rows or block_rows(weight.shape[0])
    blocks = max(1, -(-hidden.shape[0] // rows))
    rows = max(1, -(-hidden.shape[0] // blocks))  # equal blocks, no short tail
    return _LinearCrossEntropySum.apply(hidden, weight, targets, rows, compute_dtype)


def next_token_targets(
    labels: torch.Tensor, shift_labels: torch.Tensor | None = None
) -> torch.Tensor:
    """The label each position predicts (the next one; -100 after the last), flattened; as
    transformers' ForCausalLMLoss shifts them. A collator's own `shift_labels` win."""
    if shift_labels is None:
        padded = torch.nn.functional.pad(labels, (0, 1), value=IGNORE_INDEX)
        shift_labels = padded[..., 1:]
    return shift_labels.reshape(-1)


def causal_lm_loss(
    hidden_states: torch.Tensor,
    head_weight: torch.Tensor,
    labels: torch.Tensor,
    *,
    num_items_in_batch: Any = None,
    shift_labels: torch.Tensor | None = None,
    chunk_rows: int | None = None,
) -> torch.Tensor:
    """transformers' causal-LM loss from the last hidden states (B, T, H), without the logits."""
    targets = next_token_targets(labels, shift_labels).to(hidden_states.device)
    kept = (targets != IGNORE_INDEX).nonzero().squeeze(1)
    flat = hidden_states.reshape(-1, hidden_states.shape[-1])
    total = linear_cross_entropy_sum(
        flat.index_select(0, kept),
        head_weight,
        targets.index_select(0, kept),
        chunk_rows=chunk_rows,
    )
    if num_items_in_batch is None:
        return total / kept.numel()  # NaN when nothing is trained on, as cross_entropy's mean
    if torch.is_tensor(num_items_in_batch):
        num_items_in_batch = num_items_in_batch.to(total.device)
    return total / num_items_in_batch
