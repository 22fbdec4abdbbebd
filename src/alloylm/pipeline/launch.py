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
  This is the path the CPU test uses. With ``--config-file`` (a DeepSpeed config such as the
  shipped ``deepspeed_zero3``) every rank reads that file through accelerate's config classes and
  trains under DeepSpeed (ZeRO-3 runs on CPU ranks: train/distributed.py); FSDP is refused on a
  machine without CUDA, where the Trainer would silently run DDP.
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json
from alloylm.contract import StageResult
from alloylm.errors import ConfigError
from alloylm.resources import accelerate_dir

LAUNCHERS = ("accelerate", "torchrun")
NODES_DIR = "nodes"  # in <output>/.alloy: node 0's launch requests for the other nodes
SESSION_NAME, DONE_NAME = "session.json", "done.json"


@dataclass(frozen=True)
class Nodes:
    """Where this machine stands in a multi-node launch. Node 0 owns the pipeline (it runs every
    stage, writes every file but the training ranks' own); the other nodes only join the
    training launches it announces in the shared output folder (`follow_node_zero`)."""

    count: int = 1
    rank: int = 0
    master_addr: str = "127.0.0.1"
    master_port: int = 29500

    @property
    def multi(self) -> bool:
        return self.count > 1


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
        hint="give a path, or one of the shipped names: ddp, fsdp, fsdp2, deepspeed_zero3, multinode",
    )


def build_command(
    launcher: str,
    num_processes: int,
    config_file: str | None,
    spec_path: Path,
    nodes: Nodes | None = None,
) -> list[str]:
    """The launcher command line that runs the worker module on every rank of this node.
    `num_processes` is per node."""
    worker = ["-m", "alloylm.pipeline.worker", str(spec_path)]
    nodes = nodes or Nodes()
    if launcher == "torchrun":
        # torchrun does not read an accelerate config: each rank's worker does (spec.config_file)
        where = ["--standalone"]
        if nodes.multi:  # static rendezvous at node 0
            where = [f"--nnodes={nodes.count}", f"--node_rank={nodes.rank}",
                     f"--master_addr={nodes.master_addr}", f"--master_port={nodes.master_port}"]  # fmt: skip
        return [
            sys.executable,
            "-m",
            "torch.distributed.run",
            *where,
            f"--nproc_per_node={num_processes}",
            *worker,
        ]
    if launcher == "accelerate":
        command = [sys.executable, "-m", "accelerate.commands.launch"]
        if config_file:
            command += ["--config_file", config_file]
        if nodes.multi:  # accelerate counts processes over all machines
            command += [f"--num_machines={nodes.count}", f"--machine_rank={nodes.rank}",
                        f"--main_process_ip={nodes.master_addr}",
                        f"--main_process_port={nodes.master_port}"]  # fmt: skip
            return [*command, f"--num_processes={num_processes * nodes.count}", *worker]
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
    config_file: str | None = None,
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
        # torchrun: the accelerate config each rank's training follows (DeepSpeed settings)
        "config_file": config_file if launcher == "torchrun" else None,
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
    nodes: Nodes | None = None,
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
    if config_path is not None:  # refused here, before any rank starts (train/distributed.py)
        from alloylm.train.distributed import read_launch_config

        read_launch_config(config_path)
    spec_path = write_spec(
        stage_kind, config, ctx_fields, launcher, num_processes, stage_module, config_path
    )
    command = build_command(launcher, num_processes, config_path, spec_path, nodes)
    if nodes is not None and nodes.multi:  # the other nodes start their ranks of this launch
        announce_launch(Path(ctx_fields["output_root"]), spec_path, config_path)
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


# -------------------------------------------------------------------------------------------------
# Several nodes. Node 0 runs the pipeline; before each training launch it writes a request into
# <output>/.alloy/nodes/ (a folder all nodes share, like the checkpoints and artifacts), and the
# other nodes, started with the same `alloy run` and their own --node-rank, start their ranks of
# that launch. They never run a stage, clean a folder or write a spec of their own.
# -------------------------------------------------------------------------------------------------


def nodes_dir(output_root: Path) -> Path:
    return Path(output_root) / ".alloy" / NODES_DIR


def begin_session(output_root: Path) -> str:
    """Node 0, before its first stage: a fresh session id; earlier requests no longer count."""
    folder = nodes_dir(output_root)
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("launch-*.json"):
        old.unlink(missing_ok=True)
    (folder / DONE_NAME).unlink(missing_ok=True)
    session = uuid.uuid4().hex
    atomic_write_json(folder / SESSION_NAME, {"session": session, "pid": os.getpid()})
    return session


def end_session(output_root: Path, session: str, ok: bool) -> None:
    """Node 0, when the pipeline ends (also when it failed): the other nodes stop following."""
    atomic_write_json(nodes_dir(output_root) / DONE_NAME, {"session": session, "ok": ok})


def announce_launch(output_root: Path, spec_path: Path, config_file: str | None) -> None:
    folder = nodes_dir(output_root)
    session = json.loads((folder / SESSION_NAME).read_text())["session"]
    number = len(list(folder.glob("launch-*.json"))) + 1
    request = {"session": session, "number": number, "spec": str(spec_path),
               "config_file": config_file}  # fmt: skip
    atomic_write_json(folder / f"launch-{number:05d}.json", request)


def follow_node_zero(
    output_root: Path,
    launcher: str,
    num_processes: int,
    nodes: Nodes,
    *,
    echo: bool = True,
    poll_s: float = 0.5,
    wait_s: float = 3600.0,
) -> int:
    """Node `nodes.rank` > 0: start this node's ranks of every launch node 0 announces, until
    node 0 says the pipeline ended. Returns how many launches it joined; raises AlloyError when a
    launch fails here or node 0 starts no session within `wait_s` seconds."""
    from alloylm.errors import AlloyError

    folder = nodes_dir(output_root)
    deadline = time.monotonic() + wait_s
    session = None
    while session is None:  # node 0's session: one whose done marker is not written yet
        try:
            current = json.loads((folder / SESSION_NAME).read_text())["session"]
            done = folder / DONE_NAME
            if not done.exists() or json.loads(done.read_text())["session"] != current:
                session = current
        except (OSError, ValueError, KeyError):
            pass
        if session is None:
            if time.monotonic() > deadline:
                raise AlloyError(
                    f"node {nodes.rank}: node 0 started no run in {folder} within {wait_s:.0f} s",
                    hint="start `alloy run` with --node-rank 0 on the first node, with the same "
                    "output folder (on a filesystem all nodes share)",
                )
            time.sleep(poll_s)
    joined = 0
    while True:
        request_path = folder / f"launch-{joined + 1:05d}.json"
        if request_path.exists():
            request = json.loads(request_path.read_text())
            if request["session"] == session:
                command = build_command(
                    launcher, num_processes, request["config_file"], Path(request["spec"]), nodes
                )
                tail = _run_streaming(command, dict(os.environ), echo=echo)
                if tail.returncode != 0:
                    raise AlloyError(
                        f"node {nodes.rank}: its ranks of launch {joined + 1} failed "
                        f"(exit code {tail.returncode}); last output:\n" + "\n".join(tail.lines),
                        hint="node 0 reports the stage's failure; rerun both nodes to resume",
                    )
            joined += 1
            continue
        done = folder / DONE_NAME
        if done.exists():
            try:
                if json.loads(done.read_text())["session"] == session:
                    return joined
            except (OSError, ValueError, KeyError):
                pass
        time.sleep(poll_s)
