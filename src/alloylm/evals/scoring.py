"""Batched model computations behind the protocols: next-token scores, option scores, greedy answers.

Speed choices (CPU-first, same results as scoring each option separately):
- letters: one forward pass per question; only the last position's logits are computed
  (`logits_to_keep=1`), so the vocabulary projection runs once per question, not per token;
- cloze: the question's prefix runs once with the KV cache on, the cache is repeated for the
  options, and only the option tokens run again;
- prompts are sorted by length and batched, so padding stays small; the tokens every prompt of a
  batch starts with (chat template, system prompt, instruction, MMLU description) run once;
- on a small CPU, batches run in parallel worker threads with one intra-op thread each: a 135M
  model's matrices are too small for two OpenMP threads to share one well (measured on 2 cores:
  loglik on MMLU college biology 23.5 s with one worker of 2 threads, 21.1 s with 2 workers of 1;
  see benchmarks/eval_speed.py). Every batch is computed the same way whatever the worker count.
"""

from __future__ import annotations

import contextlib
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from typing import Any, TypeVar

import torch

from alloylm.generation.batching import (
    MIN_SHARED_PREFIX,
    after_shared_prefix,
    cache_of,
    common_prefix_length,
    left_padded,
)

ProgressFn = Callable[[int], None]
Job = TypeVar("Job")
Result = TypeVar("Result")
# `workers="auto"` splits a CPU's intra-op threads into single-threaded workers up to this many
# threads; beyond it (a big server) OpenMP inside one forward call is left to do the work.
AUTO_WORKERS_MAX_THREADS = 4
# Sequences one generation batch keeps in flight, per `batch_size`: a decode step costs little
# more for more rows, since the weights are read once a step (SmolLM2-135M in fp32 on one CPU
# thread, probe on an idle machine, 2026-12-07: 119 ms a step for 8 rows, 231 ms for 32).
GENERATION_ROWS_PER_BATCH = 4


def auto_workers(device: torch.device) -> int:
    """One single-threaded worker per intra-op thread on a small CPU; one worker otherwise."""
    threads = torch.get_num_threads()
    if device.type == "cpu" and 1 < threads <= AUTO_WORKERS_MAX_THREADS:
        return threads
    return 1


@contextlib.contextmanager
def _one_intra_op_thread() -> Iterator[None]:
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _noop(_: int) -> None:
    return None


class Scorer:
    """Wraps one loaded causal LM and its tokenizer for evaluation."""

    def __init__(
        self, model: Any, tokenizer: Any, *, batch_size: int = 8, workers: int | str = "auto"
    ) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = max(1, int(batch_size))
        self.device = next(model.parameters()).device
        self.workers = auto_workers(self.device) if workers == "auto" else max(1, int(workers))
        pad = (
            tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        )
        self.pad_id = int(pad if pad is not None else 0)
        # transformers >= 5.2x calls the KV cache `cache`; earlier releases `past_key_values`.
        forward_parameters = inspect.signature(model.forward).parameters
        self._cache_kwarg = "cache" if "cache" in forward_parameters else "past_key_values"

    def encode(self, text: str, *, special_tokens: bool) -> list[int]:
        """Token ids; chat-templated text already holds its special tokens (special_tokens=False)."""
        return list(self.tokenizer(text, add_special_tokens=special_tokens)["input_ids"])

    def _in_workers(
        self, jobs: Sequence[Job], work: Callable[[Job], Result]
    ) -> Iterator[tuple[Job, Result]]:
        """(job, work(job)) for every job, in completion order; jobs run in `self.workers` threads."""
        if self.workers == 1 or len(jobs) < 2:
            with torch.inference_mode():
                for job in jobs:
                    yield job, work(job)
            return

        def run(job: Job) -> Result:
            with torch.inference_mode():  # thread-local: each worker enters it itself
                return work(job)

        with _one_intra_op_thread(), ThreadPoolExecutor(self.workers) as pool:
            futures = {pool.submit(run, job): job for job in jobs}
            try:
                for future in as_completed(futures):
                    yield futures[future], future.result()
            finally:
                for future in futures:
                    future.cancel()

    def _batches(self, lengths: Sequence[int]) -> list[list[int]]:
        order = sorted(range(len(lengths)), key=lambda index: -lengths[index])
        return [
            order[start : start + self.batch_size]
            for start in range(0, len(order), self.batch_size)
        ]

    def next_token_logprobs(
        self,
        prompts: Sequence[Sequence[int]],
        candidates: Sequence[Sequence[int]],
        progress: ProgressFn = _noop,
    ) -> list[list[float]]:
        """log p(candidate token | prompt) for each prompt's candidate token ids; one pass per prompt."""

        def score(batch: list[int]) -> list[list[float]]:
            rows = [prompts[i] for i in batch]
            shared = min(common_prefix_length(rows), min(len(row) for row in rows) - 1)
            if shared >= MIN_SHARED_PREFIX:
                logits = self._last_logits_shared_prefix(rows, shared)
            else:
                logits = self._last_logits(rows)
            logprobs = torch.log_softmax(logits.float(), dim=-1)
            return [logprobs[row, list(candidates[i])].tolist() for row, i in enumerate(batch)]

        results: list[list[float]] = [[] for _ in prompts]
        for batch, scores in self._in_workers(self._batches([len(p) for p in prompts]), score):
            for index, row_scores in zip(batch, scores, strict=True):
                results[index] = row_scores
            progress(len(batch))
        return results

    def _last_logits(self, rows: Sequence[Sequence[int]]) -> torch.Tensor:
        """Logits after each row's last token: left padding, only the last position projected."""
        ids, mask = left_padded(rows, self.pad_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        out = self.model(
            input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=1
        )
        return out.logits[:, -1, :]

    def _last_logits_shared_prefix(
        self, rows: Sequence[Sequence[int]], shared: int
    ) -> torch.Tensor:
        """As _last_logits, but the tokens every row starts with (template, instruction) run once."""
        prefix = torch.tensor([list(rows[0][:shared])], dtype=torch.long, device=self.device)
        cache = cache_of(self.model(input_ids=prefix, use_cache=True, logits_to_keep=1))
        cache.batch_repeat_interleave(len(rows))
        ids, mask, keep, picks = after_shared_prefix(rows, shared, self.pad_id)
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            logits_to_keep=keep.to(self.device),
            **{self._cache_kwarg: cache},
        )
        return out.logits[torch.arange(len(rows), device=self.device), picks.to(self.device)]

    def continuation_logprobs_many(
        self,
        questions: Sequence[tuple[Sequence[int], Sequence[Sequence[int]]]],
        progress: ProgressFn = _noop,
    ) -> list[list[float]]:
        """continuation_logprobs for each (prefix, continuations) pair, spread over the workers."""
        results: list[list[float]] = [[] for _ in questions]
        jobs = sorted(range(len(questions)), key=lambda index: -len(questions[index][0]))
        for index, totals in self._in_workers(
            jobs, lambda index: self.continuation_logprobs(*questions[index])
        ):
            results[index] = totals
            progress(1)
        return results

    @torch.inference_mode()
    def continuation_logprobs(
        self, prefix: Sequence[int], continuations: Sequence[Sequence[int]]
    ) -> list[float]:
        """Sum of log p(continuation tokens | prefix) per continuation; the prefix runs once."""
        prefix_ids = torch.tensor([list(prefix)], dtype=torch.long, device=self.device)
        first = self.model(input_ids=prefix_ids, use_cache=True, logits_to_keep=1)
        first_logprobs = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
        totals = [float(first_logprobs[cont[0]]) for cont in continuations]
        longest = max(len(cont) for cont in continuations)
        if longest == 1:
            return totals
        cache = cache_of(first)
        cache.batch_repeat_interleave(len(continuations))
        # Right-pad the options: the cache covers positions [0, P); option tokens take P, P+1, ...
        ids = torch.full((len(continuations), longest - 1), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(continuations), len(prefix) + longest - 1), dtype=torch.long)
        mask[:, : len(prefix)] = 1
        for row, cont in enumerate(continuations):
            ids[row, : len(cont) - 1] = torch.tensor(cont[:-1], dtype=torch.long)
            mask[row, len(prefix) : len(prefix) + len(cont) - 1] = 1
        out = self.model(
            input_ids=ids.to(self.device),
            attention_mask=mask.to(self.device),
            **{self._cache_kwarg: cache},
        )
        logprobs = torch.log_softmax(out.logits.float(), dim=-1)
        for row, cont in enumerate(continuations):
            targets = torch.tensor(cont[1:], dtype=torch.long, device=self.device)
            picked = logprobs[row, : len(cont) - 1].gather(-1, targets[:, None])
            totals[row] += float(picked.sum())
        return totals

    def generate(
        self, prompts: Sequence[Sequence[int]], *, max_new_tokens: int, progress: ProgressFn = _noop
    ) -> list[str]:
        """Greedy continuations, decoded without special tokens, by the one generation loop
        (alloylm/generation/): the same stop rule as serving and chat.

        Each worker runs one decode batch over its share of the prompts: they join it
        `batch_size` at a time while at most GENERATION_ROWS_PER_BATCH x batch_size are in
        flight, and a finished answer's place goes to the next prompts."""
        from alloylm.generation.batching import generate_batch
        from alloylm.generation.sampling import SamplingParams

        params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0.0)
        order = sorted(range(len(prompts)), key=lambda index: -len(prompts[index]))
        shares = [order[start :: self.workers] for start in range(self.workers)]
        lock = threading.Lock()

        def one_done(_: int) -> None:
            with lock:
                progress(1)

        def answer(share: list[int]) -> list[str]:
            results = generate_batch(
                self.model,
                self.tokenizer,
                [prompts[i] for i in share],
                params,
                pad_id=self.pad_id,
                join_size=self.batch_size,
                max_rows=GENERATION_ROWS_PER_BATCH * self.batch_size,
                on_done=one_done,
            )
            return [result.text for result in results]

        responses = [""] * len(prompts)
        for share, texts in self._in_workers([share for share in shares if share], answer):
            for index, text in zip(share, texts, strict=True):
                responses[index] = text
        return responses

    def document_nll(
        self, documents: Sequence[str], *, max_length: int = 512, progress: ProgressFn = _noop
    ) -> list[tuple[float, int]]:
        """(sum of token NLL, tokens predicted) per document: every token, after the separator.

        Each document is tokenized without special tokens, and its first token is predicted from
        the document separator (BOS, or EOS for a tokenizer without BOS), the context CPT gives
        every document. Windows are lm-eval's `loglikelihood_rolling` ones (`rolling_windows`).
        """
        prefix = document_prefix_token(self.tokenizer)
        windows: list[tuple[int, list[int], list[int]]] = []
        for doc_index, text in enumerate(documents):
            tokens = self.encode(text, special_tokens=False)
            for inputs, targets in rolling_windows(tokens, prefix, max_length):
                windows.append((doc_index, inputs, targets))

        def window_nll(index: int) -> float:  # one window per call: full-vocab logits are large
            _, inputs, targets = windows[index]
            ids = torch.tensor([inputs], dtype=torch.long, device=self.device)
            logits = self.model(input_ids=ids, logits_to_keep=len(targets)).logits[0].float()
            wanted = torch.tensor(targets, dtype=torch.long, device=self.device)
            return float(torch.nn.functional.cross_entropy(logits, wanted, reduction="sum"))

        nll_of_window = [0.0] * len(windows)
        for index, nll in self._in_workers(range(len(windows)), window_nll):
            nll_of_window[index] = nll
            progress(1)
        totals = [[0.0, 0] for _ in documents]
        for (doc_index, _, targets), nll in zip(windows, nll_of_window, strict=True):  # fixed order
            totals[doc_index][0] += nll
            totals[doc_index][1] += len(targets)
        return [(float(total), int(count)) for total, count in totals]


def document_prefix_token(tokenizer: Any) -> int:
    """The token a document's first token is predicted from: BOS, else EOS.

    The cpt stage's document separator (BOS before each document, or EOS after each one, so that
    EOS precedes the next) and lm-eval's `prefix_token_id` follow the same rule.
    """
    for token_id in (tokenizer.bos_token_id, tokenizer.eos_token_id):
        if token_id is not None:
            return int(token_id)
    raise ValueError("the tokenizer has neither a BOS nor an EOS token to start a document with")


def rolling_windows(
    tokens: Sequence[int], prefix_token: int, max_length: int
) -> list[tuple[list[int], list[int]]]:
    """(model input, scored targets) windows that predict every token of `tokens` exactly once.

    lm-evaluation-harness's `loglikelihood_rolling`: `get_rolling_token_windows` with
    context_len=1, then `make_disjoint_window`. The first window predicts tokens[:L] from
    [prefix] + tokens[:L-1]; each later one predicts the next L tokens (or what is left), and its
    input is the L tokens before each target, so a short last window keeps a full context. The
    targets are the predictions of the input's last len(targets) positions.
    """
    if max_length < 1:
        raise ValueError(f"max_length must be at least 1, got {max_length}")
    tokens = list(tokens)
    if not tokens:
        return []
    first = min(max_length, len(tokens))
    windows = [([prefix_token, *tokens[: first - 1]], tokens[:first])]
    predicted = first
    while predicted < len(tokens):
        count = min(len(tokens) - predicted, max_length)
        end = predicted + count
        windows.append((tokens[end - max_length - 1 : end - 1], tokens[predicted:end]))
        predicted = end
    return windows
