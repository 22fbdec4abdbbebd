"""Every shipped accelerate config is read by accelerate's own classes, as `accelerate launch`
reads it: the launch command's validation merges the file into its arguments, the launcher builds
the ranks' environment, and the FSDP / DeepSpeed plugin is constructed from that environment (so
an unknown key, a misspelled strategy or a value of the wrong type fails here, not on a GPU
cluster). Then alloylm's own reading (train/distributed.py): what it runs, what it refuses."""

from __future__ import annotations

import os
from pathlib import Path
from unittest import mock

import pytest

from alloylm.errors import ConfigError
from alloylm.resources import accelerate_dir
from alloylm.train.distributed import read_launch_config

SHIPPED = sorted(p.stem for p in accelerate_dir().glob("*.yaml"))


def test_the_shipped_configs_are_the_documented_ones() -> None:
    assert SHIPPED == ["ddp", "deepspeed_zero3", "fsdp", "fsdp2", "multinode"]


def accelerate_launch_plugin(path: Path) -> object | None:
    """What `accelerate launch --config_file path` builds on each rank: the FSDP or DeepSpeed
    plugin (None for plain DDP). Mirrors accelerate.commands.launch.launch_command."""
    from accelerate.commands.launch import _validate_launch_command, launch_command_parser
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin
    from accelerate.utils.launch import prepare_deepspeed_cmd_env, prepare_multi_gpu_env

    args = launch_command_parser().parse_args(["--config_file", str(path), "train.py"])
    args, defaults, mp_from_config = _validate_launch_command(args)
    if args.use_deepspeed:
        fields = list(defaults.deepspeed_config.keys()) if defaults else []
        args.deepspeed_fields_from_accelerate_config = ",".join(
            [*fields, "mixed_precision"] if mp_from_config else fields
        )
        _, env = prepare_deepspeed_cmd_env(args)
        with mock.patch.dict(os.environ, env):
            return DeepSpeedPlugin()
    if args.use_fsdp:
        env = prepare_multi_gpu_env(args)
        # FSDP1's sync_module_states refuses a machine without an accelerator; the ranks run on GPUs
        with (
            mock.patch.dict(os.environ, env),
            mock.patch(
                "accelerate.utils.dataclasses.get_torch_accelerator_backend",
                return_value=("cuda", None),
            ),
        ):
            return FullyShardedDataParallelPlugin()
    assert args.multi_gpu or args.num_processes >= 1
    return None


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_config_loads_through_accelerate(name: str) -> None:
    from accelerate.utils import DeepSpeedPlugin, FullyShardedDataParallelPlugin

    path = accelerate_dir() / f"{name}.yaml"
    plugin = accelerate_launch_plugin(path)
    if name in ("deepspeed_zero3", "multinode"):
        assert isinstance(plugin, DeepSpeedPlugin)
        assert plugin.zero_stage == 3 and plugin.zero3_init_flag and plugin.zero3_save_16bit_model
    elif name.startswith("fsdp"):
        assert isinstance(plugin, FullyShardedDataParallelPlugin)
        assert plugin.fsdp_version == (2 if name == "fsdp2" else 1)
        assert plugin.state_dict_type.name == "FULL_STATE_DICT"
    else:
        assert plugin is None
    backend = read_launch_config(path, has_cuda=True)
    assert backend.kind == {"ddp": "ddp", "fsdp": "fsdp", "fsdp2": "fsdp"}.get(name, "deepspeed")


def test_an_unknown_key_is_refused_by_accelerate(tmp_path: Path) -> None:
    text = (accelerate_dir() / "ddp.yaml").read_text() + "num_procesess: 4\n"
    (tmp_path / "bad.yaml").write_text(text)
    with pytest.raises(ConfigError, match="num_procesess") as error:
        read_launch_config(tmp_path / "bad.yaml")
    assert error.value.file == str(tmp_path / "bad.yaml")


def test_fsdp_on_cpu_is_refused_with_the_reason(tmp_path: Path) -> None:
    """The Trainer would route CPU ranks to DistributedType.MULTI_CPU and run DDP, silently."""
    for name in ("fsdp", "fsdp2"):
        with pytest.raises(ConfigError, match="MULTI_CPU") as error:
            read_launch_config(accelerate_dir() / f"{name}.yaml", has_cuda=False)
        assert error.value.key == "distributed_type" and "deepspeed_zero3" in error.value.hint


def test_configs_that_save_no_weights_are_refused(tmp_path: Path) -> None:
    """Defect 5: a ZeRO-3 config without 16-bit gathering on save writes global_stepN/, and
    FSDP's SHARDED_STATE_DICT no model.safetensors: refused before any rank starts."""
    zero3 = (accelerate_dir() / "deepspeed_zero3.yaml").read_text()
    (tmp_path / "z.yaml").write_text(
        zero3.replace("zero3_save_16bit_model: true", "zero3_save_16bit_model: false")
    )
    with pytest.raises(ConfigError, match="global_step") as error:
        read_launch_config(tmp_path / "z.yaml")
    assert error.value.key == "deepspeed_config.zero3_save_16bit_model"
    fsdp2 = (accelerate_dir() / "fsdp2.yaml").read_text()
    (tmp_path / "f.yaml").write_text(fsdp2.replace("FULL_STATE_DICT", "SHARDED_STATE_DICT"))
    with pytest.raises(ConfigError, match="SHARDED_STATE_DICT"):
        read_launch_config(tmp_path / "f.yaml", has_cuda=True)


def test_the_launch_refuses_before_starting_a_rank(tmp_path: Path) -> None:
    from alloylm.pipeline.launch import run_stage_distributed

    fields = {"stage_name": "s", "run_name": "t", "seed": 0, "work_dir": str(tmp_path / "w"),
              "state_dir": str(tmp_path / "s"), "output_root": str(tmp_path)}  # fmt: skip
    with (
        mock.patch("alloylm.pipeline.launch._run_streaming") as started,
        mock.patch("torch.cuda.is_available", return_value=False),
        pytest.raises(ConfigError, match="FSDP"),
    ):
        run_stage_distributed("sft", {}, fields, "torchrun", 2, "fsdp2", echo=False)
    started.assert_not_called()


def test_the_deepspeed_config_leaves_batch_and_precision_to_the_train_block() -> None:
    backend = read_launch_config(accelerate_dir() / "deepspeed_zero3.yaml")
    ds = backend.deepspeed
    assert ds["zero_optimization"] == {
        "stage": 3,
        "stage3_gather_16bit_weights_on_model_save": True,
    }
    assert ds["train_micro_batch_size_per_gpu"] == ds["gradient_accumulation_steps"] == "auto"
    assert (
        "bf16" not in ds and backend.zero3 and backend.shards_parameters
    )  # torch_autocast instead
