"""What ZeRO-3 and FSDP change in the files and counts alloylm reads (no launch needed).

- A DeepSpeed checkpoint may hold its weights only in `global_stepN/` (named by `latest`) and an
  FSDP one in `pytorch_model_fsdp_0/`: both are complete checkpoints, never deleted as torn.
- A save that wrote no weights is an error, not a success.
- Parameter counts of a ZeRO-3 model come from `ds_numel` (its local tensors have 0 elements).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from alloylm.errors import AlloyError
from alloylm.train.checkpoints import is_complete_checkpoint, remove_torn_checkpoints


def _state(folder: Path, step: int) -> None:
    (folder / "trainer_state.json").write_text(json.dumps({"global_step": step}))


def test_zero_and_fsdp_checkpoint_layouts_are_complete(tmp_path: Path) -> None:
    zero = tmp_path / "checkpoint-4"
    (zero / "global_step4").mkdir(parents=True)
    (zero / "global_step4" / "zero_pp_rank_0_mp_rank_00_model_states.pt").write_bytes(b"x")
    (zero / "latest").write_text("global_step4")
    _state(zero, 4)
    fsdp = tmp_path / "checkpoint-6"
    (fsdp / "pytorch_model_fsdp_0").mkdir(parents=True)
    (fsdp / "pytorch_model_fsdp_0" / "__0_0.distcp").write_bytes(b"x")
    _state(fsdp, 6)
    killed = tmp_path / "checkpoint-8"  # killed while DeepSpeed wrote: no trainer_state.json
    (killed / "global_step8").mkdir(parents=True)
    (killed / "latest").write_text("global_step8")
    empty_tag = tmp_path / "checkpoint-10"  # `latest` names a folder that holds nothing
    (empty_tag / "global_step10").mkdir(parents=True)
    (empty_tag / "latest").write_text("global_step10")
    _state(empty_tag, 10)

    assert is_complete_checkpoint(zero) and is_complete_checkpoint(fsdp)
    assert not is_complete_checkpoint(killed) and not is_complete_checkpoint(empty_tag)
    assert sorted(p.name for p in remove_torn_checkpoints(tmp_path)) == [
        "checkpoint-10",
        "checkpoint-8",
    ]
    assert zero.is_dir() and fsdp.is_dir()


def test_a_save_without_weights_is_an_error(tmp_path: Path) -> None:
    from alloylm.train._trl import check_saved_weights

    (tmp_path / "global_step6").mkdir()
    (tmp_path / "zero_to_fp32.py").write_text("")
    with pytest.raises(AlloyError, match="no model.safetensors") as error:
        check_saved_weights(tmp_path)
    assert "zero3_save_16bit_model" in (error.value.hint or "")
    (tmp_path / "model.safetensors").write_bytes(b"x")
    check_saved_weights(tmp_path)


def test_parameter_counts_of_a_zero3_partitioned_model() -> None:
    """Under ZeRO-3 each parameter's local tensor is empty; `ds_numel` is its real size."""
    from alloylm.train.distributed import local_parameter_elements, parameter_count
    from alloylm.train.lora import trainable_parameter_count

    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2, bias=False))
    assert trainable_parameter_count(model) == (4 * 3 + 3 + 3 * 2, 4 * 3 + 3 + 3 * 2)
    for parameter in model.parameters():
        parameter.ds_numel = parameter.numel()
        parameter.ds_tensor = torch.empty((parameter.numel() + 1) // 2)  # this rank's half
        parameter.data = torch.empty(0)
    model[1].weight.requires_grad_(False)
    assert trainable_parameter_count(model) == (15, 21)
    assert parameter_count(model[0].weight) == 12
    assert local_parameter_elements(model) == 6 + 2 + 3
