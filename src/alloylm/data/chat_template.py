"""The one place where chat messages become model text.

SFT, DPO, ORPO, evaluation prompts, chat and distillation all call these functions, so that a
model is trained and measured on exactly the same formatting. The model's own chat template is
used; a model without one (a Base model) gets ChatML, and the choice is recorded by the caller.

BOS, one rule for every stage: a rendered conversation starts with the tokenizer's BOS token
exactly once whenever the tokenizer has one (`with_bos`), as every CPT document does. A template
that renders BOS itself (Llama 3, Mistral Instruct, Gemma) is left as it is; one that does not
(ChatML given to a Base model such as Mistral-7B, whose tokenizer adds <s> itself) gets it put
in front. Text is then tokenized without special tokens. For the preference trainers, which
tokenize themselves, `without_auto_bos` removes the BOS that the trainer will add again: TRL's
DPOTrainer tokenizes the texts with the tokenizer's special tokens (so a tokenizer that adds BOS
itself adds it), and ORPO puts BOS in front of a prompt that does not start with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Message = dict[str, str]

# ChatML, for models that ship no template (the study's Base lineages get the family template).
CHATML_TEMPLATE = (
    "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\n' + message['content'] "
    "+ '<|im_end|>' + '\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
VALID_ROLES = ("system", "user", "assistant")


def ensure_chat_template(tokenizer: Any) -> bool:
    """Give `tokenizer` ChatML when it has no template. Returns True when it had to."""
    if getattr(tokenizer, "chat_template", None):
        return False
    tokenizer.chat_template = CHATML_TEMPLATE
    return True


def with_empty_system_turn(tokenizer: Any, messages: Sequence[Message]) -> list[Message]:
    """`messages` with an empty system message first when they have none and the chat template
    mentions "system" or `<|im_start|>`: the alignment-handbook's `auto_insert_empty_system_msg`
    (on by default there, so the study trained with it). Off unless a stage asks for it
    (`empty_system_turn: true`): for Mistral's template it renders a user turn as `[INST] \n\n...`.
    """
    messages = list(messages)
    if messages and messages[0]["role"] == "system":
        return messages
    ensure_chat_template(tokenizer)
    template = tokenizer.chat_template
    if not isinstance(template, str):  # a dict of named templates: the default one
        template = (template or {}).get("default") or ""
    if "system" in template or "<|im_start|>" in template:
        return [{"role": "system", "content": ""}, *messages]
    return messages


def with_bos(tokenizer: Any, text: str) -> str:
    """`text` starting with the tokenizer's BOS token once (unchanged for a tokenizer without BOS)."""
    bos = getattr(tokenizer, "bos_token", None)
    if not bos or text.startswith(bos):
        return text
    return bos + text


def adds_bos_itself(tokenizer: Any) -> bool:
    """True when tokenizing with special tokens puts BOS in front (Llama 2/3, Mistral, Gemma)."""
    bos_id = getattr(tokenizer, "bos_token_id", None)
    if bos_id is None:
        return False
    return tokenizer("", add_special_tokens=True)["input_ids"][:1] == [bos_id]


def without_auto_bos(tokenizer: Any, text: str) -> str:
    """`text` minus its leading BOS when the tokenizer adds BOS by itself.

    For trainers that tokenize text with special tokens (TRL's DPOTrainer) or add a missing BOS
    (ORPO): they put it back, so the sequence they train on has one BOS, as `with_bos` text
    tokenized without special tokens has.
    """
    bos = getattr(tokenizer, "bos_token", None)
    if bos and text.startswith(bos) and adds_bos_itself(tokenizer):
        return text[len(bos) :]
    return text


def format_chat(
    tokenizer: Any, messages: Sequence[Message], *, add_generation_prompt: bool = False
) -> str:
    """Render `messages` with the tokenizer's chat template, as text (not tokenized), BOS first."""
    ensure_chat_template(tokenizer)
    rendered = tokenizer.apply_chat_template(
        list(messages), tokenize=False, add_generation_prompt=add_generation_prompt
    )
    return with_bos(tokenizer, rendered)


def format_prompt(tokenizer: Any, messages: Sequence[Message]) -> str:
    """The text a model continues to answer `messages` (generation prompt appended)."""
    return format_chat(tokenizer, messages, add_generation_prompt=True)


def assistant_char_spans(
    tokenizer: Any, messages: Sequence[Message]
) -> tuple[str, list[tuple[int, int]]]:
    """Full rendered text and the character spans that assistant turns contribute.

    Each span runs from the end of the generation prompt before an assistant turn to the end of
    that turn's rendering, so it includes the end-of-turn token (the model must learn to stop).
    Works for any template whose rendering of a prefix of the conversation is a prefix of the
    whole rendering (true for ChatML, Llama 3, Mistral, Gemma templates).
    """
    full = format_chat(tokenizer, messages)
    bos = getattr(tokenizer, "bos_token", None) or ""
    leading_bos = len(bos) if bos and full.startswith(bos) else 0  # never a label
    spans: list[tuple[int, int]] = []
    for index, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        start = (
            len(format_chat(tokenizer, messages[:index], add_generation_prompt=True))
            if index
            else leading_bos
        )
        end = len(format_chat(tokenizer, messages[: index + 1]))
        if full[:end] != format_chat(tokenizer, messages[: index + 1]):
            raise ValueError(
                "chat template renders a conversation prefix differently from the whole"
            )
        spans.append((start, end))
    return full, spans


def tokenize_chat(
    tokenizer: Any, messages: Sequence[Message], *, max_length: int | None = None
) -> dict[str, list[int]]:
    """Token ids and an assistant mask (1 = the loss is computed on this token) for one conversation."""
    text, spans = assistant_char_spans(tokenizer, messages)
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    mask = []
    for start, end in encoded["offset_mapping"]:
        inside = any(s <= start and end <= e and end > start for s, e in spans)
        mask.append(1 if inside else 0)
    ids = list(encoded["input_ids"])
    if max_length is not None:
        ids, mask = ids[:max_length], mask[:max_length]
    return {"input_ids": ids, "assistant_masks": mask}


def validate_messages(messages: Any) -> str | None:
    """Return what is wrong with a message list, or None when it is usable for training."""
    if not isinstance(messages, list) or not messages:
        return "expected a non-empty list of {role, content} messages"
    for position, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            return f"message {position} needs 'role' and 'content'"
        if message["role"] not in VALID_ROLES:
            return f"message {position} has role {message['role']!r}; expected one of {', '.join(VALID_ROLES)}"
        if not isinstance(message["content"], str):
            return f"message {position} content must be a string"
    if not any(m["role"] == "assistant" for m in messages):
        return "no assistant message: nothing to learn"
    return None


def pick_pad_token(tokenizer: Any) -> tuple[str, bool]:
    """Choose a pad token that differs from EOS, so that EOS positions stay in the loss.

    Returns (token, changed). Prefers the tokenizer's own pad when distinct, then unk, then
    common reserved tokens that exist in the vocabulary; never grows the vocabulary.
    """
    eos = tokenizer.eos_token
    if tokenizer.pad_token is not None and tokenizer.pad_token != eos:
        return tokenizer.pad_token, False
    vocab = tokenizer.get_vocab()
    for candidate in (
        tokenizer.unk_token,
        "<|endoftext|>",
        "<|finetune_right_pad_id|>",
        "<pad>",
        "[PAD]",
        "<|pad|>",
    ):
        if candidate and candidate != eos and candidate in vocab:
            tokenizer.pad_token = candidate
            return candidate, True
    raise ValueError(
        "no token distinct from EOS is available as padding; add one to the tokenizer "
        "(and resize the embeddings) before SFT"
    )
