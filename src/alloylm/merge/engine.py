"""Run a merge: check the parents, stream every tensor once, write one or more output models.

Each parent tensor is read once (safetensors, one tensor at a time) and merged for every output
(one output, or all variants of a sweep), then appended to that output's shards. Peak memory is
the input tensors of one step plus the interpreter, not the sum of the parents.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alloylm.contract import Progress
from alloylm.errors import ConfigError
from alloylm.merge.apply import (
    TensorContext,
    apply_method,
    apply_method_in_row_blocks,
    merges_in_row_blocks,
)
from alloylm.merge.checks import (
    check_parents,
    check_tensors,
    interpolation_warnings,
    num_layers,
    read_config,
)
from alloylm.merge.config import MergeSettings, parse_size
from alloylm.merge.jobs import TensorJob, build_jobs, output_layers
from alloylm.merge.methods.spec import merge_method
from alloylm.merge.tensors import (
    DTYPE_NAMES,
    ModelTensors,
    StreamingModelWriter,
    torch_dtype,
)

TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
# More merging threads than this gain nothing on a memory-bound job and hold more tensors.
MAX_WORKERS = 4
# A tensor this large (a 135M model's 49k x 576 embedding has 28M elements) is merged with no
# other in flight: its working copies dominate peak memory. Where the method allows it
# (`MergeMethod.row_blocks`) it is merged a block of rows at a time: the parents stay in their
# stored dtype and each block is widened to float32 while it is in cache. Smaller tensors are
# widened once and merged whole, so that a sweep's variants share the widened copies.
BIG_TENSOR_ELEMENTS = 8_000_000
TORCH_TO_CONFIG = {
    torch.bfloat16: "bfloat16",
    torch.float16: "float16",
    torch.float32: "float32",
    torch.float64: "float64",
}


@dataclass
class MergeOutput:
    """One model to produce: a variant name (None without a sweep), its parameters, its folder."""

    name: str | None
    parameters: dict[str, Any]
    folder: Path


@dataclass
class MergeReport:
    name: str | None
    folder: Path
    tensors: int = 0
    linear_fallback: int = 0  # SLERP tensors that took the linear fallback (|cos| > 0.9995)
    linear_fallback_names: list[str] = field(default_factory=list)
    t_values: list[float] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"variant": self.name, "tensors": self.tensors}
        if self.t_values:
            out["linear_fallback_tensors"] = self.linear_fallback
            out["linear_fallback_fraction"] = round(self.linear_fallback / max(self.tensors, 1), 4)
            out["t_min"] = round(min(self.t_values), 6)
            out["t_max"] = round(max(self.t_values), 6)
            out["t_mean"] = round(sum(self.t_values) / len(self.t_values), 6)
        return out


@dataclass
class PreparedMerge:
    settings: MergeSettings
    model_ids: list[str]
    folders: list[Path]
    readers: list[ModelTensors]
    jobs: list[TensorJob]
    warnings: list[str]


def prepare_merge(settings: MergeSettings, model_path: Callable[[str], Path]) -> PreparedMerge:
    """Resolve parents, refuse incompatible ones (config and headers only), plan the tensors."""
    merge_method(settings.method)
    inputs = settings.model_inputs()
    model_ids = [m.model for m in inputs]
    folders = [Path(model_path(m)) for m in model_ids]
    same_layers = settings.slices is None
    warnings = check_parents(folders[0], folders[1:], same_layers=same_layers)
    warnings += interpolation_warnings(settings)
    readers = [ModelTensors(f) for f in folders]
    for reader in readers[1:]:
        check_tensors(readers[0], reader, same_layers=same_layers)
    layers = num_layers(read_config(folders[0]))
    jobs = build_jobs(settings, readers[0].names(), layers, model_ids)
    for job in jobs:
        for reader, name in zip(job.inputs_of(readers), job.sources, strict=False):
            if name not in reader.infos:
                raise ConfigError(
                    f"tensor {name} (for {job.out_name}) is not in {reader.folder}", key="slices"
                )
    return PreparedMerge(settings, model_ids, folders, readers, jobs, warnings)


def _out_dtype(settings: MergeSettings, source: torch.dtype) -> torch.dtype:
    if not source.is_floating_point:
        return source
    return torch_dtype(settings.out_dtype) or torch_dtype(settings.dtype) or source


def run_merge(
    settings: MergeSettings,
    outputs: list[MergeOutput],
    *,
    model_path: Callable[[str], Path] | None = None,
    progress: Progress | None = None,
    prepared: PreparedMerge | None = None,
    threads: int | None = 1,
    workers: int | None = None,
) -> list[MergeReport]:
    """Merge the parents into every output folder (created if missing); return a report per output.

    `threads`: torch intra-op threads per tensor while merging (restored afterwards; None keeps
    torch's). `workers`: tensors merged at once, each in its own thread (default: one per CPU,
    at most 4); outputs are still written in the model's tensor order. Merging is memory-bound,
    and on a busy machine OpenMP threads waiting at barriers made a 135M merge 5x slower with 2
    threads than with 1 (benchmarks/merge_speed.py): hence one intra-op thread per worker.
    """
    if model_path is None:
        from alloylm.models.sources import resolve_model as model_path
    progress = progress or Progress()
    plan = prepared or prepare_merge(settings, model_path)
    for warning in plan.warnings:
        progress.log(f"warning: {warning}")
    infos = [j.inputs_of(plan.readers)[0].infos[j.sources[0]] for j in plan.jobs]
    layout = [
        (j.out_name, info.shape, _out_dtype(settings, info.dtype))
        for j, info in zip(plan.jobs, infos, strict=True)
    ]
    max_bytes = parse_size(settings.max_shard_size)
    writers = [StreamingModelWriter(o.folder, layout, max_bytes) for o in outputs]
    reports = [MergeReport(o.name, o.folder) for o in outputs]
    previous_threads = torch.get_num_threads()
    try:
        if threads:
            torch.set_num_threads(threads)
        _merge_all(plan, outputs, writers, reports, progress, workers or default_workers())
    finally:
        torch.set_num_threads(previous_threads)
        for writer in writers:
            writer.abort()
        for reader in plan.readers:
            reader.close()
    for output, writer in zip(outputs, writers, strict=False):
        writer.finish()
        write_model_files(output.folder, plan, layout)
    return reports


def default_workers() -> int:
    """One merging thread per CPU this process may use, at most MAX_WORKERS."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return max(1, min(MAX_WORKERS, cpus))


def _merge_all(
    plan: PreparedMerge, outputs, writers, reports, progress: Progress, workers: int = 1
) -> None:
    """Every job merged and written (in `workers` threads), its figures reported in job order."""
    merger = _Merger(plan, outputs, writers)
    progress.start(len(plan.jobs), f"merging ({plan.settings.method}, {len(outputs)} output(s))")
    started = time.perf_counter()
    # closing() stops the workers (and waits for them) whatever stops this loop, Ctrl-C included,
    # before the caller closes the files they write to
    with contextlib.closing(_in_order(plan.jobs, merger, workers)) as merged_jobs:
        for step, (job, stats) in enumerate(merged_jobs, start=1):
            _record(reports, job, stats)
            progress.update(
                step, tensors_per_s=round(step / max(time.perf_counter() - started, 1e-9), 1)
            )
    progress.finish()


def _record(reports: list[MergeReport], job: TensorJob, stats: list[tuple]) -> None:
    for report, (floating, t, fallback) in zip(reports, stats, strict=True):
        if not floating:
            continue
        report.tensors += 1
        if t is not None:
            report.t_values.append(t)
        if fallback:
            report.linear_fallback += 1
            report.linear_fallback_names.append(job.out_name)


@dataclass
class _Inputs:
    """One job's parent tensors, ready for the method (`ctx`; None for a non-float tensor, which
    every output copies from the base: `raw`)."""

    ctx: TensorContext | None
    raw: torch.Tensor | None
    blocks: bool
    out_dtype: torch.dtype | None


class _Merger:
    """Merges one job (a tensor of the output) for every output and writes the results."""

    def __init__(self, plan: PreparedMerge, outputs: list[MergeOutput], writers: list) -> None:
        self.plan, self.outputs, self.writers = plan, outputs, writers
        self.settings = plan.settings
        self.load_dtype = torch_dtype(plan.settings.dtype)
        self._read_lock = threading.Lock()  # the readers share one file handle per shard

    def is_big(self, job: TensorJob) -> bool:
        return (
            job.inputs_of(self.plan.readers)[0].infos[job.sources[0]].numel >= BIG_TENSOR_ELEMENTS
        )

    def _read(self, reader: ModelTensors, name: str) -> torch.Tensor:
        with self._read_lock:
            return reader.get(name)

    def inputs(self, job: TensorJob) -> _Inputs:
        readers = job.inputs_of(self.plan.readers)  # a slice may take some of the models
        base_info = readers[0].infos[job.sources[0]]
        if not base_info.dtype.is_floating_point:
            return _Inputs(None, self._read(readers[0], job.sources[0]), False, None)
        settings = self.settings
        blocks = self.is_big(job) and merges_in_row_blocks(settings.method, len(base_info.shape))
        # mergekit casts inputs to `dtype` before merging; methods then work in float32 (in row
        # blocks: on each block, widened as it is merged). One parent at a time, so only one
        # raw tensor is alive next to the working copies.
        tensors = [
            _working_copy(self._read(reader, name), self.load_dtype, widen=not blocks)
            for reader, name in zip(readers, job.sources, strict=True)
        ]
        ctx = TensorContext(
            job, tensors, has_base=settings.base_model is not None, seed=settings.seed or 0
        )
        return _Inputs(ctx, None, blocks, _out_dtype(settings, base_info.dtype))

    def merged(
        self,
        inputs: _Inputs,
        output: MergeOutput,
        map_blocks: Callable = map,
        out: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, float | None, bool]:
        """(tensor, t, linear fallback) for one output; row blocks go through `map_blocks` and
        into `out` when it is given."""
        if inputs.ctx is None:
            return inputs.raw, None, False
        method = self.settings.method
        if inputs.blocks:  # no float32 copies or result of the whole tensor
            applied = apply_method_in_row_blocks(
                method,
                inputs.ctx,
                output.parameters,
                output.name,
                inputs.out_dtype,
                map_blocks=map_blocks,
                out=out,
            )
        else:
            applied = apply_method(method, inputs.ctx, output.parameters, output.name)
        return applied.tensor.to(inputs.out_dtype), applied.t, applied.linear_fallback

    def _write(self, index: int, job: TensorJob, merged: tuple) -> tuple[bool, float | None, bool]:
        tensor, t, fallback = merged
        self.writers[index].write(job.out_name, tensor)
        return tensor.dtype.is_floating_point, t, fallback

    def __call__(self, job: TensorJob) -> list[tuple]:
        """Merge one tensor for every output, writing each result before the next is computed;
        (floating, t, linear fallback) per output for the reports."""
        inputs = self.inputs(job)
        return [
            self._write(index, job, self.merged(inputs, output))
            for index, output in enumerate(self.outputs)
        ]

    def big(self, job: TensorJob, pool: ThreadPoolExecutor) -> list[tuple]:
        """As a call, for a tensor merged with nothing else in flight: the first output's row
        blocks are shared by the pool's threads (and the method's `prepare`, SLERP's angle, runs
        once, for all outputs); with row blocks, the other outputs of a sweep are merged one per
        thread."""
        inputs = self.inputs(job)
        # results merged in row blocks and already written: the next variants write into them
        # (an embedding-sized buffer would otherwise be fresh, zero-filled pages every time)
        written: queue.SimpleQueue = queue.SimpleQueue()

        def one(index: int, map_blocks: Callable = map) -> tuple:
            try:
                buffer = written.get_nowait()
            except queue.Empty:
                buffer = None
            merged = self.merged(inputs, self.outputs[index], map_blocks, out=buffer)
            stats = self._write(index, job, merged)
            if inputs.blocks:
                written.put(merged[0])
            return stats

        first = one(0, pool.map)
        # variants in parallel only in row blocks: a whole-tensor method's float32 result is
        # the big allocation, one at a time keeps peak memory that of one output
        others = pool.map if inputs.blocks else map
        return [first, *others(one, range(1, len(self.outputs)))]


# Jobs queued ahead per worker: a queued job holds no tensor until a worker starts it, and a
# worker that finishes early starts the next one instead of waiting for the oldest job's report.
QUEUED_PER_WORKER = 2


def _in_order(jobs: list[TensorJob], merger: _Merger, workers: int):
    """(job, merger(job)) in job order, `workers` jobs merged at once in worker threads (each
    writes its own results). A big job (an embedding matrix) runs with no other job in flight, so
    that peak memory stays that of a one-tensor-at-a-time merge; the workers share its work
    (`merger.big`)."""
    if workers <= 1:
        for job in jobs:
            yield job, merger(job)
        return

    window: deque = deque()
    with ThreadPoolExecutor(workers, thread_name_prefix="merge") as pool:
        try:
            for job in jobs:
                if merger.is_big(job):
                    while window:
                        done_job, future = window.popleft()
                        yield done_job, future.result()
                    yield job, merger.big(job, pool)
                    continue
                window.append((job, pool.submit(merger, job)))
                if len(window) >= workers * QUEUED_PER_WORKER:
                    done_job, future = window.popleft()
                    yield done_job, future.result()
            while window:
                done_job, future = window.popleft()
                yield done_job, future.result()
        finally:
            for _, future in window:
                future.cancel()


def _working_copy(
    tensor: torch.Tensor, load_dtype: torch.dtype | None, widen: bool = True
) -> torch.Tensor:
    """The tensor in the config's `dtype` (mergekit's input cast), then float32 if `widen`."""
    if load_dtype is not None and load_dtype != tensor.dtype:
        tensor = tensor.to(load_dtype)
    return tensor.float() if widen else tensor


def write_model_files(folder: Path, plan: PreparedMerge, layout: list[tuple]) -> None:
    """config.json (dtype, layer count), generation config, tokenizer and chat template."""
    settings = plan.settings
    base = plan.folders[0]
    config = json.loads((base / "config.json").read_text())
    float_dtypes = {dtype for _, _, dtype in layout if dtype.is_floating_point}
    if len(float_dtypes) == 1:
        name = TORCH_TO_CONFIG.get(next(iter(float_dtypes)))
        config["dtype"] = name
        if "torch_dtype" in config:
            config["torch_dtype"] = name
    layers = output_layers(settings)
    if layers is not None:
        config["num_hidden_layers"] = layers
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if (base / "generation_config.json").exists():
        shutil.copyfile(base / "generation_config.json", folder / "generation_config.json")
    tokenizer_folder = _tokenizer_folder(plan)
    for name in TOKENIZER_FILES:
        if (tokenizer_folder / name).exists():
            shutil.copyfile(tokenizer_folder / name, folder / name)
    if settings.chat_template:
        _write_chat_template(folder, settings.chat_template)
    from alloylm.models.saving import finalize_model_files

    finalize_model_files(folder)  # the lineage's pad-token rule, 4.x-loadable tokenizer


def _tokenizer_folder(plan: PreparedMerge) -> Path:
    source = plan.settings.tokenizer_source
    if source in (None, "base"):
        return plan.folders[0]
    if source in plan.model_ids:
        return plan.folders[plan.model_ids.index(source)]
    raise ConfigError(
        f"tokenizer_source {source!r} is not one of the merged models",
        key="tokenizer_source",
        hint="use base or one of the models",
    )


def _write_chat_template(folder: Path, template: str) -> None:
    path = Path(template).expanduser()
    if "{" not in template and path.is_file():
        template = path.read_text()
    elif "{" not in template:
        raise ConfigError(
            f"chat_template {template!r} is neither a Jinja template nor a file",
            key="chat_template",
        )
    (folder / "chat_template.jinja").write_text(template)
    config_path = folder / "tokenizer_config.json"
    if config_path.exists():  # one template only: the .jinja file wins, drop an embedded one
        config = json.loads(config_path.read_text())
        if config.pop("chat_template", None) is not None:
            config_path.write_text(json.dumps(config, indent=2) + "\n")


__all__ = [
    "MergeOutput",
    "MergeReport",
    "PreparedMerge",
    "prepare_merge",
    "run_merge",
    "DTYPE_NAMES",
]
