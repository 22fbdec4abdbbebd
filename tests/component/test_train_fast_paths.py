"""CPU fast paths of the token-level trainer on the tiny Llama: the chunked loss equals the
model's own (padded and padding-free batches), and LoRA's bf16 frozen weights change neither the
forward under autocast nor the merged artifact."""

from __future__ import annotations

import random

import pytest
import torch

from alloylm.data.packing import pack_best_fit
from alloylm.train._trl import build_training_args, make_sft_trainer, model_for_saving
from alloylm.train.config import LoraConfig, TrainConfig
from alloylm.train.fit import load_trainable_model, rows_dataset, store_lora_base_for_autocast

pytestmark = pytest.mark.timeout(300)


def _rows(vocab: int = 400):
    rng = random.Random(0)
    examples = []
    for _ in range(12):
        n = rng.randint(5, 30)
        ids = [rng.randrange(3, vocab) for _ in range(n)]
        prompt = rng.randint(1, n - 1)
        examples.append((ids, [-100] * prompt + ids[prompt:]))  # completion-only labels
    return pack_best_fit(examples, 64)


def _loss_and_grads(trainer, batch, chunked: bool):
    model = trainer.model
    model.zero_grad(set_to_none=True)
    trainer.chunked_loss = chunked
    loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(37))
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("padding_free", [False, True])
def test_chunked_loss_equals_the_models_loss(tiny_llama, tmp_path, padding_free):
    from alloylm.models.loading import load_tokenizer

    train = TrainConfig(max_steps=1, per_device_batch_size=4, dtype="float32")
    model = load_trainable_model(tiny_llama, train, seed=0)
    args = build_training_args(train, tmp_path, seed=0)
    trainer = make_sft_trainer(
        model,
        load_tokenizer(tiny_llama),
        rows_dataset(_rows(), with_seq_lengths=padding_free),
        args,
        padding_free=padding_free,
    )
    batch = trainer._prepare_inputs(next(iter(trainer.get_train_dataloader())))
    assert trainer.chunked_loss_applies(model, batch)
    full_loss, full_grads = _loss_and_grads(trainer, batch, chunked=False)
    chunked_loss, chunked_grads = _loss_and_grads(trainer, batch, chunked=True)
    assert chunked_loss.item() == pytest.approx(full_loss.item(), rel=1e-6)
    assert chunked_grads.keys() == full_grads.keys()
    for name, grad in full_grads.items():
        torch.testing.assert_close(chunked_grads[name], grad, rtol=1e-4, atol=1e-6, msg=name)


def _lora_train(dtype: str) -> TrainConfig:
    return TrainConfig(dtype=dtype, lora=LoraConfig(r=4, dropout=0.0))


def test_lora_bf16_frozen_weights_keep_the_autocast_forward(tiny_llama, monkeypatch):
    import alloylm.train._trl as trl_adapter

    monkeypatch.setattr(trl_adapter, "resolve_dtype", lambda dtype: "bfloat16")
    ids = torch.randint(3, 400, (2, 16))
    plain = load_trainable_model(tiny_llama, _lora_train("bfloat16"), seed=0)
    cast = load_trainable_model(tiny_llama, _lora_train("bfloat16"), seed=0)
    assert store_lora_base_for_autocast(cast, _lora_train("bfloat16"))
    with torch.no_grad():  # nonzero adapters, so that they take part
        for a, b in zip(plain.parameters(), cast.parameters(), strict=True):
            if a.requires_grad:
                a.normal_(0, 0.05)
                b.copy_(a)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = plain(input_ids=ids).logits
        got = cast(input_ids=ids).logits
    assert torch.equal(got, want)
    # the merged artifact: the adapter merged into the loaded fp32 weights, not the bf16 ones
    merged_cast = model_for_saving(cast, _lora_train("bfloat16").lora).state_dict()
    merged_plain = model_for_saving(plain, _lora_train("bfloat16").lora).state_dict()
    assert merged_cast.keys() == merged_plain.keys()
    for name, tensor in merged_plain.items():
        assert merged_cast[name].dtype == torch.float32, name
        torch.testing.assert_close(merged_cast[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_lora_keeps_fp32_frozen_weights_without_bf16(tiny_llama, monkeypatch):
    import alloylm.train._trl as trl_adapter

    monkeypatch.setattr(trl_adapter, "resolve_dtype", lambda dtype: "float32")
    model = load_trainable_model(tiny_llama, _lora_train("auto"), seed=0)
    assert not store_lora_base_for_autocast(model, _lora_train("auto"))
    assert {p.dtype for p in model.parameters()} == {torch.float32}


def test_lora_adapters_use_fast_dropout(tiny_llama):
    from alloylm.train.fast_dropout import FastDropout

    model = load_trainable_model(tiny_llama, TrainConfig(lora=LoraConfig(r=4, dropout=0.1)), seed=0)
    dropouts = [m for n, m in model.named_modules() if "lora_dropout." in n]
    assert dropouts and all(type(m) is FastDropout and m.p == 0.1 for m in dropouts)


def test_lora_dropout_defaults_to_peft_default_and_off(tiny_llama):
    """No dropout unless asked (peft's own default): no adapter pays for masks on its input."""
    import dataclasses

    from peft import LoraConfig as PeftLoraConfig

    peft_default = next(
        f.default for f in dataclasses.fields(PeftLoraConfig) if f.name == "lora_dropout"
    )
    assert LoraConfig().dropout == peft_default == 0.0
    model = load_trainable_model(tiny_llama, TrainConfig(lora=LoraConfig(r=4)), seed=0)
    dropouts = [m for n, m in model.named_modules() if "lora_dropout." in n]
    assert dropouts and all(type(m) is torch.nn.Identity for m in dropouts)
