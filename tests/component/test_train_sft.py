"""SFT stage on the tiny Llama: assistant-only loss, pad != EOS, packing, LoRA merged into a plain model."""

from __future__ import annotations

import math
from pathlib import Path

from alloylm.contract import Progress, StageContext
from alloylm.stages import sft

STEPS = 5


class Quiet(Progress):
    def log(self, message):
        pass


def make_config(data_root: Path, **train) -> sft.Config:
    folder = data_root / "openstax_sft"
    return sft.Config(
        model="tiny:llama",
        data=[
            {"path": str(folder / "anatomy_physiology_2e_exercises_qa.jsonl"), "limit": 16},
            {
                "path": str(folder / "anatomy_physiology_2e_glossary.jsonl"),
                "limit": 16,
                "weight": 0.5,
                "template": {"user": "What is {term}?", "assistant": "{definition}"},
            },
        ],
        train={
            "max_steps": STEPS,
            "max_seq_length": 128,
            "per_device_batch_size": 2,
            "learning_rate": 1e-2,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "save_steps": 100,
            **train,
        },
    )


def run_stage(root: Path, cfg: sft.Config):
    ctx = StageContext("sft", "test", 42, root / "work", root / "state", root, progress=Quiet())
    ctx.work_dir.mkdir(parents=True)
    return sft.run(ctx, cfg)


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def changed_tensors(base: Path, trained: Path) -> int:
    before, after = load_weights(base), load_weights(trained)
    assert before.keys() == after.keys()
    return sum(1 for name in before if not (before[name] == after[name]).all())


def _answer_starts_past(model: Path, data_root: Path, max_length: int) -> dict[str, int]:
    """How many of make_config's records have no assistant token within `max_length` tokens."""
    from alloylm.data.chat_template import ensure_chat_template, format_prompt
    from alloylm.data.sources import load_chat_examples
    from alloylm.models.loading import load_tokenizer

    tokenizer = load_tokenizer(model)
    ensure_chat_template(tokenizer)
    counts = {}
    for name, source in zip(("exercises", "glossary"), make_config(data_root).data, strict=True):
        records = load_chat_examples(source).records
        first_answer = [
            len(
                tokenizer(format_prompt(tokenizer, r.messages[:-1]), add_special_tokens=False)[
                    "input_ids"
                ]
            )
            for r in records
        ]
        counts[name] = sum(start >= max_length for start in first_answer)
    return counts


def test_sft_full_fine_tuning(tmp_path, data_root, tiny_llama):
    result = run_stage(tmp_path, make_config(data_root))
    metrics, details = result.metrics, result.details
    losses = [loss for _, loss in metrics["loss_history"]]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert [s["mixed_records"] for s in details["sources"]] == [16, 8]  # weight 0.5 on the glossary
    # Counted from the records themselves: no answer starts past 128 tokens, so none is dropped
    # (test_sft_drops_conversations_whose_answer_is_cut_off covers dropping).
    assert _answer_starts_past(tiny_llama, data_root, 128) == {"exercises": 0, "glossary": 0}
    assert details["dropped_no_assistant_after_truncation"] == 0
    assert details["conversations"] == 24
    assert 0.0 < metrics["loss_token_fraction"] < 1.0  # prompts are masked out
    assert metrics["real_token_fraction"] == 1.0  # packed, padding-free
    assert changed_tensors(tiny_llama, tmp_path / "work") > 0

    from transformers import AutoModelForCausalLM, AutoTokenizer

    AutoModelForCausalLM.from_pretrained(tmp_path / "work")
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "work")
    assert tokenizer.pad_token != tokenizer.eos_token
    assert details["pad_token"]["token"] == tokenizer.pad_token


def test_sft_drops_conversations_whose_answer_is_cut_off(tiny_llama, data_root):
    from alloylm.data.sources import load_chat_examples
    from alloylm.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama)
    exercises = load_chat_examples(make_config(data_root).data[0]).records
    expected = _answer_starts_past(tiny_llama, data_root, 70)["exercises"]
    assert 0 < expected < len(exercises)
    examples, dropped = sft.tokenize_examples(
        tokenizer, [r.messages for r in exercises], max_length=70
    )
    assert dropped == expected and len(examples) == len(exercises) - expected
    assert all(
        len(ids) <= 70 and any(label != -100 for label in labels) for ids, labels in examples
    )


def test_sft_labels_cover_assistant_turns_and_eos(tiny_llama):
    from alloylm.data.packing import IGNORE_INDEX
    from alloylm.models.loading import load_tokenizer

    tokenizer = load_tokenizer(tiny_llama)
    messages = [
        {"role": "user", "content": "What is bone?"},
        {"role": "assistant", "content": "A tissue."},
    ]
    [(ids, labels)], dropped = sft.tokenize_examples(tokenizer, [messages], max_length=128)
    trained = [tok for tok in labels if tok != IGNORE_INDEX]
    text = tokenizer.decode(trained)
    assert dropped == 0
    assert "A tissue." in text and "What is bone?" not in text
    assert tokenizer.eos_token_id in trained  # the model learns to stop


def test_sft_lora_merges_into_a_plain_model(tmp_path, data_root, tiny_llama):
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "merge_adapter": True}
    result = run_stage(tmp_path, make_config(data_root, lora=lora))
    metrics = result.metrics
    assert metrics["trainable_parameters"] < metrics["total_parameters"] / 2
    assert math.isfinite(metrics["final_loss"])
    work = tmp_path / "work"
    assert not (work / "adapter_config.json").exists()
    assert changed_tensors(tiny_llama, work) > 0

    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(work)
    assert not any("lora" in name for name, _ in model.named_parameters())


def test_sft_lora_without_merge_saves_the_adapter(tmp_path, data_root):
    lora = {"r": 4, "alpha": 8, "merge_adapter": False}
    run_stage(tmp_path, make_config(data_root, lora=lora, max_steps=1))
    assert (tmp_path / "work" / "adapter_config.json").is_file()
