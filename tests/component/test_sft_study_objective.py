"""The study's SFT objective (every token in the loss, conversations concatenated into full rows
that attend to each other) and the alignment-handbook's empty system turn, as options."""

from __future__ import annotations

import json
import math

from test_train_sft import make_config, run_stage

from alloylm.data.chat_template import format_chat, with_empty_system_turn
from alloylm.models.loading import load_tokenizer
from alloylm.stages import sft

CHAT = [{"role": "user", "content": "What is silk?"}, {"role": "assistant", "content": "A fibre."}]


def test_empty_system_turn_follows_the_handbooks_rule(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    assert "<|im_start|>" in format_chat(tokenizer, CHAT)  # ChatML: the handbook inserts one
    turned = with_empty_system_turn(tokenizer, CHAT)
    assert turned[0] == {"role": "system", "content": ""} and turned[1:] == CHAT
    system = [{"role": "system", "content": "Be brief."}, *CHAT]
    assert with_empty_system_turn(tokenizer, system) == system  # one already there: unchanged
    tokenizer.chat_template = (  # a template that never mentions a system turn gets none
        "{% for m in messages %}{{ m['role'] + ': ' + m['content'] + '\\n' }}{% endfor %}"
    )
    assert with_empty_system_turn(tokenizer, CHAT) == CHAT


def test_concatenated_examples_train_every_token(tiny_llama):
    tokenizer = load_tokenizer(tiny_llama)
    ((ids, labels),) = sft.concatenated_examples(tokenizer, [CHAT])
    assert labels == ids  # user and template tokens are in the loss too
    assert tokenizer.decode(ids).count("What is silk?") == 1


def test_sft_stage_with_the_studys_objective(tmp_path, data_root):
    cfg = make_config(data_root, max_steps=2, max_seq_length=64)
    cfg = sft.Config.model_validate(
        {**cfg.model_dump(), "objective": "all_tokens_concatenated", "empty_system_turn": True}
    )
    result = run_stage(tmp_path, cfg)
    details, metrics = result.details, result.metrics
    assert details["packing"] == "concatenated_rows" and details["empty_system_turn"] is True
    assert metrics["loss_token_fraction"] == 1.0  # every token is a label
    assert metrics["row_fill_fraction"] == 1.0  # rows are full: conversations run across them
    assert math.isfinite(metrics["final_loss"])
    default = make_config(data_root)
    assert default.objective == "assistant_tokens" and default.empty_system_turn is False


def test_preference_prompts_get_the_empty_system_turn(tmp_path, tiny_llama):
    from alloylm.data.preference import PreferenceSource
    from alloylm.train.preference_fit import prepare_pairs

    path = tmp_path / "pairs.jsonl"
    path.write_text(
        json.dumps({"prompt": "Why silk?", "chosen": "Tough.", "rejected": "No."}) + "\n"
    )
    tokenizer = load_tokenizer(tiny_llama)

    def prompt(turn: bool) -> str:
        rows, _, _ = prepare_pairs(
            lambda line: None, tokenizer, [PreferenceSource(path=str(path))], seed=0,
            max_prompt_length=64, max_length=128, long_prompts="drop", empty_system_turn=turn,
        )  # fmt: skip
        return rows[0]["prompt"]

    # SmolLM's template puts its default system prompt in front of a conversation without one;
    # the handbook's empty system turn replaces it with an empty one
    assert "<|im_start|>system\n<|im_end|>" in prompt(True)
    assert "named SmolLM" in prompt(False) and "named SmolLM" not in prompt(True)
