"""Run a distillation: ingest, chunk, dedup, generate through the teacher (cached), build, decontaminate, write.

Every unit of work (generator x chunk, or structured x document) ends as `done` or `failed`
with a reason; nothing is silently lost. The token budget is checked before each new teacher
call: once spent, calls that are not cached fail with reason `budget`, and the run finishes
cleanly with what it has (rerun with a larger budget to continue: cached calls are free).
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json, atomic_write_text
from alloylm.distill import builders as builder_functions
from alloylm.distill.cache import CallCache, call_key
from alloylm.distill.config import DistillConfig, TeacherConfig
from alloylm.distill.corpus import cached_ingest
from alloylm.distill.decontam import Decontaminator
from alloylm.distill.generators import CHUNK_GENERATORS, GENERATOR_FUNCTIONS, ItemRejected, Record
from alloylm.distill.ingest import (
    Chunk,
    Document,
)
from alloylm.distill.prompts import PromptTemplate, load_template
from alloylm.distill.teachers import (
    Completion,
    TeacherError,
    call_with_retries,
)
from alloylm.hashing import hash_json


class BudgetExhausted(Exception):
    pass


@dataclass
class Tally:
    """Counters shared by worker threads."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    calls_made: int = 0
    cache_hits: int = 0
    retries: Counter = field(default_factory=Counter)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    units: dict[str, Counter] = field(default_factory=dict)  # generator -> {done, failed}
    rejects: Counter = field(default_factory=Counter)  # "generator:reason" -> n
    teacher_errors: dict[str, str] = field(default_factory=dict)  # reason -> first description

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def outcome(self, generator: str, status: str, reason: str | None = None) -> None:
        with self.lock:
            self.units.setdefault(generator, Counter())[status] += 1
            if reason:
                self.rejects[f"{generator}:{reason}"] += 1


def make_teacher(cfg: TeacherConfig, resolve_model: Any = None) -> Any:
    """The teacher named by `cfg.type`, looked up in the TEACHERS registry."""
    from alloylm.registry import TEACHERS

    teacher_class = TEACHERS.get(cfg.type)
    if cfg.type == "openai":
        return teacher_class(
            cfg.base_url or "",
            cfg.model,
            api_key_env=cfg.api_key_env,
            timeout_s=cfg.timeout_s,
            extra_body=cfg.extra_body,
        )
    if resolve_model is None:
        from alloylm.models.sources import resolve_model
    return teacher_class(cfg.model, resolve_model(cfg.model))


class TeacherClient:
    """Cache lookup, budget, retries and accounting around one teacher."""

    def __init__(
        self,
        teacher: Any,
        cfg: TeacherConfig,
        cache: CallCache,
        tally: Tally,
        budget: int | None,
        templates: dict[str, PromptTemplate],
        seed: int,
    ) -> None:
        self.teacher, self.cfg, self.cache, self.tally, self.budget = (
            teacher,
            cfg,
            cache,
            tally,
            budget,
        )
        self.templates, self.seed = templates, seed
        self.stop = threading.Event()  # set on interruption: in-flight units make no new call

    def ask(self, template_name: str, variables: dict[str, Any], attempt: int) -> str:
        template = self.templates[template_name]
        messages = template.render(**variables)
        # A retry after an unparsable answer must not replay the same greedy answer: sample instead.
        temperature = self.cfg.temperature if attempt == 0 else max(self.cfg.temperature, 0.7)
        settings = {
            "max_tokens": self.cfg.max_tokens,
            "temperature": temperature,
            "seed": self.seed + attempt,
            "attempt": attempt,
        }
        input_hash = hash_json({"messages": messages, **settings})
        key = call_key(self.teacher.identity, template.version, input_hash)
        cached = self.cache.get(key)
        if cached is not None:
            with self.tally.lock:
                self.tally.cache_hits += 1
            return cached[0]
        if self.stop.is_set():
            raise KeyboardInterrupt
        with self.tally.lock:
            if self.budget is not None and self.tally.tokens >= self.budget:
                raise BudgetExhausted()
            self.tally.calls_made += 1

        try:
            completion = self._call(messages, temperature, input_hash)
        except TeacherError as error:
            with self.tally.lock:
                self.tally.teacher_errors.setdefault(
                    error.reason, error.describe(self.teacher.identity)
                )
            raise
        self.cache.put(
            key,
            teacher=self.teacher.identity,
            template=template.version,
            input_hash=input_hash,
            response=completion.text,
            prompt_tokens=completion.prompt_tokens,
            completion_tokens=completion.completion_tokens,
        )
        with self.tally.lock:
            self.tally.prompt_tokens += completion.prompt_tokens
            self.tally.completion_tokens += completion.completion_tokens
        return completion.text

    def _call(
        self, messages: list[dict[str, str]], temperature: float, input_hash: str
    ) -> Completion:
        def on_retry(reason: str) -> None:
            with self.tally.lock:
                self.tally.retries[reason] += 1

        return call_with_retries(
            lambda: self.teacher.complete(
                messages,
                max_tokens=self.cfg.max_tokens,
                temperature=temperature,
                # One seed per call, derived from everything the cache key holds: a server that
                # honours seeds would otherwise draw the same random numbers for every prompt.
                seed=int(input_hash[:15], 16),
            ),
            max_retries=self.cfg.max_retries,
            base_s=self.cfg.backoff_s,
            max_s=self.cfg.max_backoff_s,
            on_retry=on_retry,
        )


def run_unit(
    generator: str, unit: Chunk | Document, client: TeacherClient, tally: Tally, cfg: DistillConfig
) -> list[Record]:
    """All attempts for one unit; returns its records, or [] after counting why it failed."""
    function = GENERATOR_FUNCTIONS[generator]
    extra = {"n_pairs": cfg.qa_pairs_per_chunk} if generator == "qa" else {}
    reason = "unknown"
    for attempt in range(cfg.parse_retries + 1):
        try:
            records = function(unit, client.ask, attempt, **extra)
            tally.outcome(generator, "done")
            return records
        except ItemRejected as error:
            reason = error.reason  # unparsable answer: try again with a new attempt
        except TeacherError as error:
            reason = f"teacher_{error.reason}"
            break
        except BudgetExhausted:
            reason = "budget"
            break
    tally.outcome(generator, "failed", reason)
    return []


def record_text(kind: str, record: dict[str, Any]) -> str:
    if kind == "text":
        return record["text"]
    if kind == "chat":
        return "\n".join(m["content"] for m in record["messages"])
    return "\n".join((record["prompt"], record["chosen"], record["rejected"]))


@dataclass
class DistillResult:
    outputs: dict[str, str]  # data kind -> file name
    stats: dict[str, Any]


def run_distill(
    cfg: DistillConfig,
    out_dir: Path,
    state_dir: Path,
    *,
    seed: int = 42,
    log: Any = print,
    progress: Any = None,
    resolve_model: Any = None,
    teacher: Any = None,
) -> DistillResult:
    """Do the whole distillation; write JSONL files and stats.json into `out_dir`."""
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    docs, chunks, removed = cached_ingest(cfg, state_dir, log)
    records: list[Record] = []
    if cfg.raw_text:
        records += [
            (
                "text",
                {"text": d.text, "source": {"generator": "raw", "doc": d.doc_id, "file": d.source}},
            )
            for d in docs
        ]
    tally = Tally()
    cache = CallCache(state_dir / "distill-cache.sqlite")
    run_id = cache.start_run()
    status = "complete"
    try:
        if cfg.generators:
            records += _generate(
                cfg, docs, chunks, cache, tally, seed, log, progress, resolve_model, teacher
            )
            if tally.rejects and any(k.endswith(":budget") for k in tally.rejects):
                status = "budget_exhausted"
        for builder in cfg.builders:
            built = builder_functions.run_builder(
                builder.kind, builder.path, seed=seed, limit=builder.limit
            )
            log(f"builder {builder.kind}: {len(built)} records from {Path(builder.path).name}")
            records += built
            tally.outcome(builder.kind, "done")
        records, dropped = _filter(records, cfg, log)
        outputs = _write(records, cfg, out_dir)
        stats = _stats(
            cfg,
            tally,
            records,
            removed,
            dropped,
            outputs,
            len(docs),
            len(chunks),
            time.monotonic() - started,
            status,
        )
        stats["cache"] = cache.totals()
        atomic_write_json(out_dir / "stats.json", stats)
    except BaseException:
        cache.finish_run(
            run_id, "interrupted", {"calls_made": tally.calls_made, "tokens": tally.tokens}
        )
        cache.close()
        raise
    cache.finish_run(run_id, status, stats)
    cache.close()
    return DistillResult(outputs, stats)


def _generate(
    cfg: DistillConfig,
    docs: list[Document],
    chunks: list[Chunk],
    cache: CallCache,
    tally: Tally,
    seed: int,
    log: Any,
    progress: Any,
    resolve_model: Any,
    teacher: Any,
) -> list[Record]:
    assert cfg.teacher is not None
    names = {
        "qa": ["qa"],
        "summary": ["summary"],
        "structured": ["structured"],
        "preference": ["preference_question", "preference_rejected"],
    }
    templates = {t: load_template(t, cfg.prompts_dir) for g in cfg.generators for t in names[g]}
    teacher = teacher or make_teacher(cfg.teacher, resolve_model)
    client = TeacherClient(teacher, cfg.teacher, cache, tally, cfg.token_budget, templates, seed)
    units: list[tuple[str, Chunk | Document]] = [
        (g, c) for g in cfg.generators if g in CHUNK_GENERATORS for c in chunks
    ]
    units += [("structured", d) for d in docs if "structured" in cfg.generators]
    if progress:
        progress.start(len(units), "distill")
    results: list[list[Record]] = [[] for _ in units]
    finished = 0
    with ThreadPoolExecutor(max_workers=cfg.teacher.concurrency) as pool:
        futures = {
            pool.submit(run_unit, g, u, client, tally, cfg): i for i, (g, u) in enumerate(units)
        }
        for future in futures:  # in submission order: outputs are deterministic whatever the timing
            results[futures[future]] = future.result()
            finished += 1
            if progress:
                progress.update(finished, tokens=tally.tokens, calls=tally.calls_made)
    if progress:
        progress.finish()
    log(f"teacher: {tally.calls_made} calls, {tally.cache_hits} cached, {tally.tokens} tokens")
    check_teacher_answered(tally, cache, log)
    return [r for unit_records in results for r in unit_records]


def check_teacher_answered(tally: Tally, cache: CallCache, log: Any) -> None:
    """Every call failed for a teacher reason: stop with what went wrong, naming the teacher.
    Some calls failed: say so in the log. The answers already cached are never dropped."""
    if not tally.teacher_errors:
        return
    if tally.cache_hits > 0 or tally.tokens > 0:  # it answered some: the failures are counted
        for description in tally.teacher_errors.values():
            log(f"warning: some calls failed; first of its kind: {description}")
        return
    from alloylm.distill.teachers import TeacherUnavailable

    reasons = "; ".join(tally.teacher_errors.values())
    raise TeacherUnavailable(
        f"no teacher call succeeded ({tally.calls_made} tried): {reasons}",
        key="teacher",
        hint="fix teacher.base_url / teacher.model, or start the server, then rerun: answers "
        f"already in the cache ({cache.path}) are kept and not asked again",
    )


def _filter(
    records: list[Record], cfg: DistillConfig, log: Any
) -> tuple[list[Record], dict[str, int]]:
    """Drop exact duplicates and benchmark-contaminated items; count both.

    Raw documents (long CPT text) lose only their contaminated lines, not the whole section.
    """
    dropped = {"duplicate": 0, "contaminated": 0, "contaminated_lines": 0}
    decontaminator = (
        Decontaminator(cfg.decontaminate.files, cfg.decontaminate.ngram)
        if cfg.decontaminate.files
        else None
    )
    seen: set[str] = set()
    kept: list[Record] = []
    for kind, record in records:
        text = record_text(kind, record)
        fingerprint = hash_json([kind, text])
        if fingerprint in seen:
            dropped["duplicate"] += 1
            continue
        seen.add(fingerprint)
        if decontaminator and record.get("source", {}).get("generator") == "raw":
            clean, removed = decontaminator.clean_lines(text)
            dropped["contaminated_lines"] += removed
            record = {**record, "text": clean} if removed else record
        elif decontaminator and decontaminator.is_contaminated(text):
            dropped["contaminated"] += 1
            continue
        kept.append((kind, record))
    if decontaminator:
        log(
            f"decontamination: dropped {dropped['contaminated']} items and "
            f"{dropped['contaminated_lines']} lines of raw text overlapping "
            f"{len(cfg.decontaminate.files)} benchmark file(s)"
        )
    return kept, dropped


def _write(records: list[Record], cfg: DistillConfig, out_dir: Path) -> dict[str, str]:
    names = cfg.outputs.model_dump()
    outputs: dict[str, str] = {}
    for kind in ("text", "chat", "preference"):
        lines = [json.dumps(r, ensure_ascii=False) for k, r in records if k == kind]
        if lines:
            atomic_write_text(out_dir / names[kind], "\n".join(lines) + "\n")
            outputs[kind] = names[kind]
    return outputs


def _stats(
    cfg: DistillConfig,
    tally: Tally,
    records: list[Record],
    removed: dict[str, int],
    dropped: dict[str, int],
    outputs: dict[str, str],
    n_docs: int,
    n_chunks: int,
    seconds: float,
    status: str,
) -> dict[str, Any]:
    per_kind = Counter(kind for kind, _ in records)
    per_generator = Counter(
        r.get("source", {}).get("generator") or r.get("source", {}).get("builder")
        for _, r in records
    )
    rejects: Counter = Counter(tally.rejects)
    for reason, count in dropped.items():
        if count:
            rejects[f"filter:{reason}"] = count
    return {
        "status": status,
        "documents": n_docs,
        "chunks": n_chunks,
        "ingest_removed": removed,
        "units": {g: dict(c) for g, c in tally.units.items()},
        "records_per_generator": dict(per_generator),
        "records_per_kind": dict(per_kind),
        "rejects": dict(rejects),
        "retries": dict(tally.retries),
        "teacher": {
            "calls_made": tally.calls_made,
            "cache_hits": tally.cache_hits,
            "prompt_tokens": tally.prompt_tokens,
            "completion_tokens": tally.completion_tokens,
            "identity": None if cfg.teacher is None else f"{cfg.teacher.type}:{cfg.teacher.model}",
        },
        "outputs": outputs,
        "seconds": round(seconds, 3),
    }
