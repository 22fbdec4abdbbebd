"""The memory plan (train/memory_plan.py) against numbers computed by hand, and its printing."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.train.memory_plan import (
    KNOWN_CONFIGS,
    NF4_BYTES_PER_PARAM,
    Launch,
    ModelShape,
    StageShape,
    effective_batch,
    plan_memory,
    what_would_fit,
)

RECIPES = Path(__file__).resolve().parents[2] / "recipes"
TINY = ModelShape.from_config(KNOWN_CONFIGS["tiny:llama"])
# tiny:llama: vocab 49152, hidden 64, 2 layers, 4 heads (head_dim 16), 2 KV heads (kv 32),
# intermediate 128, tied. One layer's linears: q 64x64 + k 64x32 + v 64x32 + o 64x64 + gate, up
# 64x128 + down 128x64 = 4096 + 2048 + 2048 + 4096 + 3 x 8192 = 36864; + 2 norms of 64 = 36992.
# Parameters: 2 x 36992 + embedding 49152 x 64 (3145728) + final norm 64 = 3219776.
P = 3_219_776


def test_parameter_counts_by_hand():
    assert TINY.layer_linear_params == 36864
    assert TINY.params == P
    # SmolLM2-135M (the embedded model): 134,515,008 parameters, its published count
    assert ModelShape.from_config(KNOWN_CONFIGS["embedded:smollm2-135m-instruct"]).params == (
        134_515_008
    )
    # Llama-3.1-8B: 8,030,261,248 parameters (untied head)
    assert ModelShape.from_config(KNOWN_CONFIGS["meta-llama/Llama-3.1-8B"]).params == (
        8_030_261_248
    )
    # LoRA r=8 on all linears: 2 layers x 8 x sum(in + out) = 2 x 8 x 1024
    assert TINY.lora_params(8) == 16384


def test_one_process_full_fine_tuning_by_hand():
    stage = StageShape(kind="cpt", batch=1, seq_len=8, precision="bfloat16")
    plan = plan_memory(TINY, stage, Launch())
    assert plan.parts["weights"] == 4 * P  # fp32 weights under bf16 autocast
    assert plan.parts["gradients"] == 4 * P
    assert plan.parts["optimizer"] == 8 * P  # two fp32 Adam moments
    # per token and layer: 36 x 64 + 6 x 32 + 8 x 128 = 3520 bytes; 8 tokens, 2 layers, plus
    # the fp32 residual (8 x 64 x 4) entering the head
    assert plan.parts["activations"] == 2 * 8 * 3520 + 8 * 64 * 4 == 58368
    # with checkpointing: each layer's fp32 input, plus one layer recomputed
    assert plan.activations_with_checkpointing == 2 * 8 * 64 * 4 + 8 * 3520 == 32256
    # the head's bf16 output, its fp32 copy and log-softmax: 8 x 49152 x (2 + 8)
    assert plan.parts["logits"] == 3_932_160
    assert "reference" not in plan.parts and "runtime" not in plan.parts
    assert plan.total == 16 * P + 58368 + 3_932_160
    checkpointed = plan_memory(TINY, StageShape("cpt", 1, 8, gradient_checkpointing=True), Launch())
    assert checkpointed.parts["activations"] == 32256
    fp32 = plan_memory(TINY, StageShape("cpt", 1, 8, precision="float32"), Launch())
    # 28 x 64 + 12 x 32 + 16 x 128 = 4224 per token and layer; fp32 logits 4 + 8
    assert fp32.parts["activations"] == 2 * 8 * 4224 + 8 * 64 * 4
    assert fp32.parts["logits"] == 8 * 49152 * 12


def test_ddp_replicates_and_zero3_shards_by_hand():
    stage = StageShape(kind="sft", batch=1, seq_len=8)
    single = plan_memory(TINY, stage, Launch())
    ddp = plan_memory(TINY, stage, Launch("ddp", 4))
    assert ddp.parts == single.parts  # every rank holds everything
    zero = plan_memory(TINY, stage, Launch("zero3", 2))
    assert zero.parts["weights"] == 2 * P // 2  # bf16 working copy, halved
    # bf16 gradient partition, plus DeepSpeed's reduce bucket (all P < 5e8 elements) and the
    # interleaved copy reduce_scatter_coalesced makes of it
    assert zero.parts["gradients"] == 2 * P // 2 + 2 * 2 * P
    assert zero.parts["optimizer"] == (8 + 4) * P // 2  # moments + fp32 master weights
    # P < stage3_max_live_parameters (1e9): every parameter stays gathered, in bf16
    assert zero.parts["gathered"] == 2 * P
    # 16-bit residual: 32 x 64 + 6 x 32 + 8 x 128 = 3264 per token and layer
    assert zero.parts["activations"] == 2 * 8 * 3264 + 8 * 64 * 2
    fsdp = plan_memory(TINY, stage, Launch("fsdp", 2))
    assert fsdp.parts["gradients"] == 2 * P // 2
    # one unit computed and one prefetched, or the embedding (3145728 parameters) when larger
    assert fsdp.parts["gathered"] == 2 * 3_145_728
    llama = ModelShape.from_config(KNOWN_CONFIGS["meta-llama/Llama-3.1-8B"])
    big = plan_memory(llama, stage, Launch("zero3", 8))
    assert big.parts["gathered"] == 2 * 10**9  # capped at stage3_max_live_parameters
    assert big.parts["gradients"] == 2 * llama.params // 8 + 2 * 2 * 5 * 10**8


def test_dpo_reference_lora_and_4bit_by_hand():
    online = plan_memory(TINY, StageShape("dpo", 1, 8, reference=True), Launch())
    assert online.parts["reference"] == 4 * P
    # a pair is two rows: 16 tokens of logits
    assert online.parts["logits"] == 16 * 49152 * 10
    precomputed = plan_memory(TINY, StageShape("dpo", 1, 8, reference=False), Launch())
    assert "reference" not in precomputed.parts
    assert plan_memory(TINY, StageShape("orpo", 1, 8), Launch()).parts.keys() == (
        precomputed.parts.keys()
    )
    lora = plan_memory(TINY, StageShape("sft", 1, 8, lora_r=8), Launch())
    assert lora.parts["weights"] == 4 * P + 4 * 16384
    assert lora.parts["gradients"] == 4 * 16384
    assert lora.parts["optimizer"] == 8 * 16384
    qlora = plan_memory(TINY, StageShape("sft", 1, 8, lora_r=8, quantize="4bit"), Launch())
    quantized = 2 * 36864
    assert qlora.parts["weights"] == int(quantized * NF4_BYTES_PER_PARAM) + (
        (P - quantized) * 4 + 4 * 16384
    )
    assert qlora.parts["optimizer"] == lora.parts["optimizer"]


def test_chunked_loss_and_cpu_runtime():
    plan = plan_memory(TINY, StageShape("cpt", 4, 512, chunked_loss=True, on_cpu=True), Launch())
    assert plan.parts["logits"] == 2 * 4 * (1 << 25)
    assert plan.parts["runtime"] > 0


def test_what_would_fit_names_changes_that_fit_and_nothing_when_it_fits():
    llama = ModelShape.from_config(KNOWN_CONFIGS["meta-llama/Llama-3.1-8B"])
    stage = StageShape("cpt", 6, 3072, gradient_checkpointing=True, gradient_accumulation=2)
    device = 80 * 10**9
    single = plan_memory(llama, stage, Launch())
    assert single.total > device
    advice = what_would_fit(llama, stage, Launch(), device)
    assert any(a.startswith("ZeRO-3 over") for a in advice)
    assert any(a.startswith("QLoRA") for a in advice)
    zero8 = plan_memory(llama, stage, Launch("zero3", 8))
    assert zero8.total < device  # the study's launch fits 80 GB
    no_checkpointing = StageShape("cpt", 6, 3072)
    advice = what_would_fit(llama, no_checkpointing, Launch("zero3", 8), device)
    assert any(a.startswith("gradient_checkpointing: true") for a in advice)
    small = what_would_fit(llama, no_checkpointing, Launch("zero3", 8), device)
    assert any(a.startswith("per_device_batch_size:") for a in small)
    assert effective_batch(6, 2, 8) == 96


def _validate(capsys, *argv: str) -> str:
    from alloylm.cli.main import main

    assert main(["validate", *argv]) == 0
    return capsys.readouterr().out


def test_validate_prints_the_plan_and_warns_of_the_effective_batch(capsys):
    recipe = str(RECIPES / "paper" / "llama31_8b_base.yaml")
    out = _validate(capsys, recipe, "--no-data-check")
    assert "memory plan (estimated peak per device, one process)" in out
    assert "effective batch 12" in out
    assert "the recipe intends 96" in out and "--num-processes 8" in out
    study = _validate(
        capsys,
        recipe,
        "--no-data-check",
        "--launcher",
        "accelerate",
        "--num-processes",
        "8",
        "--config-file",
        "deepspeed_zero3",
        "--device-memory",
        "80GB",
    )
    assert "ZeRO-3 x 8" in study and "effective batch 96" in study
    assert "intends" not in study and "DOES NOT FIT" not in study
    small = _validate(capsys, recipe, "--no-data-check", "--device-memory", "80GB")
    assert "warning: stage cpt needs" in small and "would fit with: ZeRO-3 over" in small


@pytest.mark.parametrize(
    "recipe",
    sorted(
        p.relative_to(RECIPES).as_posix()
        for p in RECIPES.rglob("*.yaml")
        if "conversations" not in p.parts
    ),
)
def test_every_shipped_recipe_gets_a_plan(recipe, capsys):
    out = _validate(capsys, str(RECIPES / recipe), "--no-data-check")
    if any(f" {kind} " in out for kind in ("cpt", "sft", "dpo", "orpo")):
        assert "memory plan" in out
        assert "unknown shape" not in out


def test_a_bad_device_memory_is_refused_naming_the_option(capsys):
    from alloylm.cli.main import main

    recipe = str(RECIPES / "quickstart.yaml")
    assert main(["validate", recipe, "--no-data-check", "--device-memory", "80XB"]) == 2
    out = capsys.readouterr()
    assert "--device-memory" in out.err + out.out and "80XB" in out.err + out.out


def test_parse_memory():
    from alloylm.train.memory_plan import parse_memory

    assert parse_memory("80GB") == 80 * 10**9
    assert parse_memory("24 GiB") == 24 * 2**30
    assert parse_memory("512MB") == 512 * 10**6
    for bad in ("80XB", "0", "-1GB"):
        with pytest.raises(ValueError):
            parse_memory(bad)


def test_study_plan_prints_the_plan_and_its_json(capsys):
    import json

    from alloylm.cli.main import main

    recipe = str(RECIPES / "paper" / "study" / "llama31_8b.yaml")
    launch = [
        "--launcher",
        "accelerate",
        "--num-processes",
        "8",
        "--config-file",
        "deepspeed_zero3",
    ]
    assert main(["study", "plan", recipe, "--no-data-check", *launch]) == 0
    out = capsys.readouterr().out
    assert "memory plan (estimated peak per device, ZeRO-3 x 8)" in out
    assert (
        main(["study", "plan", recipe, "--no-data-check", "--json", "--device-memory", "80GB"]) == 0
    )
    rows = json.loads(capsys.readouterr().out)["memory_plan"]
    from alloylm.pipeline.load import load_pipeline

    stages = load_pipeline(recipe, [], check_data=False).stages.values()
    training = [s.name for s in stages if s.kind in ("cpt", "sft", "dpo", "orpo")]
    assert [r["stage"] for r in rows] == training
    assert {r["kind"] for r in rows} == {"cpt", "sft", "dpo", "orpo"}
    cpt = next(r for r in rows if r["stage"] == "base_cpt")
    assert cpt["effective_batch"] == 12 and cpt["intended_effective_batch"] == 96
    assert cpt["fits"] is False and cpt["would_fit_with"]
    assert cpt["memory"]["total"] == sum(cpt["memory"]["parts"].values())
