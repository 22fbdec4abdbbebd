"""What an accelerate config file asks of training, read through accelerate's own config classes.

`alloy run --launcher torchrun|accelerate --config-file deepspeed_zero3` names an accelerate config.
`read_launch_config` loads it with `accelerate.commands.config.config_args.load_config_from_file`
(the class `accelerate launch` itself uses: unknown keys and bad values fail there) and turns it
into a `TrainingBackend`: plain DDP, DeepSpeed (with the DeepSpeed config the HF Trainer receives
as `TrainingArguments(deepspeed=...)`), or FSDP.

Refused before any rank starts, each with the key to change:
- a ZeRO-3 config that does not gather the weights on save (`zero3_save_16bit_model: false`): the
  Trainer would write a ZeRO checkpoint (`global_stepN/`) where an artifact is expected;
- an FSDP config whose state dict is sharded: the final save would hold no `model.safetensors`;
- FSDP on a machine without CUDA: transformers and accelerate route CPU ranks to
  `DistributedType.MULTI_CPU` and wrap the model in DDP, silently (docs/scale-out.md quotes the
  upstream lines); alloylm refuses instead of training DDP under an FSDP name.

On the torchrun path the worker enters `training_backend(backend)` around the stage, and
`alloylm.train._trl.build_training_args` passes the DeepSpeed config to the Trainer. ZeRO-3 runs
on CPU ranks over gloo: DeepSpeed picks its CPU accelerator by itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm.errors import ConfigError

_ACTIVE: list[TrainingBackend] = []


@dataclass(frozen=True)
class TrainingBackend:
    """How the ranks of a launch share the model: 'ddp', 'deepspeed' or 'fsdp'."""

    kind: str = "ddp"
    zero_stage: int = 0
    deepspeed: dict[str, Any] = field(default_factory=dict)  # the Trainer's DeepSpeed config
    fsdp: dict[str, Any] = field(default_factory=dict)  # accelerate's fsdp_config, as read
    source: str = ""  # the config file it came from

    @property
    def zero3(self) -> bool:
        return self.kind == "deepspeed" and self.zero_stage == 3

    @property
    def shards_parameters(self) -> bool:
        return self.zero3 or self.kind == "fsdp"


def deepspeed_config_for(ds: dict[str, Any]) -> dict[str, Any]:
    """The DeepSpeed JSON config for accelerate's `deepspeed_config` block. Batch sizes, gradient
    clipping and accumulation are "auto": the Trainer fills them from TrainingArguments, so the
    stage's `train:` block stays the one source. bf16 is added by `build_training_args` as
    `torch_autocast` (fp32 weights, as in one process), never DeepSpeed's bf16 weight mode."""
    stage = int(ds.get("zero_stage", 2))
    config: dict[str, Any] = {
        "train_micro_batch_size_per_gpu": "auto",
        "train_batch_size": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "fp16": {"enabled": "auto"},
        "zero_optimization": {"stage": stage},
    }
    zero = config["zero_optimization"]
    for key, name in (("offload_optimizer_device", "offload_optimizer"),
                      ("offload_param_device", "offload_param")):  # fmt: skip
        device = ds.get(key)
        if device and device != "none":
            zero[name] = {"device": device}
    if stage == 3:
        zero["stage3_gather_16bit_weights_on_model_save"] = bool(
            ds.get("zero3_save_16bit_model", False)
        )
    return config


def read_launch_config(path: str | Path, *, has_cuda: bool | None = None) -> TrainingBackend:
    """The TrainingBackend an accelerate config file asks for; ConfigError when alloylm cannot
    honour it here (see the module docstring)."""
    from accelerate.commands.config.config_args import load_config_from_file
    from accelerate.utils import DistributedType

    path = Path(path)
    try:
        cluster = load_config_from_file(str(path))
    except (ValueError, TypeError) as error:  # unknown keys, bad enum values
        raise ConfigError(
            f"accelerate could not read this config: {error}",
            file=str(path),
            hint="fix the key it names, or start from a shipped config (ddp, fsdp, fsdp2, "
            "deepspeed_zero3, multinode)",
        ) from None
    kind = cluster.distributed_type
    if kind == DistributedType.DEEPSPEED:
        ds = dict(cluster.deepspeed_config or {})
        if ds.get("deepspeed_config_file"):
            raise ConfigError(
                "a separate DeepSpeed JSON file (deepspeed_config_file) is not read by alloylm",
                file=str(path),
                key="deepspeed_config.deepspeed_config_file",
                hint="write its ZeRO settings as deepspeed_config keys, as deepspeed_zero3.yaml does",
            )
        stage = int(ds.get("zero_stage", 2))
        if stage == 3 and not ds.get("zero3_save_16bit_model", False):
            raise ConfigError(
                "ZeRO-3 without zero3_save_16bit_model saves a ZeRO checkpoint (global_stepN/), "
                "not a model.safetensors artifact",
                file=str(path),
                key="deepspeed_config.zero3_save_16bit_model",
                hint="set zero3_save_16bit_model: true (the weights are gathered on save)",
            )
        return TrainingBackend("deepspeed", stage, deepspeed_config_for(ds), source=str(path))
    if kind == DistributedType.FSDP:
        fsdp = dict(cluster.fsdp_config or {})
        state_dict = str(fsdp.get("fsdp_state_dict_type", "FULL_STATE_DICT"))
        version = int(fsdp.get("fsdp_version", 1))
        if state_dict != "FULL_STATE_DICT":
            raise ConfigError(
                f"FSDP with fsdp_state_dict_type {state_dict} saves no model.safetensors",
                file=str(path),
                key="fsdp_config.fsdp_state_dict_type",
                hint="set fsdp_state_dict_type: FULL_STATE_DICT (the weights are gathered on save)",
            )
        if has_cuda is None:
            import torch

            has_cuda = torch.cuda.is_available()
        if not has_cuda:
            raise ConfigError(
                f"FSDP (fsdp_version {version}) does not run on CPU ranks through the Trainer: "
                "transformers and accelerate route CPU processes to DistributedType.MULTI_CPU and "
                "train plain DDP instead",
                file=str(path),
                key="distributed_type",
                hint="on CPU use --config-file deepspeed_zero3 with --launcher torchrun (ZeRO-3 "
                "shards like FSDP), or no config file for DDP; FSDP needs GPUs",
            )
        return TrainingBackend("fsdp", fsdp=fsdp, source=str(path))
    return TrainingBackend("ddp", source=str(path))


@contextmanager
def training_backend(backend: TrainingBackend | None) -> Iterator[None]:
    """Training arguments built inside this block use `backend` (None: the Trainer's default)."""
    if backend is None:
        yield
        return
    _ACTIVE.append(backend)
    try:
        yield
    finally:
        _ACTIVE.pop()


def active_backend() -> TrainingBackend | None:
    return _ACTIVE[-1] if _ACTIVE else None


def join_deepspeed_world(args: Any) -> None:
    """Join the launch's process group now, and hand it to DeepSpeed's communication layer.

    A model loaded next is partitioned by zero.Init, which reads the world size from
    `deepspeed.comm`; on CPU ranks accelerate starts a gloo group but never tells DeepSpeed, which
    would then partition for a world of one (and reject the batch sizes)."""
    _ = args.device  # TrainingArguments set up accelerate's PartialState: the process group
    import deepspeed
    import torch.distributed

    if torch.distributed.is_initialized() and not deepspeed.comm.is_initialized():
        if not torch.cuda.is_available() and os.environ.get("DS_BUILD_SHM_COMM") != "1":
            # DeepSpeed's CPU backend would JIT-compile a shared-memory all-reduce op here (a C++
            # build on first use, minutes on 2 cores, and a compiler needed); gloo does the same
            # reductions. DS_BUILD_SHM_COMM=1 keeps DeepSpeed's choice.
            deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False
        deepspeed.init_distributed(dist_backend=torch.distributed.get_backend())


def parameter_count(parameter: Any) -> int:
    """Elements of a parameter, also when ZeRO-3 holds only a shard of it here (`ds_numel`, as
    transformers counts)."""
    return int(getattr(parameter, "ds_numel", None) or parameter.numel())


def local_parameter_elements(model: Any) -> int:
    """Elements of parameter storage this process holds: its ZeRO-3 partitions (`ds_tensor`), or
    the whole parameters."""
    held = 0
    for parameter in model.parameters():
        shard = getattr(parameter, "ds_tensor", None)
        held += int(shard.numel()) if shard is not None else int(parameter.numel())
    return held


def is_partitioned(model: Any) -> bool:
    """Whether ZeRO-3 partitioned `model`'s parameters (zero.Init at load, or the engine)."""
    return any(hasattr(p, "ds_id") for p in model.parameters())


@contextmanager
def without_zero3_init() -> Iterator[None]:
    """Models loaded in this block are whole on this process even while a ZeRO-3 Trainer config
    is alive (transformers partitions every `from_pretrained` under it): for a one-process merge
    on the main rank after training."""
    from transformers.integrations import deepspeed as hf_deepspeed

    saved = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed._hf_deepspeed_config_weak_ref = None
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = saved


def adapter_state_dict(model: Any) -> dict[str, Any]:
    """The LoRA adapter's weights of a peft model, whole and on the CPU, on every process.

    Under ZeRO-3 the adapter's parameters are partitioned (0-element tensors here): they are
    gathered first (a collective call: every rank must enter it). The base weights are not."""
    from peft import get_peft_model_state_dict

    if not is_partitioned(model):
        return {k: v.detach().to("cpu") for k, v in get_peft_model_state_dict(model).items()}
    import deepspeed

    adapters = [p for name, p in model.named_parameters() if "lora_" in name]
    with deepspeed.zero.GatheredParameters(adapters, modifier_rank=None):
        return {
            k: v.detach().to("cpu").clone() for k, v in get_peft_model_state_dict(model).items()
        }
