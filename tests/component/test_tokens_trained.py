"""`tokens_trained` is what the model was trained on, for every training stage kind.

Measured independently of the trainer: a hook on the model's decoder adds up the tokens of every
forward pass run with gradients (the attention mask's ones, or every position of a batch without
a mask), so the reference passes of DPO and the diagnostics' scoring (no gradients) are left out.
Before the fix, ORPO (and SimPO/CPO, the same batch format) reported 0 and DPO and unpacked SFT
counted their padding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from alloylm.contract import Progress, StageContext

pytestmark = pytest.mark.timeout(300)

TRAIN = {"max_steps": 3, "learning_rate": 1e-3, "per_device_batch_size": 2, "lr_scheduler": "constant",
         "warmup_ratio": 0.0, "save_steps": 100}  # fmt: skip


class Quiet(Progress):
    def log(self, message: str) -> None:
        pass


@pytest.fixture
def seen(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Tokens of each forward pass with gradients of the model a stage loads for training."""
    import torch

    from alloylm.train import fit

    counts: list[int] = []
    load = fit.load_trainable_model

    def count(module: Any, args: tuple, kwargs: dict) -> None:
        if not torch.is_grad_enabled():
            return
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        counts.append(int(mask.sum()) if mask is not None else int(ids.numel()))

    def load_with_hook(*a: Any, **k: Any) -> Any:
        model = load(*a, **k)
        model.get_decoder().register_forward_pre_hook(count, with_kwargs=True)
        return model

    monkeypatch.setattr(fit, "load_trainable_model", load_with_hook)
    return counts


def _ctx(tmp_path: Path, name: str) -> StageContext:
    ctx = StageContext(name, "test", 42, tmp_path / "work", tmp_path / "state", tmp_path, Quiet())
    ctx.work_dir.mkdir(parents=True)
    return ctx


def _pairs(path: Path) -> Path:
    # replies of unequal lengths, so that a batch of two pairs has padding
    terms = ["osteon", "tendon", "enzyme", "neuron", "collagen", "keratin"]
    rows = [
        {"prompt": f"What is {t}?", "chosen": f"{t} is a tissue word. " * (1 + i % 3),
         "rejected": "blue." if i % 2 else "blue blue blue blue blue blue."}
        for i, t in enumerate(terms)
    ]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_cpt_counts_its_packed_rows(seen, tmp_path, data_root, tiny_llama) -> None:
    from alloylm.stages import cpt

    corpus = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    cfg = cpt.Config(model=str(tiny_llama), data=[{"path": str(corpus), "limit": 4}],
                     train={**TRAIN, "max_seq_length": 64})  # fmt: skip
    metrics = cpt.run(_ctx(tmp_path, "cpt"), cfg).metrics
    assert metrics["tokens_trained"] == sum(seen) == 3 * 2 * 64


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_sft_counts_no_padding(seen, tmp_path, data_root, tiny_llama, packing) -> None:
    from alloylm.stages import sft

    qa = data_root / "openstax_sft" / "anatomy_physiology_2e_exercises_qa.jsonl"
    cfg = sft.Config(model=str(tiny_llama), data=[{"path": str(qa), "limit": 8}],
                     train={**TRAIN, "max_seq_length": 96, "packing": packing})  # fmt: skip
    metrics = sft.run(_ctx(tmp_path, "sft"), cfg).metrics
    assert len(seen) == 3 and sum(seen) > 0
    assert metrics["tokens_trained"] == sum(seen)


def test_dpo_counts_both_sequences_without_padding(seen, tmp_path, tiny_llama) -> None:
    from alloylm.stages import dpo

    cfg = dpo.Config(model=str(tiny_llama), data=[{"path": str(_pairs(tmp_path / "p.jsonl"))}],
                     train={**TRAIN, "max_seq_length": 64})  # fmt: skip
    metrics = dpo.run(_ctx(tmp_path, "dpo"), cfg).metrics
    assert len(seen) == 3 and sum(seen) > 0
    assert metrics["tokens_trained"] == sum(seen)


@pytest.mark.parametrize("kind", ["orpo", "simpo"])
def test_paired_trainers_count_both_sequences(seen, tmp_path, tiny_llama, kind) -> None:
    import importlib

    stage = importlib.import_module(f"alloylm.stages.{kind}")
    cfg = stage.Config(model=str(tiny_llama), data=[{"path": str(_pairs(tmp_path / "p.jsonl"))}],
                       train={**TRAIN, "max_seq_length": 64})  # fmt: skip
    metrics = stage.run(_ctx(tmp_path, kind), cfg).metrics
    assert len(seen) == 3 and sum(seen) > 0
    assert metrics["tokens_trained"] == sum(seen)


def test_batch_tokens_reads_each_trainers_batch() -> None:
    import torch

    from alloylm.train.token_count import batch_tokens

    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    assert batch_tokens({"input_ids": torch.zeros(2, 4), "attention_mask": mask}) == 5
    assert batch_tokens({"input_ids": torch.zeros(1, 7)}) == 7  # padding-free row
    paired = {"prompt_input_ids": torch.zeros(2, 2), "prompt_attention_mask": torch.ones(2, 2),
              "chosen_input_ids": torch.zeros(2, 4), "chosen_attention_mask": mask,
              "rejected_input_ids": torch.zeros(2, 3), "rejected_attention_mask": torch.ones(2, 3)}  # fmt: skip
    assert batch_tokens(paired) == 5 + 6  # the prompt is inside chosen and rejected
