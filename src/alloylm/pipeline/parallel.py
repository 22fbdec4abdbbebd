"""Run independent stages of a pipeline at the same time, each on its own device group.

`alloy run FILE --parallel N` starts every stage whose inputs are built as its own
`alloy run FILE --only STAGE` process, at most N at once, each with `CUDA_VISIBLE_DEVICES` set to
one of N disjoint groups of the machine's GPUs (on a machine without GPUs: the CPU cores are
shared out with OMP_NUM_THREADS). Each process is the ordinary runner: the stage is hashed,
skipped when built, built in a temporary folder and renamed, so a stage stays atomic and a killed
run continues where it stopped. DPO and ORPO after one SFT, the merges and the study's training
branches are such independent stages; the eval stage waits for all its models.

Not done here: one stage on several groups (that is `--launcher accelerate` inside a group),
`--force` (rebuild first without --parallel), scheduling by cost (ready stages start in file order).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloylm.errors import ConfigError
from alloylm.lineage import read_manifest
from alloylm.pipeline.graph import topological_order
from alloylm.pipeline.runner import PipelineRunner, StageOutcome


def stage_status(pipeline: Any) -> dict[str, dict[str, Any]]:
    """Per stage (topological order): its content hash and whether the artifact with it is built.

    Uses the runner's content hash, so 'built' means exactly what makes `alloy run` skip it.
    status: built | stale (built with another hash: it will be rebuilt) | missing.
    """
    runner = PipelineRunner(pipeline)
    hashes: dict[str, str] = {}
    status: dict[str, dict[str, Any]] = {}
    for name in topological_order(pipeline):
        result = runner.content_hash(pipeline.stages[name], hashes)
        content_hash = result[0] if isinstance(result, tuple) else result
        hashes[name] = content_hash
        manifest = read_manifest(runner.artifact_dir(name))
        if manifest is None:
            state = "missing"
        elif manifest.get("content_hash") == content_hash:
            state = "built"
        else:
            state = "stale"
        status[name] = {"hash": content_hash, "status": state}
    return status


def device_groups(slots: int, devices: list[str], per_group: int | None = None) -> list[list[str]]:
    """`slots` disjoint groups of `devices` (equal sizes, the rest unused); [] per slot without GPUs."""
    if slots < 1:
        raise ConfigError("--parallel must be at least 1", key="--parallel")
    if not devices:
        return [[] for _ in range(slots)]
    size = per_group or len(devices) // slots
    if size < 1 or size * slots > len(devices):
        raise ConfigError(
            f"--parallel {slots} needs {slots * max(size, 1)} devices, {len(devices)} visible "
            f"({','.join(devices)})",
            key="--parallel",
            hint="lower --parallel (or --num-processes), or list more with --devices",
        )
    return [devices[i * size : (i + 1) * size] for i in range(slots)]


def visible_devices(explicit: str | None = None) -> list[str]:
    """GPU ids to share out: --devices, else CUDA_VISIBLE_DEVICES, else every CUDA device."""
    text = explicit if explicit is not None else os.environ.get("CUDA_VISIBLE_DEVICES")
    if text is not None:
        return [d.strip() for d in text.split(",") if d.strip()]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # no torch or no CUDA: CPU only
        return []


def slot_environments(groups: list[list[str]]) -> list[dict[str, str]]:
    """Environment of each slot: its GPUs, or its share of the CPU cores."""
    if all(group for group in groups):
        return [{"CUDA_VISIBLE_DEVICES": ",".join(group)} for group in groups]
    threads = str(max(1, (os.cpu_count() or 1) // len(groups)))
    return [{"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", threads)} for _ in groups]


@dataclass
class _Running:
    name: str
    process: subprocess.Popen[bytes]
    slot: int
    started: float
    log: Path


def run_parallel(
    pipeline: Any,
    command_args: list[str],
    environments: list[dict[str, str]],
    *,
    on_event: Callable[[str, StageOutcome], None] | None = None,
    poll_s: float = 0.2,
) -> list[StageOutcome]:
    """Build every stage not built yet, ready ones at once, one process per slot.

    `command_args`: the `alloy run` arguments every stage process gets (the pipeline file, its
    overrides, launcher options); `--only STAGE` is added. Each process's output goes to
    `<output>/.alloy/logs/<stage>.log`. Outcomes carry the start and end times (wall clock).
    """
    on_event = on_event or (lambda event, outcome: None)
    output = pipeline.output_dir
    logs = output / ".alloy" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    status = stage_status(pipeline)
    order = list(status)
    done = {name for name in order if status[name]["status"] == "built"}
    outcomes: dict[str, StageOutcome] = {}
    for name in order:
        if name in done:
            outcome = StageOutcome(name, pipeline.stages[name].kind, "skipped", output / name)
            outcomes[name] = outcome
            on_event("skipped", outcome)
    pending = [name for name in order if name not in done]
    running: list[_Running] = []
    free = list(range(len(environments)))
    failed = False
    while pending or running:
        ready = [n for n in pending if set(pipeline.stages[n].depends_on) <= done]
        while ready and free and not failed:
            name = ready.pop(0)
            pending.remove(name)
            slot = free.pop(0)
            log = logs / f"{name}.log"
            outcome = StageOutcome(name, pipeline.stages[name].kind, "running", output / name)
            outcome.metrics = {"slot": slot, **environments[slot]}
            outcomes[name] = outcome
            on_event("start", outcome)
            with open(log, "wb") as handle:
                process = subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "alloylm.cli.main",
                        "run",
                        *command_args,
                        "--only",
                        name,
                    ],
                    stdout=handle,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **environments[slot]},
                )
            running.append(_Running(name, process, slot, time.time(), log))
        if failed and not running:
            break
        if not running and pending and not ready:
            break  # nothing can start: a parent failed
        time.sleep(poll_s)
        for job in list(running):
            code = job.process.poll()
            if code is None:
                continue
            running.remove(job)
            free.append(job.slot)
            free.sort()
            outcome = outcomes[job.name]
            outcome.wall_s = time.time() - job.started
            outcome.metrics.update({"started": job.started, "ended": time.time()})
            if code == 0:
                outcome.status = "built"
                done.add(job.name)
                manifest = read_manifest(output / job.name) or {}
                outcome.metrics.update(manifest.get("metrics") or {})
                on_event("built", outcome)
            else:
                failed = True
                outcome.status = "failed"
                tail = job.log.read_text(errors="replace").splitlines()[-15:]
                outcome.error = f"exit code {code}; log {job.log}:\n" + "\n".join(tail)
                on_event("failed", outcome)
    for name in pending:
        outcomes[name] = StageOutcome(name, pipeline.stages[name].kind, "not run", output / name)
    return [outcomes[name] for name in order if name in outcomes]
