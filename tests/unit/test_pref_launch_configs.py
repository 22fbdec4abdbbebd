"""Shipped accelerate configs load in accelerate; launcher command lines are what we expect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from alloylm.errors import ConfigError
from alloylm.pipeline import launch

SHIPPED = ("ddp", "fsdp", "deepspeed_zero3", "multinode")


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_accelerate_config_loads(name: str) -> None:
    from accelerate.commands.config.config_args import ClusterConfig

    config = ClusterConfig.from_yaml_file(str(launch.shipped_config(name)))  # unknown keys raise
    assert config.mixed_precision == "bf16"


def test_deepspeed_config_is_the_studys() -> None:
    import yaml

    data = yaml.safe_load(launch.shipped_config("deepspeed_zero3").read_text())
    assert data["distributed_type"] == "DEEPSPEED"
    ds = data["deepspeed_config"]
    assert (
        ds["zero_stage"] == 3
        and ds["zero3_init_flag"] is True
        and ds["zero3_save_16bit_model"] is True
    )
    assert ds["offload_optimizer_device"] == "none" and ds["offload_param_device"] == "none"
    assert data["num_processes"] == 8


def test_multinode_config_spans_machines() -> None:
    import yaml

    data = yaml.safe_load(launch.shipped_config("multinode").read_text())
    assert data["num_machines"] > 1 and data["num_processes"] > 8 and "main_process_ip" in data


def test_torchrun_command(tmp_path: Path) -> None:
    command = launch.build_command("torchrun", 2, None, tmp_path / "spec.json")
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert "--nproc_per_node=2" in command
    assert command[-3:] == ["-m", "alloylm.pipeline.worker", str(tmp_path / "spec.json")]


def test_accelerate_command_with_short_config_name(tmp_path: Path) -> None:
    config = launch.resolve_config_file("deepspeed_zero3")
    command = launch.build_command("accelerate", 8, config, tmp_path / "spec.json")
    assert command[:3] == [sys.executable, "-m", "accelerate.commands.launch"]
    assert command[command.index("--config_file") + 1].endswith(
        "alloylm/resources/accelerate/deepspeed_zero3.yaml"
    )
    assert "--num_processes=8" in command


def test_bad_launch_settings_are_config_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="unknown launcher"):
        launch.build_command("mpirun", 2, None, tmp_path / "s.json")
    # torchrun takes a config file since ZeRO-3 on CPU ranks (issue 28): each rank's worker reads
    # it from the launch spec, so the torchrun command line itself carries none
    command = launch.build_command("torchrun", 2, "x.yaml", tmp_path / "s.json")
    assert "x.yaml" not in command and "--config_file" not in command
    with pytest.raises(ConfigError, match="no shipped accelerate config"):
        launch.resolve_config_file("deepspeed_zero2")
    with pytest.raises(ConfigError, match="does not exist"):
        launch.resolve_config_file("configs/missing.yaml")


def test_spec_clears_markers_of_an_earlier_launch(tmp_path: Path) -> None:
    ranks = tmp_path / "state" / launch.RANKS_DIR
    ranks.mkdir(parents=True)
    (ranks / "rank-1.json").write_text('{"rank": 1}')
    fields = {
        "stage_name": "s",
        "work_dir": str(tmp_path / "w"),
        "state_dir": str(tmp_path / "state"),
    }
    spec = launch.write_spec("dpo", {"kind": "dpo"}, fields, "torchrun", 2)
    assert spec.exists() and launch.rank_markers(tmp_path / "state") == []
