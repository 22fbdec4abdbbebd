"""Protocols: how an item becomes a prompt, and how the model's output becomes an answer.

- `paper`: the study's protocol (Lu, Luu & Buehler, arXiv 2409.03444): the instruction
  "You respond with one word or letter. Select the correct answer to this question: {question}",
  the model's chat template, the assistant turn started with "The correct answer is:", greedy
  decoding, and `extract_answer` mapping the response to one letter (or True/False).
- `loglik`: log-likelihood of each label (" A", " B", ... or " True"/" False") after the prompt.
- `cloze`: log-likelihood of each option's text after the question, divided by its length in
  characters (lm-evaluation-harness `acc_norm`).

`template` picks the prompt text: "chat" (default; the chat template applied through
alloylm.data.chat_template.format_prompt, exactly as SFT formats training examples) or "plain"
(lm-evaluation-harness's MMLU prompt "{question}\\nA. ...\\nAnswer:" without any template).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

from alloylm.evals.scoring import Scorer
from alloylm.evals.tasks import LETTERS, Item

Template = Literal["chat", "plain"]
PAPER_INSTRUCTION = (
    "You respond with one word or letter. Select the correct answer to this question: {question}"
)
ANSWER_CUE = "The correct answer is:"
_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


@dataclass(frozen=True)
class PromptSettings:
    template: Template = "chat"
    subject: str | None = None  # "college biology": the plain prompt's MMLU description line
    max_new_tokens: int = 16


def question_text(item: Item, *, option_style: str = ") ") -> str:
    """The question with its lettered options, one per line ("A) text" or "A. text")."""
    if item.kind != "mcq":
        return item.question
    options = "\n".join(
        f"{letter}{option_style}{choice}"
        for letter, choice in zip(LETTERS, item.choices, strict=False)
    )
    return f"{item.question}\n{options}"


def _description(settings: PromptSettings) -> str:
    if settings.subject:
        return f"The following are multiple choice questions (with answers) about {settings.subject}.\n\n"
    return ""


def chat_prompt(tokenizer: Any, user_text: str) -> str:
    """The user turn, the generation prompt, and the assistant's first words: the answer cue."""
    from alloylm.data.chat_template import format_prompt

    return format_prompt(tokenizer, [{"role": "user", "content": user_text}]) + ANSWER_CUE


def labelled_prompt(item: Item, tokenizer: Any, settings: PromptSettings) -> str:
    """Prompt after which the answer label (' A' or ' True') is scored or generated."""
    if settings.template == "plain":
        body = question_text(item, option_style=". ")
        if item.kind == "true_false":
            body += "\nTrue or False?"
        return f"{_description(settings)}{body.strip()}\nAnswer:"
    return chat_prompt(tokenizer, PAPER_INSTRUCTION.format(question=question_text(item)))


def cloze_prompt(item: Item, tokenizer: Any, settings: PromptSettings) -> str:
    """Prompt after which each option's text is scored: the question without the options."""
    if settings.template == "plain":
        return f"{_description(settings)}Question: {item.question.strip()}\nAnswer:"
    return chat_prompt(tokenizer, item.question.strip())


# ---------------------------------------------------------------- answer extraction
# A letter is read as a letter when it is a capital, or a small letter followed by ")" or "."
# or ending the reply: "a lipid" is the article, "b)" and a reply "c" are options.
_SMALL_LETTER = r"[a-j](?:[\)\.](?=\s|$)|\s*$)"
_LETTER_ONLY = re.compile(r"^\s*[\(\[]?([A-Ja-j])[\)\]\.:,]?\s*$")
_LETTER_LEAD = re.compile(
    r"^\s*[\(\[]?(?:([A-J])(?:[\)\]\.:,]|\s*$|\s+-)|(?=[a-j][\)\.](?:\s|$))([a-j]))"
)
_ANSWER_IS = re.compile(
    r"(?i:answer)\s*(?:(?i:is)|:)?\s*:?\s*[\(\[]?(?:([A-J])(?![\w'])|(?="
    + _SMALL_LETTER
    + r")([a-j]))"
)
_PARENTHESISED = re.compile(r"\(([A-Ja-j])\)")
# Two letters joined as a list ("A and B", "A, B", "A or B"): the reply names no single option.
_LETTER_LIST = re.compile(
    r"(?<![\w'])\(?([A-J])\)?\s*(?:,|&|/|\band\b|\bor\b)\s*(?:(?:also|maybe)\s+)?\(?([A-J])\)?(?![\w'])"
)
_STANDALONE = re.compile(r"(?<![\w'])([B-HJ])(?![\w'])")  # not A or I: English words
_TRUE_FALSE = re.compile(r"\b(true|false)\b", re.IGNORECASE)
_NEGATION = re.compile(r"(?:\bnot|n't|\bnever)\s+$", re.IGNORECASE)


def extract_choice(response: str, n_options: int, choices: tuple[str, ...] = ()) -> int | None:
    """Map a free-text response to an option index, or None when it names no single option."""
    text = response.strip()
    if not text:
        return None
    letter = None
    for pattern in (_LETTER_ONLY, _LETTER_LEAD, _ANSWER_IS, _PARENTHESISED):
        match = pattern.search(text)
        if match:
            found = next(
                index for index in (1, 2) if index <= pattern.groups and match.group(index)
            )
            if _names_several(text, match.start(found)):  # "The answer is A and B"
                return None
            letter = match.group(found).upper()
            break
    if letter is None:
        if any(_names_several(text, m.start(1)) for m in _LETTER_LIST.finditer(text)):
            return None  # "Both A and B"
        named = _options_named(text, choices)
        if len(named) == 1:
            return named[0]
        standalone = {m.group(1) for m in _STANDALONE.finditer(text)}
        letter = standalone.pop() if len(standalone) == 1 else None
    if letter is None:
        return None
    index = LETTERS.index(letter)
    return index if index < n_options else None


def _names_several(text: str, position: int) -> bool:
    """True when a list of two different letters ("A and B", "C, D") starts at `position`."""
    match = _LETTER_LIST.match(text, position)
    return bool(match) and match.group(1) != match.group(2)


def _options_named(text: str, choices: tuple[str, ...]) -> list[int]:
    lowered = text.lower()
    return [index for index, choice in enumerate(choices) if choice and choice.lower() in lowered]


def extract_true_false(response: str) -> int | None:
    """0 for True, 1 for False, None when the response says neither (or both).

    A negated word counts as its opposite: "Not true" is False, "isn't false" is True.
    """
    text = response.strip()
    verdicts = set()
    for match in _TRUE_FALSE.finditer(text):
        says_true = match.group(1).lower() == "true"
        if _NEGATION.search(text[: match.start()]):
            says_true = not says_true
        verdicts.add(says_true)
    if len(verdicts) == 1:
        return 0 if verdicts == {True} else 1
    single = text.strip(".!() ").upper()
    if single in ("T", "F"):
        return 0 if single == "T" else 1
    return None


def extract_number(response: str) -> float | None:
    match = _NUMBER.search(response.replace(",", ""))
    return float(match.group(0)) if match else None


def extract_answer(response: str, item: Item) -> int | float | None:
    """The study's answer check: option index (mcq, true_false) or number (numeric); None = unparseable."""
    if item.kind == "true_false":
        return extract_true_false(response)
    if item.kind == "numeric":
        return extract_number(response)
    return extract_choice(response, len(item.choices), item.choices)


def is_correct(item: Item, answer: int | float | None) -> bool:
    if answer is None:
        return False
    if item.kind == "numeric":
        return any(low <= answer <= high for low, high in item.answer_ranges)
    return answer == item.answer_index


# ---------------------------------------------------------------- protocols
Prediction = dict[str, Any]
ProgressFn = Callable[[int], None]


def _prediction(item: Item, answer: int | float | None, **extra: Any) -> Prediction:
    shown = answer if item.kind == "numeric" or answer is None else item.labels[int(answer)]
    return {
        "id": item.id,
        "category": item.category,
        "gold": item.gold,
        "pred": shown,
        "parsed": answer is not None,
        "correct": is_correct(item, answer),
        **extra,
    }


class Protocol:
    name: ClassVar[str] = ""
    item_kinds: ClassVar[tuple[str, ...]] = ("mcq", "true_false")

    def supports(self, item: Item) -> bool:
        return item.kind in self.item_kinds

    def run(
        self, scorer: Scorer, items: list[Item], settings: PromptSettings, progress: ProgressFn
    ) -> list[Prediction]:
        raise NotImplementedError


class PaperProtocol(Protocol):
    name = "paper"
    item_kinds = ("mcq", "true_false", "numeric")

    def run(
        self, scorer: Scorer, items: list[Item], settings: PromptSettings, progress: ProgressFn
    ) -> list[Prediction]:
        # The instruction and answer cue are the study's whatever `template` says: it is a chat protocol.
        chat = PromptSettings(template="chat", max_new_tokens=settings.max_new_tokens)
        prompts = [
            scorer.encode(labelled_prompt(item, scorer.tokenizer, chat), special_tokens=False)
            for item in items
        ]
        responses = scorer.generate(
            prompts, max_new_tokens=settings.max_new_tokens, progress=progress
        )
        return [
            _prediction(item, extract_answer(response, item), response=response)
            for item, response in zip(items, responses, strict=False)
        ]


class LoglikProtocol(Protocol):
    name = "loglik"

    def run(
        self, scorer: Scorer, items: list[Item], settings: PromptSettings, progress: ProgressFn
    ) -> list[Prediction]:
        special = settings.template == "plain"
        prompts = [
            scorer.encode(labelled_prompt(item, scorer.tokenizer, settings), special_tokens=special)
            for item in items
        ]
        label_ids = [
            [scorer.encode(" " + label, special_tokens=False) for label in item.labels]
            for item in items
        ]
        single = [index for index, ids in enumerate(label_ids) if all(len(t) == 1 for t in ids)]
        scores: list[list[float]] = [[] for _ in items]
        if single:  # the common case: every label is one token, one forward pass scores them all
            found = scorer.next_token_logprobs(
                [prompts[i] for i in single],
                [[t[0] for t in label_ids[i]] for i in single],
                progress,
            )
            for index, row in zip(single, found, strict=False):
                scores[index] = row
        several = sorted(set(range(len(items))) - set(single))
        found = scorer.continuation_logprobs_many(
            [(prompts[i], label_ids[i]) for i in several], progress
        )
        for index, row in zip(several, found, strict=True):
            scores[index] = row
        return [
            _prediction(item, _argmax(row), scores=_rounded(row))
            for item, row in zip(items, scores, strict=False)
        ]


class ClozeProtocol(Protocol):
    name = "cloze"

    def run(
        self, scorer: Scorer, items: list[Item], settings: PromptSettings, progress: ProgressFn
    ) -> list[Prediction]:
        special = settings.template == "plain"
        questions = [
            (
                scorer.encode(
                    cloze_prompt(item, scorer.tokenizer, settings), special_tokens=special
                ),
                [
                    scorer.encode(" " + choice, special_tokens=False) or [scorer.pad_id]
                    for choice in item.choices
                ],
            )
            for item in items
        ]
        predictions = []
        for item, totals in zip(
            items, scorer.continuation_logprobs_many(questions, progress), strict=True
        ):
            normalised = [
                total / max(len(choice), 1)
                for total, choice in zip(totals, item.choices, strict=False)
            ]
            predictions.append(_prediction(item, _argmax(normalised), scores=_rounded(normalised)))
        return predictions


def _argmax(values: list[float]) -> int:
    return max(range(len(values)), key=values.__getitem__)


def _rounded(values: list[float]) -> list[float]:
    return [round(value, 5) for value in values]
