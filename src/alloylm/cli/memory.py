"""The memory plan and effective batch of a pipeline's training stages, for `alloy validate` and
`alloy study plan` (the estimate itself: alloylm.train.memory_plan, a pure function)."""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TRAINING_KINDS = ("cpt", "sft", "dpo", "orpo", "simpo")
STAGE_REF_PREFIX = "${stages."


def add_arguments(parser: argparse.ArgumentParser, *, launch: bool = True) -> None:
    """--launcher, --num-processes, --config-file (as `alloy run` takes them) and --device-memory."""
    if launch:
        parser.add_argument(
            "--launcher",
            choices=["accelerate", "torchrun"],
            help="plan for this launcher (as `alloy run --launcher`); default: one process",
        )
        parser.add_argument(
            "--num-processes", type=int, default=1, help="processes of the launch (default 1)"
        )
        parser.add_argument(
            "--config-file",
            help="accelerate config (a path, or ddp, fsdp, deepspeed_zero3, multinode): "
            "its distributed_type decides DDP, ZeRO-3 or FSDP in the plan",
        )
    parser.add_argument(
        "--device-memory",
        metavar="SIZE",
        help="memory of one device, e.g. 80GB: warn of every training stage that does not fit, "
        "and say what would make it fit",
    )


def launch_from_args(args: argparse.Namespace):
    """The plan's Launch from --launcher / --num-processes / --config-file."""
    from alloylm.errors import ConfigError
    from alloylm.train.memory_plan import Launch

    processes = getattr(args, "num_processes", 1) or 1
    if processes < 1:
        raise ConfigError("--num-processes must be at least 1", key="--num-processes")
    launcher = getattr(args, "launcher", None)
    config_file = getattr(args, "config_file", None)
    if launcher is None and processes == 1 and not config_file:
        return Launch("single", 1)
    kind = _config_file_kind(config_file) if config_file else "ddp"
    if processes == 1 and kind == "ddp":
        return Launch("single", 1)
    return Launch(kind, processes)


def _config_file_kind(config_file: str) -> str:
    """ddp, zero3 or fsdp from an accelerate config's distributed_type (and ZeRO stage)."""
    import yaml

    from alloylm.pipeline.launch import resolve_config_file

    path = Path(resolve_config_file(config_file))
    data = (
        yaml.safe_load(path.read_text()) if path.suffix != ".json" else json.loads(path.read_text())
    )
    kind = str((data or {}).get("distributed_type", "")).upper()
    if kind == "DEEPSPEED":
        stage = (data.get("deepspeed_config") or {}).get("zero_stage", 0)
        return "zero3" if int(stage) == 3 else "ddp"
    if kind == "FSDP":
        return "fsdp"
    return "ddp"


def device_memory(args: argparse.Namespace) -> int | None:
    """--device-memory in bytes (None without it)."""
    from alloylm.errors import ConfigError
    from alloylm.train.memory_plan import parse_memory

    if not getattr(args, "device_memory", None):
        return None
    try:
        return parse_memory(args.device_memory)
    except ValueError as error:
        raise ConfigError(
            str(error), key="--device-memory", hint="e.g. --device-memory 80GB"
        ) from None


@dataclass
class StageRow:
    name: str
    kind: str
    model: str
    plan: Any  # MemoryPlan, None when the model's shape is unknown
    effective: int
    intended: int | None
    accumulation: int
    advice: list[str]
    fits: bool | None


def model_config(pipeline, source: str, seen: tuple[str, ...] = ()) -> dict[str, Any] | None:
    """config.json values of a stage's model: a stage reference is followed to the model that
    stage trains or merges onto; then a local folder's config.json, a source the recipes name,
    or the Hugging Face cache. None when none of them knows it."""
    from alloylm.train.memory_plan import known_config

    if source.startswith(STAGE_REF_PREFIX):
        parent = source[len(STAGE_REF_PREFIX) :].split(".", 1)[0].rstrip("}")
        spec = pipeline.stages.get(parent)
        if spec is None or parent in seen:
            return None
        built = pipeline.output_dir / parent / "config.json"
        if built.exists():
            return json.loads(built.read_text())
        parent_source = getattr(spec.config, "model", None) or getattr(
            spec.config, "base_model", None
        )
        return model_config(pipeline, parent_source, (*seen, parent)) if parent_source else None
    local = Path(source).expanduser()
    if (local / "config.json").is_file():
        return json.loads((local / "config.json").read_text())
    known = known_config(source)
    if known is not None:
        return known
    return _hub_cache_config(source)


def _hub_cache_config(source: str) -> dict[str, Any] | None:
    import os

    if source.count("/") != 1:
        return None
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    folder = home / "hub" / f"models--{source.replace('/', '--')}" / "snapshots"
    for config in sorted(folder.glob("*/config.json")) if folder.is_dir() else []:
        return json.loads(config.read_text())
    return None


def stage_rows(pipeline, launch, device_bytes: int | None) -> list[StageRow]:
    """One row per training stage: its plan under `launch`, its effective batch, fit advice."""
    from alloylm.train.memory_plan import (
        ModelShape,
        StageShape,
        effective_batch,
        fits,
        plan_memory,
        what_would_fit,
    )

    rows = []
    for name, spec in pipeline.stages.items():
        if spec.kind not in TRAINING_KINDS:
            continue
        cfg = spec.config
        train = cfg.train
        lora = train.lora
        precision = "bfloat16" if train.dtype == "auto" else train.dtype
        stage = StageShape(
            kind=spec.kind,
            batch=train.per_device_batch_size,
            seq_len=train.max_seq_length,
            precision=precision,
            gradient_checkpointing=train.gradient_checkpointing,
            gradient_accumulation=train.gradient_accumulation_steps,
            lora_r=lora.r if lora else None,
            quantize=lora.quantize if lora else None,
            reference=spec.kind == "dpo" and not getattr(cfg, "precompute_ref_log_probs", False),
        )
        config = model_config(pipeline, cfg.model)
        plan = advice = fit = None
        if config is not None:
            shape = ModelShape.from_config(config)
            plan = plan_memory(shape, stage, launch)
            if device_bytes is not None:
                fit = fits(plan, device_bytes)
                advice = [] if fit else what_would_fit(shape, stage, launch, device_bytes)
        effective = effective_batch(
            train.per_device_batch_size, train.gradient_accumulation_steps, launch.processes
        )
        rows.append(
            StageRow(
                name,
                spec.kind,
                cfg.model,
                plan,
                effective,
                train.effective_batch_size,
                train.gradient_accumulation_steps,
                advice or [],
                fit,
            )
        )
    return rows


def batch_warning(row: StageRow, launch) -> str | None:
    """The warning when the launch's effective batch is not the recipe's intended one."""
    if row.intended is None or row.intended == row.effective:
        return None
    per_process = row.effective // launch.processes  # rows per optimizer step and process
    unit = "pairs" if row.kind in ("dpo", "orpo", "simpo") else "rows"
    fixes = []
    processes = row.intended / per_process
    if processes == int(processes):
        fixes.append(f"--num-processes {int(processes)}")
    per_device = row.effective // (launch.processes * row.accumulation)
    accumulation = row.intended / (per_device * launch.processes)
    if accumulation == int(accumulation) and accumulation >= 1:
        fixes.append(f"train.gradient_accumulation_steps={int(accumulation)} for this launch")
    fix = " or ".join(fixes) or "change per_device_batch_size or gradient_accumulation_steps"
    return (
        f"warning: stage {row.name}: effective batch {row.effective} {unit} "
        f"({per_process} per process x {launch.processes} process(es)), but the recipe intends "
        f"{row.intended} (train.effective_batch_size); for it: {fix}"
    )


def print_plan(pipeline, args: argparse.Namespace, echo=print) -> int:
    """Print the memory plan and effective batch of every training stage; the count of stages
    that do not fit --device-memory (0 without it)."""
    from alloylm.train.memory_plan import format_bytes

    device_bytes = device_memory(args)
    launch = launch_from_args(args)
    rows = stage_rows(pipeline, launch, device_bytes)
    if not rows:
        return 0
    device = f", device {format_bytes(device_bytes)}" if device_bytes else ""
    echo(f"memory plan (estimated peak per device, {launch.describe()}{device}):")
    width = max(len(r.name) for r in rows)
    parts_order = (
        "weights",
        "gathered",
        "gradients",
        "optimizer",
        "activations",
        "logits",
        "reference",
    )
    not_fitting = 0
    for row in rows:
        batch = f"effective batch {row.effective}"
        if row.plan is None:
            echo(
                f"  {row.name:<{width}} {row.kind:<5} {batch}; memory: unknown shape of model "
                f"{row.model!r} (give a local folder, or run once to cache its config)"
            )
        else:
            plan = row.plan
            parts = ", ".join(
                f"{key} {format_bytes(plan.parts[key])}" for key in parts_order if key in plan.parts
            )
            if "reference" not in plan.parts and row.kind == "dpo":
                parts += ", reference none (precomputed)"
            other = (
                plan.activations_without_checkpointing
                if plan.stage.gradient_checkpointing
                else plan.activations_with_checkpointing
            )
            checkpointing = "on" if plan.stage.gradient_checkpointing else "off"
            parts = parts.replace(
                f"activations {format_bytes(plan.parts['activations'])}",
                f"activations {format_bytes(plan.parts['activations'])} (gradient "
                f"checkpointing {checkpointing}; {'off' if checkpointing == 'on' else 'on'}: "
                f"{format_bytes(other)})",
            )
            verdict = ""
            if row.fits is not None:
                verdict = "  fits" if row.fits else "  DOES NOT FIT"
            echo(
                f"  {row.name:<{width}} {row.kind:<5} {format_bytes(plan.total)}{verdict}  {batch}"
            )
            echo(f"  {'':<{width}}       {parts}")
            for note in plan.notes:
                echo(f"  {'':<{width}}       {note}")
        warning = batch_warning(row, launch)
        if warning:
            echo(f"  {warning}")
        if row.fits is False:
            not_fitting += 1
            echo(
                f"  warning: stage {row.name} needs {format_bytes(row.plan.total)} per device, "
                f"more than {format_bytes(device_bytes)}"
            )
            if row.advice:
                echo("    would fit with: " + "; ".join(row.advice))
            else:
                echo(
                    "    no single change fits it: combine them (ZeRO-3 with more processes and LoRA)"
                )
    return not_fitting


def plan_rows_json(pipeline, args: argparse.Namespace) -> list[dict[str, Any]]:
    """The memory plan as JSON rows (`alloy study plan --json`)."""
    device_bytes = device_memory(args)
    launch = launch_from_args(args)
    rows = []
    for row in stage_rows(pipeline, launch, device_bytes):
        rows.append(
            {
                "stage": row.name,
                "kind": row.kind,
                "model": row.model,
                "effective_batch": row.effective,
                "intended_effective_batch": row.intended,
                "batch_warning": batch_warning(row, launch),
                "memory": row.plan.as_dict() if row.plan else None,
                "fits": row.fits,
                "would_fit_with": row.advice,
            }
        )
    return rows
