"""QLoRA options: valid config everywhere, a clear error without CUDA/bitsandbytes, and the
full-precision merge that gives a plain model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")


def test_qlora_config_validates_and_cpu_run_stops_clearly(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.contract import StageContext
    from alloylm.errors import ConfigError
    from alloylm.stages import dpo

    if torch.cuda.is_available():
        pytest.skip("this checks the error on machines without CUDA")
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n")
    cfg = dpo.Config(model=str(tiny_llama), data=[{"path": str(data)}],
                     train={"max_steps": 1, "lora": {"r": 4, "quantize": "4bit"}})  # fmt: skip
    assert cfg.train.lora.quantize == "4bit"
    (tmp_path / "work").mkdir()
    ctx = StageContext("dpo", "t", 0, tmp_path / "work", tmp_path / "state", tmp_path)
    with pytest.raises(ConfigError, match="needs a CUDA GPU") as error:
        dpo.run(ctx, cfg)
    assert error.value.key == "train.lora.quantize"
    assert not any(tmp_path.joinpath("work").iterdir())  # nothing written


def test_full_precision_merge_equals_peft_merge(tiny_llama: Path) -> None:
    from alloylm.models.loading import load_causal_lm
    from alloylm.train.config import LoraConfig
    from alloylm.train.lora import wrap_with_lora
    from alloylm.train.qlora import merge_adapter_into_full_precision

    lora = LoraConfig(r=4, alpha=8, dropout=0.0, quantize="4bit")
    trained = wrap_with_lora(load_causal_lm(tiny_llama), lora)
    with torch.no_grad():  # a "trained" adapter: B is zero at init, give it values
        for name, parameter in trained.named_parameters():
            if "lora_B" in name:
                parameter.normal_(0, 0.05)
    merged = merge_adapter_into_full_precision(trained, lora, dtype="float32")
    expected = trained.merge_and_unload().state_dict()
    state = merged.state_dict()
    assert not any("lora" in key for key in state)
    assert state.keys() == expected.keys()
    assert all(torch.allclose(state[k], expected[k], atol=1e-6) for k in state)
    base = load_causal_lm(tiny_llama).state_dict()
    assert any(not torch.equal(state[k], base[k]) for k in state)  # the adapter was merged in
