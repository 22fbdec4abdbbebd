"""The generation loop: one sequence in flight, the step-level decode batch (continuous batching)
and `ModelGenerator`, the thread that serves requests from it (see `alloylm.generation`)."""

from __future__ import annotations

import atexit
import queue
import random
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from alloylm.data.chat_template import format_prompt
from alloylm.generation.growing_cache import grow_in_place, growing_layer_class, stacked
from alloylm.generation.sampling import (
    JsonObjectScanner,
    Message,
    SamplingParams,
    choose_token,
    find_stop,
    partial_stop_length,
    stop_token_ids,
)


# ---------------------------------------------------------------- one sequence in flight
@dataclass
class TokenLogprob:
    token: str
    logprob: float
    top: list[tuple[str, float]]

    def as_openai(self) -> dict[str, Any]:
        def entry(token: str, logprob: float) -> dict[str, Any]:
            return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

        return {**entry(self.token, self.logprob), "top_logprobs": [entry(*t) for t in self.top]}


@dataclass
class Generation:
    """A finished sequence. `finish_reason`: 'stop' (EOS, stop string, JSON object closed),
    'length' (max_new_tokens or the context), 'cancelled', or 'error'."""

    text: str
    token_ids: list[int]
    prompt_tokens: int
    finish_reason: str
    logprobs: list[TokenLogprob] | None = None
    error: BaseException | None = None

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)

    def as_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "finish_reason": self.finish_reason,
        }


# Events a sequence hands to its listener: ('delta', text, [TokenLogprob]) and ('done', Generation).
Event = tuple[Any, ...]
Listener = Callable[[Event], None]


def left_padded(rows: Sequence[Sequence[int]], pad_id: int, device: Any = "cpu") -> tuple[Any, Any]:
    """(ids, attention mask) of token rows padded on the left to the longest: the last position of
    every row is its last real token, which is where generation and scoring read the logits."""
    import torch

    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, width - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[index, width - len(row) :] = 1
    return ids.to(device), mask.to(device)


def after_shared_prefix(
    rows: Sequence[Sequence[int]], shared: int, pad_id: int
) -> tuple[Any, Any, Any, Any]:
    """What follows `shared` tokens every row starts with, for a forward call on their cache:
    (ids: the rest of each row, right-padded; mask over cache + ids; keep: the positions some
    row ends at, for `logits_to_keep`; picks: each row's index into `keep`)."""
    import torch

    suffixes = [list(row[shared:]) for row in rows]
    width = max(len(suffix) for suffix in suffixes)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), shared + width), dtype=torch.long)
    mask[:, :shared] = 1
    for index, suffix in enumerate(suffixes):  # right padding: positions follow the cache
        ids[index, : len(suffix)] = torch.tensor(suffix, dtype=torch.long)
        mask[index, shared : shared + len(suffix)] = 1
    last = [len(suffix) - 1 for suffix in suffixes]
    keep = sorted(set(last))  # project only the positions some row ends at
    picks = [keep.index(position) for position in last]
    return ids, mask, torch.tensor(keep), torch.tensor(picks)


class _Sequence:
    def __init__(
        self,
        prompt: Sequence[int],
        params: SamplingParams,
        listener: Listener,
        *,
        tokenizer: Any,
        stop_ids: frozenset[int],
        context_length: int | None,
    ) -> None:
        import torch

        self.prompt = list(prompt)
        self.params = params
        self.listener = listener
        self.tokenizer = tokenizer
        self.stop_ids = stop_ids
        self.context_length = context_length
        self.tokens: list[int] = []
        self.generator = None
        if not params.greedy:
            self.generator = torch.Generator()
            seed = params.seed if params.seed is not None else random.SystemRandom().getrandbits(63)
            self.generator.manual_seed(int(seed))
        self.text = ""  # decoded text of `tokens` up to the last whole character
        self.emitted = 0  # characters already handed out as deltas
        self.final_length: int | None = None  # text is cut here (stop string, JSON end)
        self.finish_reason: str | None = None
        self.cancelled = False
        self.logprobs: list[TokenLogprob] = []
        self._pending_logprobs: list[TokenLogprob] = []
        self._token_ends: list[int] = []  # len(text) after each token, for logprob cuts
        self.json = JsonObjectScanner() if params.json_object else None

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def all_ids(self) -> list[int]:
        return self.prompt + self.tokens

    def choose(self, logits: Any, json_banned: Any) -> int:
        banned = None
        if self.json is not None and self.json.end is None:
            banned = json_banned(self.json.started, self.stop_ids)
        return choose_token(logits, self.params, self.all_ids(), self.generator, banned)

    def advance(self, token: int, logprob: TokenLogprob | None) -> None:
        """Take one sampled token: stop rule, detokenize, stop strings, JSON end, max length."""
        if token in self.stop_ids:  # (banned in JSON mode until the object closes)
            return self._finish("stop")
        self.tokens.append(token)
        decoded = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        if not decoded.endswith("\ufffd"):  # an incomplete UTF-8 character waits for its bytes
            previous = len(self.text)
            self.text = decoded
            if self.json is not None:
                self.json.feed(decoded[previous:])
        self._token_ends.append(len(self.text))
        if logprob is not None:
            self._pending_logprobs.append(logprob)
            self.logprobs.append(logprob)
        if self.params.stop:
            window = max(0, self.emitted - max(len(s) for s in self.params.stop))
            cut = find_stop(self.text, self.params.stop, window)
            if cut is not None:
                self.final_length = cut
                return self._finish("stop")
        if self.json is not None and self.json.end is not None:
            self.final_length = self.json.end
            return self._finish("stop")
        if self.json is not None and self.json.bad_start:  # the server reports it as invalid
            return self._finish("stop")
        if len(self.tokens) >= self.params.max_new_tokens or (
            self.context_length is not None and len(self.all_ids()) >= self.context_length
        ):
            return self._finish("length")
        held = partial_stop_length(self.text, self.params.stop) if self.params.stop else 0
        self._emit(len(self.text) - held)

    def _emit(self, upto: int, *, final: bool = False) -> None:
        """Hand out text[emitted:upto] with the logprobs of the tokens since the last delta
        (held-back tokens keep theirs until their text goes out, or is cut at the end)."""
        if upto > self.emitted or (final and self._pending_logprobs):
            delta = self.text[self.emitted : max(upto, self.emitted)]
            self.emitted = max(upto, self.emitted)
            entries, self._pending_logprobs = self._pending_logprobs, []
            self.listener(("delta", delta, entries))

    def _finish(self, reason: str) -> None:
        if reason != "cancelled" and self.final_length is None:
            # The end of the sequence: decode everything, even a dangling partial character.
            self.text = self.tokenizer.decode(self.tokens, skip_special_tokens=True)
        end = len(self.text) if self.final_length is None else self.final_length
        self.text = self.text[:end]
        if self.params.logprobs:  # only the tokens whose text starts inside the reply
            starts = [0, *self._token_ends[:-1]]
            kept = sum(1 for start in starts if start < end)
            dropped = len(self._token_ends) - kept
            self.logprobs = self.logprobs[:kept]
            self._pending_logprobs = self._pending_logprobs[
                : max(0, len(self._pending_logprobs) - dropped)
            ]
        self.finish_reason = reason
        if reason != "cancelled":
            self._emit(end, final=True)
        self.listener(("done", self.result()))

    def cancel_now(self) -> None:
        self.finish_reason = "cancelled"
        self.listener(("done", self.result()))

    def fail(self, error: BaseException) -> None:
        self.finish_reason = "error"
        self.listener(("done", replace(self.result(), error=error)))

    def result(self) -> Generation:
        return Generation(
            text=self.text[: self.emitted] if self.finish_reason == "cancelled" else self.text,
            token_ids=list(self.tokens),
            prompt_tokens=len(self.prompt),
            finish_reason=self.finish_reason or "error",
            logprobs=list(self.logprobs) if self.params.logprobs else None,
        )


# ---------------------------------------------------------------- the batch, step by step
# Below this many shared tokens a second forward call costs more than it saves.
MIN_SHARED_PREFIX = 8
# A decode batch keeps the keys and values of its last shared prefix up to this many tokens.
MAX_KEPT_PREFIX = 4096


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """Number of leading tokens all rows share."""
    length = 0
    for column in zip(*rows, strict=False):
        if any(token != column[0] for token in column):
            break
        length += 1
    return length


def cache_of(output: Any) -> Any:
    """The KV cache of a forward call's output (transformers >= 5.2x: `cache`)."""
    return output["cache"] if "cache" in output else output["past_key_values"]


def _is_plain(cache: Any) -> bool:
    """True when every cache layer is a plain DynamicLayer, or our GrowingLayer (keys, values:
    B x H x T x D)."""
    from transformers.cache_utils import DynamicLayer

    plain = (DynamicLayer, growing_layer_class())
    layers = getattr(cache, "layers", None)
    return bool(layers) and all(type(layer) in plain for layer in layers)


class DecodeBatch:
    """Sequences decoded together, one token per step; sequences leave and join between steps."""

    def __init__(self, model: Any, tokenizer: Any, pad_id: int) -> None:
        import inspect

        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.pad_id = pad_id
        self.device = next(model.parameters()).device
        self.rows: list[_Sequence] = []
        self.cache: Any = None
        self.mask: Any = None
        parameters = inspect.signature(model.forward).parameters
        # transformers >= 5.2x calls the KV cache `cache`; earlier releases `past_key_values`.
        self._cache_kwarg = "cache" if "cache" in parameters else "past_key_values"
        self._json_masks: dict[tuple[bool, frozenset[int]], Any] = {}
        # the last shared prefix's tokens and per-layer (keys, values), batch 1
        self._kept_prefix: tuple[tuple[int, ...], list[tuple[Any, Any]]] | None = None

    def step(self, joining: Sequence[_Sequence] = ()) -> None:
        """One token for every row (joining rows first run their prompts); finished rows leave."""
        torch = self.torch
        if joining and self.rows and self._plain_cache():
            # Old rows take their step, the joining rows run their prompts, the caches merge.
            old_logits = self._decode()
            new_logits, cache, mask = self._prefill(joining)
            self._merge(cache, mask)
            self.rows.extend(joining)
            logits = torch.cat([old_logits, new_logits], 0)
        elif joining:  # an empty batch, or a cache we cannot merge: every prompt runs again
            self.rows.extend(joining)
            logits, self.cache, self.mask = self._prefill(self.rows)
        elif self.rows:
            logits = self._decode()
        else:
            return
        grow_in_place(self.cache)  # later steps append into spare room (growing_cache.py)
        want_logprobs = any(row.params.logprobs for row in self.rows)
        logprobs = torch.log_softmax(logits.float(), dim=-1) if want_logprobs else None
        for index, row in enumerate(self.rows):
            if row.cancelled:  # the caller went away: the row leaves without a token
                row.cancel_now()
                continue
            token = row.choose(logits[index], self._json_banned)
            entry = (
                self._logprob_entry(logprobs[index], token, row) if row.params.logprobs else None
            )
            row.advance(token, entry)
        keep = [index for index, row in enumerate(self.rows) if not row.finished]
        if len(keep) < len(self.rows):
            self.rows = [self.rows[index] for index in keep]
            if not keep:
                self.cache = self.mask = None
            else:
                chosen = torch.tensor(keep, dtype=torch.long, device=self.device)
                self.cache.batch_select_indices(chosen)
                self.mask = self.mask[chosen]
                self._trim_padding()

    def _plain_cache(self) -> bool:
        return _is_plain(self.cache)

    def _merge(self, cache: Any, mask: Any) -> None:
        """Append another batch's cache, both left-padded to the same width. Keys are cached
        after the rotary embedding and positions are explicit, so only the mask sees the shift."""
        torch = self.torch
        width = max(self.mask.shape[1], mask.shape[1])

        def left_pad(tensor: Any, dim: int) -> Any:
            missing = width - tensor.shape[dim]
            if missing == 0:
                return tensor
            shape = list(tensor.shape)
            shape[dim] = missing
            return torch.cat([tensor.new_zeros(shape), tensor], dim)

        for mine, theirs in zip(self.cache.layers, cache.layers, strict=True):
            # into a buffer with room for the next steps' keys and values (growing_cache.py)
            mine.keys, mine.key_room = stacked([mine.keys, theirs.keys], width)
            mine.values, mine.value_room = stacked([mine.values, theirs.values], width)
        self.mask = torch.cat([left_pad(self.mask, 1), left_pad(mask, 1)], 0)

    def _trim_padding(self) -> None:
        """Drop the leading columns no remaining row attends to (left by a long row that left)."""
        if not self._plain_cache():
            return
        used = self.mask.any(0).nonzero()
        start = int(used[0]) if len(used) else 0
        if start == 0:
            return
        for layer in self.cache.layers:
            layer.keys = layer.keys[:, :, start:]
            layer.values = layer.values[:, :, start:]
        self.mask = self.mask[:, start:]

    def _prefill(self, rows: Sequence[_Sequence]) -> tuple[Any, Any, Any]:
        """Logits after each row's tokens, the KV cache and the mask (left padding)."""
        torch = self.torch
        all_ids = [row.all_ids() for row in rows]
        shared = min(common_prefix_length(all_ids), min(len(ids) for ids in all_ids) - 1)
        if len(rows) > 1 and shared >= MIN_SHARED_PREFIX:
            found = self._prefill_shared_prefix(all_ids, shared)
            if found is not None:
                return found
        ids, mask = left_padded(all_ids, self.pad_id, self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
            )
        cache = cache_of(out)
        return out.logits[:, -1, :], cache, mask

    def _prefill_shared_prefix(
        self, all_ids: Sequence[Sequence[int]], shared: int
    ) -> tuple[Any, Any, Any] | None:
        """As _prefill, but the tokens every row starts with (system prompt, instruction) run once.

        The suffixes are right-padded after the shared columns: positions follow the cache and
        the mask hides the padding, so later steps append to every row alike. None when the
        model's cache is not plain (the caller then prefills every row whole)."""
        torch = self.torch
        found = self._prefix_cache(all_ids[0], shared)
        if found is None:
            return None
        shared, cache = found
        cache.batch_repeat_interleave(len(all_ids))
        ids, mask, keep, picks = after_shared_prefix(all_ids, shared, self.pad_id)
        positions = torch.arange(shared, shared + ids.shape[1]).expand(len(all_ids), -1)
        with torch.inference_mode():
            out = self.model(
                input_ids=ids.to(self.device),
                attention_mask=mask.to(self.device),
                position_ids=positions.to(self.device),
                use_cache=True,
                logits_to_keep=keep.to(self.device),
                **{self._cache_kwarg: cache},
            )
        rows = torch.arange(len(all_ids), device=self.device)
        logits = out.logits[rows, picks.to(self.device)]
        cache = cache_of(out)
        return logits, cache, mask.to(self.device)

    def _prefix_cache(self, ids: Sequence[int], shared: int) -> tuple[int, Any] | None:
        """(length, batch-1 cache) of a prefix of ids[:shared]: the keys and values kept from an
        earlier prefill when they cover a prefix of it (the same system prompt and instruction
        come back with every batch), else ids[:shared] run now and kept. None when the model's
        cache is not plain."""
        torch = self.torch
        kept = self._kept_prefix
        if kept is not None and len(kept[0]) <= shared and tuple(ids[: len(kept[0])]) == kept[0]:
            from transformers.cache_utils import DynamicCache

            cache = DynamicCache()
            for index, (keys, values) in enumerate(kept[1]):
                cache.update(keys, values, index)
            return len(kept[0]), cache
        prefix = torch.tensor([list(ids[:shared])], dtype=torch.long, device=self.device)
        with torch.inference_mode():
            first = self.model(input_ids=prefix, use_cache=True, logits_to_keep=1)
        cache = cache_of(first)
        if not _is_plain(cache):
            return None
        if shared <= MAX_KEPT_PREFIX:
            layers = [(layer.keys.clone(), layer.values.clone()) for layer in cache.layers]
            self._kept_prefix = (tuple(ids[:shared]), layers)
        return shared, cache

    def _decode(self) -> Any:
        torch = self.torch
        last = torch.tensor([[row.tokens[-1]] for row in self.rows], device=self.device)
        positions = self.mask.sum(-1, keepdim=True)
        self.mask = torch.cat(
            [self.mask, torch.ones((len(self.rows), 1), dtype=torch.long, device=self.device)], -1
        )
        with torch.inference_mode():
            out = self.model(
                input_ids=last,
                attention_mask=self.mask,
                position_ids=positions,
                use_cache=True,
                logits_to_keep=1,
                **{self._cache_kwarg: self.cache},
            )
        self.cache = cache_of(out)
        return out.logits[:, -1, :]

    def _logprob_entry(self, logprobs: Any, token: int, row: _Sequence) -> TokenLogprob:
        decode = self.tokenizer.decode
        top: list[tuple[str, float]] = []
        if row.params.top_logprobs:
            values, ids = self.torch.topk(logprobs, row.params.top_logprobs)
            top = [(decode([int(i)]), float(v)) for v, i in zip(values, ids, strict=True)]
        return TokenLogprob(decode([token]), float(logprobs[token]), top)

    def _json_banned(self, started: bool, stop_ids: frozenset[int]) -> Any:
        """Tokens banned in JSON-object mode: before the '{', every token that is not blank and
        does not start (after blanks) with '{'; until the object closes, the EOS tokens."""
        key = (started, stop_ids)
        if key not in self._json_masks:
            torch = self.torch
            vocab = self.model.get_output_embeddings().weight.shape[0]
            banned = torch.full((vocab,), not started, dtype=torch.bool, device=self.device)
            if not started:
                size = min(vocab, len(self.tokenizer))
                pieces = self.tokenizer.batch_decode([[i] for i in range(size)])
                allowed = [i for i, piece in enumerate(pieces) if piece.lstrip().startswith("{")]
                banned[torch.tensor(allowed, dtype=torch.long)] = False
            for index in stop_ids:
                if index < vocab:
                    banned[index] = True
            self._json_masks[key] = banned
        return self._json_masks[key]


def context_length_of(model: Any) -> int | None:
    """Positions the model was built for (max_position_embeddings), when its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return int(value) if value else None


def generate_batch(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[Sequence[int]],
    params: SamplingParams,
    *,
    pad_id: int | None = None,
    join_size: int | None = None,
    max_rows: int | None = None,
    on_done: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Generate for token-id prompts in this thread (used by the evals).

    Prompts join the decode batch `join_size` at a time (default: all at once) whenever at most
    `max_rows` sequences are then in flight, so a finished sequence's place is taken by the next
    prompts while the others go on (continuous batching). `on_done(index)` follows each prompt's
    end. Results come back in the prompts' order."""
    stop_ids = stop_token_ids(model, tokenizer)
    if pad_id is None:
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stop_ids)
    results: list[Generation | None] = [None] * len(prompts)

    def listener_for(index: int) -> Listener:
        def listen(event: Event) -> None:
            if event[0] == "done":
                results[index] = event[1]
                if on_done is not None:
                    on_done(index)

        return listen

    batch = DecodeBatch(model, tokenizer, int(pad_id))
    context = context_length_of(model)
    waiting = deque(
        _Sequence(
            p,
            params,
            listener_for(i),
            tokenizer=tokenizer,
            stop_ids=stop_ids,
            context_length=context,
        )
        for i, p in enumerate(prompts)
    )
    join = max(1, join_size or len(waiting))
    limit = max(join, max_rows or len(waiting))
    while waiting or batch.rows:
        size = min(join, len(waiting))
        joining = []
        if size and len(batch.rows) + size <= limit:
            joining = [waiting.popleft() for _ in range(size)]
        batch.step(joining)
    return [result for result in results if result is not None]


# ---------------------------------------------------------------- the shared, threaded generator
class QueueFull(Exception):
    """More requests are waiting than the generator accepts; retry later."""


class Handle:
    """One submitted sequence: iterate `events()`, or `wait()` for the Generation."""

    def __init__(
        self, index: int = 0, on_event: Callable[[int, Event], None] | None = None
    ) -> None:
        self._events: queue.Queue[Event] = queue.Queue()
        self.index = index
        self._on_event = on_event
        self.sequence: _Sequence | None = None
        self.result: Generation | None = None

    def _listen(self, event: Event) -> None:
        if event[0] == "done":
            self.result = event[1]
        self._events.put(event)
        if self._on_event is not None:
            self._on_event(self.index, event)

    def events(self) -> Iterator[Event]:
        while True:
            event = self._events.get()
            yield event
            if event[0] == "done":
                return

    def wait(self) -> Generation:
        for _ in self.events():
            pass
        assert self.result is not None
        return self.result

    def cancel(self) -> None:
        if self.sequence is not None:
            self.sequence.cancelled = True


class ModelGenerator:
    """A model folder (or a loaded model and tokenizer) generating for many threads at once.

    A scheduler thread runs a `DecodeBatch` of at most `max_batch` sequences; at most `max_queue`
    more may wait (then `QueueFull`). Use `generate` (a dict, for the teachers), `complete` (a
    Generation), `stream` (text deltas) or `submit` (a Handle with events).
    """

    def __init__(
        self,
        folder: str | Path | None = None,
        *,
        model: Any = None,
        tokenizer: Any = None,
        max_batch: int = 8,
        max_queue: int = 64,
        dtype: str | None = None,
        threads: int | None = None,
    ) -> None:
        import torch

        if threads:
            # On a shared CPU, fewer intra-op threads can be several times faster (no spin-waiting).
            torch.set_num_threads(threads)
        if model is None or tokenizer is None:
            from alloylm.models.loading import load_causal_lm, load_tokenizer

            if folder is None:
                raise ValueError("give a model folder, or a model and its tokenizer")
            tokenizer = tokenizer or load_tokenizer(folder)
            model = model or load_causal_lm(folder, dtype=dtype)
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.stop_ids = stop_token_ids(self.model, tokenizer)
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(self.stop_ids)
        self.context_length = context_length_of(self.model)
        self.max_batch = max(1, max_batch)
        self.max_queue = max(0, max_queue)
        self._batch = DecodeBatch(self.model, tokenizer, int(pad))
        self._waiting: deque[_Sequence] = deque()
        self._lock = threading.Condition()
        self._closed = False
        self._worker = threading.Thread(target=self._loop, daemon=True, name="alloy-generate")
        self._worker.start()
        _LIVE.add(self)

    def close(self) -> None:
        """Stop the scheduler thread (waiting and running sequences end as 'cancelled')."""
        with self._lock:
            self._closed = True
            self._lock.notify()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(timeout=30)

    # -- prompts
    def encode_chat(self, messages: Sequence[Message]) -> list[int]:
        """Prompt token ids for a conversation (the generation prompt appended)."""
        text = format_prompt(self.tokenizer, messages)
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    # -- submitting
    def submit_many(
        self,
        prompt: Sequence[int],
        params: Sequence[SamplingParams],
        on_event: Callable[[int, Event], None] | None = None,
    ) -> list[Handle]:
        """Queue one sequence per params (all or none: `QueueFull` when they do not fit).

        `on_event(index, event)`, when given, also receives every sequence's events in order,
        from the scheduler thread (one queue for a streamed reply with n > 1 choices).
        """
        handles = [Handle(index, on_event) for index in range(len(params))]
        sequences = [
            _Sequence(
                prompt,
                p,
                handle._listen,
                tokenizer=self.tokenizer,
                stop_ids=self.stop_ids,
                context_length=self.context_length,
            )
            for p, handle in zip(params, handles, strict=True)
        ]
        with self._lock:
            if self._closed:
                raise RuntimeError("this ModelGenerator is closed")
            if len(self._waiting) + len(sequences) > self.max_queue + self._free_slots():
                raise QueueFull(f"{len(self._waiting)} requests are already waiting")
            for handle, sequence in zip(handles, sequences, strict=True):
                handle.sequence = sequence
                self._waiting.append(sequence)
            self._lock.notify()
        return handles

    def submit(self, prompt: Sequence[int], params: SamplingParams) -> Handle:
        return self.submit_many(prompt, [params])[0]

    def _free_slots(self) -> int:
        return max(0, self.max_batch - len(self._batch.rows))

    def complete(self, messages: Sequence[Message], params: SamplingParams) -> Generation:
        result = self.submit(self.encode_chat(messages), params).wait()
        if result.error is not None:
            raise result.error
        return result

    def stream(self, messages: Sequence[Message], params: SamplingParams) -> Iterator[str]:
        """Text deltas as the tokens are generated; they concatenate to the final text."""
        handle = self.submit(self.encode_chat(messages), params)
        try:
            for event in handle.events():
                if event[0] == "delta" and event[1]:
                    yield event[1]
                elif event[0] == "done" and event[1].error is not None:
                    raise event[1].error
        finally:
            handle.cancel()

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int = 256,
        temperature: float = 0.0,
        top_p: float = 1.0,
        seed: int | None = None,
        **more: Any,
    ) -> dict[str, Any]:
        """{'text', 'prompt_tokens', 'completion_tokens', 'finish_reason'} for one conversation."""
        params = SamplingParams(
            max_new_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed, **more
        )
        return self.complete(messages, params).as_dict()

    # -- the scheduler
    def _loop(self) -> None:
        while True:
            with self._lock:
                while not self._waiting and not self._batch.rows and not self._closed:
                    self._lock.wait()
                if self._closed:
                    for sequence in [*self._waiting, *self._batch.rows]:
                        sequence.cancel_now()
                    self._waiting.clear()
                    self._batch.rows = []
                    return
                fresh = not self._batch.rows
            if fresh:
                time.sleep(0.005)  # requests sent together start together (one prefill)
            with self._lock:
                joining = []
                while self._waiting and len(joining) < self._free_slots():
                    sequence = self._waiting.popleft()
                    if sequence.cancelled:
                        sequence.cancel_now()
                    else:
                        joining.append(sequence)
            try:
                self._batch.step(joining)
            except BaseException as error:  # noqa: BLE001 - handed to every waiting caller
                for row in {id(r): r for r in [*self._batch.rows, *joining]}.values():
                    if not row.finished:
                        row.fail(error)
                self._batch.rows, self._batch.cache, self._batch.mask = [], None, None


_LIVE: weakref.WeakSet[ModelGenerator] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    # A scheduler thread still alive at interpreter exit makes torch abort ("terminate called").
    for generator in list(_LIVE):
        generator.close()
