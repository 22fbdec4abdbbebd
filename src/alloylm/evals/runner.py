"""Evaluate several models on several tasks with identical settings, caching finished results.

A finished (model content hash, task content hash, protocol, settings) result is stored under
$ALLOY_HOME/evals/<key>.json and returned again without loading the model. Models are loaded only
when at least one of their results is missing.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.contract import Progress
from alloylm.errors import ConfigError, DataError
from alloylm.evals import results as results_lib
from alloylm.evals.protocol import PromptSettings
from alloylm.evals.tasks import Item, task_type
from alloylm.hashing import hash_json, sha256_file

# Bump when prompts, extraction or scoring change, so that cached results are recomputed.
# 2: lm_eval predictions recorded as letters; 3: the article "a" is not option A;
# 4: perplexity scores every token after the document separator, in lm-eval's rolling windows;
# 5: chat prompts start with BOS whenever the tokenizer has one (data/chat_template.with_bos)
EVAL_VERSION = 5


@dataclass(frozen=True)
class TaskSpec:
    """One task: a file (or lm_eval:<task>) and how to read and score it."""

    name: str
    path: str | None = None
    type: str | None = (
        None  # mcq | true_false | numeric | perplexity | None (everything in the file)
    )
    protocols: tuple[str, ...] | None = None  # None: the run's protocols
    mapping: dict[str, Any] | None = None
    limit: int | None = None
    text_field: str = "text"  # perplexity: the JSONL field holding each document
    max_length: int = 512  # perplexity window, tokens
    include_path: str | None = None  # lm_eval:<task>: a folder of the user's lm-eval task YAMLs
    strict: bool = False  # a record the loader would skip is an error instead
    unit_chars: int | None = None  # perplexity: split documents into units of >= this many chars


def default_baseline(models: list[str], baseline: str | None) -> str | None:
    """The model relative improvements are measured against: the named one, else the first of several."""
    return baseline or (models[0] if len(models) > 1 else None)


@dataclass(frozen=True)
class EvalSettings:
    protocols: tuple[str, ...] = ("paper",)
    template: str = "chat"  # chat | plain (see protocol.py); recorded with every score
    batch_size: int = 8
    workers: int | str = "auto"  # parallel scoring threads (see scoring.py); never changes a score
    max_new_tokens: int = 16
    resamples: int = 1000
    seed: int = 0
    baseline: str | None = None
    dtype: str | None = None
    cache: bool = True

    def recorded(self, protocol: str) -> dict[str, Any]:
        """The settings that can change a score (batch size and workers cannot: not in the key)."""
        settings: dict[str, Any] = {
            "template": self.template,
            "resamples": self.resamples,
            "seed": self.seed,
        }
        if protocol == "extract":  # greedy JSON answers, evals/extract.py
            from alloylm.evals.extract import EXTRACT_MAX_NEW_TOKENS

            settings = {
                "template": "chat",
                "max_new_tokens": EXTRACT_MAX_NEW_TOKENS,
                "decoding": "greedy",
                "resamples": self.resamples,
                "seed": self.seed,
            }
        if protocol == "paper":
            settings = {
                "template": "chat",
                "max_new_tokens": self.max_new_tokens,
                "decoding": "greedy",
                "resamples": self.resamples,
                "seed": self.seed,
            }
        settings["dtype"] = self.dtype or "auto"
        return settings


@dataclass
class PreparedTask:
    spec: TaskSpec
    items: list[Item] = field(default_factory=list)
    documents: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    subject: str | None = None
    content_hash: str = ""
    extract: Any = None  # extract tasks: evals/extract.ExtractTaskData


def evals_cache_dir() -> Path:
    """$ALLOY_EVALS_DIR, else $ALLOY_HOME/evals."""
    if os.environ.get("ALLOY_EVALS_DIR"):
        return Path(os.environ["ALLOY_EVALS_DIR"])
    from alloylm.models.home import alloy_home

    return alloy_home() / "evals"


def model_content_hash(folder: Path) -> str:
    """sha256 over the model's own files (weights, config, tokenizer), not eval outputs beside them."""
    from alloylm.models.identity import model_files_hash

    return model_files_hash(folder, evals_cache_dir() / "model-hashes.json")


def prepare_task(spec: TaskSpec) -> PreparedTask:
    """Load and validate a task's file before any model work; zero scorable items is an error."""
    from alloylm.evals.loaders import load_documents, load_items

    prepared = PreparedTask(spec=spec)
    if spec.name.startswith("lm_eval:"):
        prepared.content_hash = hash_json(
            {"lm_eval": spec.name, "limit": spec.limit, "tasks": _task_yaml_hashes(spec)}
        )
        return prepared
    assert spec.path is not None
    file_hash = sha256_file(spec.path)
    identity = {
        "file": file_hash,
        "type": spec.type,
        "mapping": spec.mapping,
        "limit": spec.limit,
        "text_field": spec.text_field,
        "max_length": spec.max_length,
    }
    if spec.unit_chars:  # only when set, so that existing scores keep their cache keys
        identity["unit_chars"] = spec.unit_chars
    prepared.content_hash = hash_json(identity)
    if spec.type == "perplexity":
        prepared.documents = load_documents(
            spec.path, text_field=spec.text_field, limit=spec.limit, unit_chars=spec.unit_chars
        )
        return prepared
    if spec.type == "extract":
        from alloylm.evals.extract import load_extract

        prepared.extract = load_extract(spec.path, limit=spec.limit)
        return prepared
    report = load_items(spec.path, spec.mapping)
    if spec.strict and report.skipped:
        raise DataError(
            f"{len(report.skipped)} unusable records (strict: true); first: {report.skipped[0]}",
            file=spec.path,
            key="strict",
            hint="fix those records, or drop `strict: true` to skip them (they are counted in "
            "the results)",
        )
    items = task_type(spec.type).select(report.items)[: spec.limit]
    if not items:
        raise DataError(
            f"no scorable {spec.type or ''} items (skipped {len(report.skipped)}: {report.skipped[:3]})",
            file=spec.path,
            hint="check the file's layout, or give a column mapping (question/choices/answer)",
        )
    prepared.items, prepared.skipped, prepared.subject = items, report.skipped, report.subject
    return prepared


def _task_yaml_hashes(spec: TaskSpec) -> dict[str, str]:
    """Content of the user's lm-eval task folder: editing a task YAML recomputes its results."""
    if spec.include_path is None:
        return {}
    folder = Path(spec.include_path)
    if not folder.is_dir():
        raise DataError(
            "lm-eval include_path is not a folder",
            file=str(folder),
            hint="point include_path at the folder holding your lm-eval task YAMLs",
        )
    return {
        str(path.relative_to(folder)): sha256_file(path)
        for path in sorted(folder.rglob("*"))
        if path.is_file() and path.suffix in (".yaml", ".yml", ".py", ".jsonl", ".json", ".csv")
    }


def _cache_key(model_hash: str, task: PreparedTask, protocol: str, settings: EvalSettings) -> str:
    return hash_json(
        {
            "version": EVAL_VERSION,
            "model": model_hash,
            "task": task.content_hash,
            "protocol": protocol,
            "settings": settings.recorded(protocol),
        }
    )


def _read_cache(key: str) -> dict[str, Any] | None:
    path = evals_cache_dir() / f"{key}.json"
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None  # a damaged entry is recomputed


class _LazyScorer:
    """Loads the model the first time a result is not in the cache."""

    def __init__(self, folder: Path, settings: EvalSettings) -> None:
        self.folder, self.settings, self._scorer = folder, settings, None

    def get(self) -> Any:
        if self._scorer is None:
            from alloylm.evals.scoring import Scorer
            from alloylm.models.loading import load_causal_lm, load_tokenizer

            model = load_causal_lm(self.folder, dtype=self.settings.dtype)
            self._scorer = Scorer(
                model,
                load_tokenizer(self.folder),
                batch_size=self.settings.batch_size,
                workers=self.settings.workers,
            )
        return self._scorer


def evaluate(
    models: Sequence[str],
    tasks: Sequence[TaskSpec],
    settings: EvalSettings,
    *,
    resolve_model: Callable[[str], Path] | None = None,
    progress: Progress | None = None,
    log: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """Every model on every task under every protocol; returns result records (see results.py)."""
    if resolve_model is None:
        from alloylm.models.sources import resolve_model
    progress = progress or Progress()
    if settings.baseline is not None and settings.baseline not in models:
        raise ConfigError(
            f"baseline {settings.baseline!r} is not one of the evaluated models",
            key="baseline",
            hint=f"use one of: {', '.join(models)}",
        )
    prepared = [prepare_task(spec) for spec in tasks]  # bad task files fail before any model loads
    for task in prepared:
        if task.skipped:
            log(f"{task.spec.name}: skipped {len(task.skipped)} records; first: {task.skipped[0]}")
    records: list[dict[str, Any]] = []
    for source in models:
        folder = Path(resolve_model(source))
        model_hash = model_content_hash(folder)
        scorer = _LazyScorer(folder, settings)
        for task in prepared:
            for protocol in _protocols_for(task, settings):
                key = _cache_key(model_hash, task, protocol, settings)
                cached = _read_cache(key) if settings.cache else None
                if cached is not None:
                    records.append(
                        {**cached, "model": source, "model_path": str(folder), "cached": True}
                    )
                    continue
                record = _run_one(scorer, task, protocol, settings, progress, log)
                if record is None:
                    continue
                record.update(
                    model=source, model_path=str(folder), model_hash=model_hash, cache_key=key
                )
                atomic_write_json(evals_cache_dir() / f"{key}.json", record)
                records.append({**record, "cached": False})
    results_lib.add_baseline_comparisons(
        records, settings.baseline, resamples=settings.resamples, seed=settings.seed
    )
    return records


def _protocols_for(task: PreparedTask, settings: EvalSettings) -> tuple[str, ...]:
    if task.spec.type in ("perplexity", "extract"):
        return (task.spec.type,)
    if task.spec.name.startswith("lm_eval:"):
        return ("lm_eval",)
    return task.spec.protocols or settings.protocols


def _run_one(
    scorer: _LazyScorer,
    task: PreparedTask,
    protocol: str,
    settings: EvalSettings,
    progress: Progress,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    start = time.perf_counter()
    if protocol == "lm_eval":
        from alloylm.evals.lm_eval_adapter import run_lm_eval_task

        record = run_lm_eval_task(
            scorer.folder,
            task.spec.name.removeprefix("lm_eval:"),
            settings,
            limit=task.spec.limit,
            include_path=task.spec.include_path,
        )
    elif protocol == "perplexity":
        progress.start(None, f"{task.spec.name}: perplexity")
        step = _counter(progress)
        per_document = scorer.get().document_nll(
            task.documents, max_length=task.spec.max_length, progress=step
        )
        record = results_lib.perplexity_record(
            per_document, resamples=settings.resamples, seed=settings.seed
        )
        progress.finish()
    elif protocol == "extract":
        from alloylm.evals.extract import run_extract

        progress.start(len(task.extract.items), f"{task.spec.name}: extract")
        record = run_extract(
            scorer.get(),
            task.extract,
            resamples=settings.resamples,
            seed=settings.seed,
            progress=_counter(progress),
        )
        progress.finish()
    else:
        record = _run_protocol(scorer, task, protocol, settings, progress, log)
        if record is None:
            return None
    seconds = time.perf_counter() - start
    record.update(
        task=task.spec.name,
        task_file=task.spec.path,
        task_hash=task.content_hash,
        task_type=task.spec.type or "auto",
        protocol=protocol,
        settings=settings.recorded(protocol),
        skipped_records=len(task.skipped),
        seconds=round(seconds, 3),
        items_per_s=round(record["n"] / seconds, 3) if seconds > 0 else None,
    )
    return record


def _run_protocol(
    scorer: _LazyScorer,
    task: PreparedTask,
    protocol: str,
    settings: EvalSettings,
    progress: Progress,
    log: Callable[[str], None],
) -> dict[str, Any] | None:
    from alloylm.registry import EVAL_PROTOCOLS

    runner = EVAL_PROTOCOLS.get(protocol)()
    items = [item for item in task.items if runner.supports(item)]
    not_applicable = len(task.items) - len(items)
    if not items:
        log(f"{task.spec.name}: protocol {protocol!r} cannot score any of its items; skipped")
        return None
    prompt = PromptSettings(
        template=settings.template, subject=task.subject, max_new_tokens=settings.max_new_tokens
    )  # type: ignore[arg-type]
    progress.start(len(items), f"{task.spec.name}: {protocol}")
    predictions = runner.run(scorer.get(), items, prompt, _counter(progress))
    progress.finish()
    record = results_lib.accuracy_record(
        predictions, resamples=settings.resamples, seed=settings.seed
    )
    record["not_applicable"] = not_applicable
    record["prompt"] = asdict(prompt)
    return record


def _counter(progress: Progress) -> Callable[[int], None]:
    done = [0]

    def step(count: int) -> None:
        done[0] += count
        progress.update(done[0])

    return step
