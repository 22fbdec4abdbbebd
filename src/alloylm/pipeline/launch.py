"""Run one training stage on several processes, under `accelerate launch` or `torchrun`.

The pipeline runner calls `run_stage_distributed` for training stages when `alloy run` is given
`--launcher`. We write the stage's resolved config and context to a spec file, start the launcher
on `python -m alloylm.pipeline.worker <spec>`, and every rank rebuilds the stage and calls its `run`;
TRL / transformers' Trainer does the distributed work (DDP, FSDP or DeepSpeed, as the accelerate
config file says). Rank 0 writes the StageResult to a JSON file that we read back here.

Launchers:
- ``accelerate``: for GPUs; pass a config file, or the name of a shipped one (package data in
  ``alloylm/resources/accelerate/``: ddp, fsdp, deepspeed_zero3 as in the study, multinode).
  On a machine without GPUs, ``accelerate launch`` starts only one process (multi-CPU needs an
  MPI launcher), so we refuse more than one there.
- ``torchrun``: starts N processes on this machine; on CPU they train as DDP ranks over gloo.
  This is the path the CPU test uses.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.contract import StageResult
from alloylm.errors import ConfigError
from alloylm.resources import accelerate_dir

LAUNCHERS = ("accelerate", "torchrun")
SPEC_NAME = "launch_spec.json"
RESULT_NAME = "launch_result.json"
RANKS_DIR = "ranks"  # inside ctx.state_dir: one marker per rank (rank, world size, steps trained)


def shipped_config(name: str) -> Path:
    """Path of a shipped accelerate config by short name (ddp, fsdp, deepspeed_zero3, multinode)."""
    folder = accelerate_dir()
    path = folder / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in folder.glob("*.yaml")))
        raise ConfigError(f"no shipped accelerate config {name!r}", hint=f"shipped: {known}")
    return path


def resolve_config_file(config_file: str | None) -> str | None:
    """A path, or the short name of a shipped config ('deepspeed_zero3' -> resources/accelerate/...)."""
    if config_file is None:
        return None
    if Path(config_file).exists():
        return str(Path(config_file).resolve())
    if "/" not in config_file and not config_file.endswith((".yaml", ".yml", ".json")):
        return str(shipped_config(config_file))
    raise ConfigError(
        f"accelerate config file {config_file!r} does not exist",
        key="--config-file",
        hint="give a path, or one of the shipped names: ddp, fsdp, deepspeed_zero3, multinode",
    )


def build_command(
    launcher: str, num_processes: int, config_file: str | None, spec_path: Path
) -> list[str]:
    """The launcher command line that runs the worker module on every rank."""
    worker = ["-m", "alloylm.pipeline.worker", str(spec_path)]
    if launcher == "torchrun":
        if config_file:
            raise ConfigError(
                "--config-file is an accelerate config; torchrun does not read it",
                key="--config-file",
                hint="use --launcher accelerate with a config file, or drop --config-file",
            )
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            f"--nproc_per_node={num_processes}",
            *worker,
        ]
    if launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if config_file:
            command += ["--config_file", config_file]
        return [*command, f"--num_processes={num_processes}", *worker]
    raise ConfigError(
        f"unknown launcher {launcher!r}",
        key="--launcher",
        hint=f"use one of: {', '.join(LAUNCHERS)}",
    )


def _check_accelerate_on_cpu(launcher: str, num_processes: int) -> None:
    if launcher != "accelerate" or num_processes <= 1:
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            f"accelerate launch on a machine without GPUs starts one process, not {num_processes}",
            key="--launcher",
            hint="on CPU use --launcher torchrun (DDP over gloo); accelerate configs are for GPUs",
        )


def write_spec(
    stage_kind: str,
    config: dict[str, Any],
    ctx_fields: dict[str, Any],
    launcher: str,
    num_processes: int,
    stage_module: str | None = None,
) -> Path:
    state_dir = Path(ctx_fields["state_dir"])
    state_dir.mkdir(parents=True, exist_ok=True)
    ranks = state_dir / RANKS_DIR
    for old in ranks.glob("rank-*.json") if ranks.is_dir() else []:
        old.unlink()  # markers of an earlier launch must not count for this one
    (state_dir / RESULT_NAME).unlink(missing_ok=True)
    spec = {
        "stage_kind": stage_kind,
        "stage_module": stage_module,
        "config": config,
        "ctx": {
            key: str(value) if isinstance(value, Path) else value
            for key, value in ctx_fields.items()
        },
        "launcher": {"kind": launcher, "num_processes": num_processes},
        "result_file": str(state_dir / RESULT_NAME),
        "ranks_dir": str(ranks),
    }
    path = state_dir / SPEC_NAME
    atomic_write_json(path, spec)
    return path


def run_stage_distributed(
    stage_kind: str,
    config: dict[str, Any],
    ctx_fields: dict[str, Any],
    launcher: str,
    num_processes: int,
    config_file: str | None = None,
    *,
    stage_module: str | None = None,
    env: dict[str, str] | None = None,
    echo: bool = True,
) -> StageResult:
    """Run stage `stage_kind` with `config` (resolved, JSON-able) on `num_processes` ranks.

    `ctx_fields` holds the StageContext's plain fields (stage_name, run_name, seed, work_dir,
    state_dir, output_root). Returns rank 0's StageResult. `stage_module` replaces the registry
    lookup of `stage_kind` (tests, plugins). Raises AlloyError when the launch fails, with the end
    of its output.
    """
    if num_processes < 1:
        raise ConfigError("--num-processes must be at least 1", key="--num-processes")
    _check_accelerate_on_cpu(launcher, num_processes)
    config_path = resolve_config_file(config_file)
    spec_path = write_spec(stage_kind, config, ctx_fields, launcher, num_processes, stage_module)
    command = build_command(launcher, num_processes, config_path, spec_path)
    tail = _run_streaming(command, {**os.environ, **(env or {})}, echo=echo)
    result_file = spec_path.parent / RESULT_NAME
    if tail.returncode != 0 or not result_file.exists():
        from alloylm.errors import AlloyError

        raise AlloyError(
            f"{launcher} run of stage {ctx_fields.get('stage_name', stage_kind)!r} failed "
            f"(exit code {tail.returncode}); last output:\n" + "\n".join(tail.lines),
            hint="the full output is above; the stage's checkpoints are kept, a rerun resumes",
        )
    data = json.loads(result_file.read_text())
    return StageResult(**data)


class _Tail:
    def __init__(self, returncode: int, lines: list[str]) -> None:
        self.returncode, self.lines = returncode, lines


RANK_ERROR = re.compile(r"^\[(rank|default)\d+\]:\s*[\w.]*(Error|Exception)\b")


def _run_streaming(command: list[str], env: dict[str, str], *, echo: bool, keep: int = 25) -> _Tail:
    """Run `command`, echo its output as it comes; keep each rank's error line and the last lines."""
    lines: collections.deque[str] = collections.deque(maxlen=keep)
    errors: list[str] = []
    with subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, bufsize=1
    ) as process:
        assert process.stdout is not None
        for line in process.stdout:
            lines.append(line.rstrip("\n"))
            if RANK_ERROR.match(line) and len(errors) < 8:
                errors.append(line.rstrip("\n"))
            if echo:
                print(line, end="", flush=True)
        returncode = process.wait()
    return _Tail(returncode, [*errors, "...", *lines] if errors else list(lines))


def rank_markers(state_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The markers each rank wrote in its last launch (rank, world_size, steps), by rank."""
    folder = Path(state_dir) / RANKS_DIR
    markers = (
        [json.loads(p.read_text()) for p in folder.glob("rank-*.json")] if folder.is_dir() else []
    )
    return sorted(markers, key=lambda m: m["rank"])
