"""DeepSpeed ZeRO-3 on 2 CPU processes (torchrun, gloo) through alloylm's own distributed path,
for every training stage kind on tiny:llama.

Each stage is compared with the same stage in one process at the same global batch (2 ranks x 2
rows against 1 x 4 rows, fp32, data that fills every batch). Tolerance: every logged loss agrees to 1e-4 relative,
and the trained weights' distance to the one-process weights is at most 1e-3 of the training
update (||W_zero3 - W_one|| <= 1e-3 ||W_one - W_base||, over all tensors). Both runs do the same
arithmetic on the same rows, but not in the same order: each rank averages its own half of the
batch, gradients are summed by a reduce-scatter over gloo, and ZeRO-3 steps on flat partitions.
That reorders fp32 sums (about 1e-7 relative each). Adam divides each gradient by its own running
scale, so an element whose gradient is near zero (a tied embedding row of a token not in the
batch) can move by up to the learning rate on rounding alone: an element-wise bound would be
meaningless, the norm of the whole update is not. A wrong batch, a missing rank's gradient or a
dropped update moves the loss by 1e-2 or more and the weights by a sizeable part of the update.
Measured here (2026-12-08): dpo and LoRA sft within 1e-6 of the update, losses within 1e-6.
ORPO's NLL term is a mean over each rank's chosen prompt and reply tokens, so the pairs' prompts
and chosen replies have one length in tokens each: otherwise the mean of per-rank means differs
from the global mean, by design (as under DDP), not by sharding.

Each 2-rank launch costs tens of seconds of CPU; the tests are as few as the checks allow.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from alloylm.contract import Progress, StageContext
from alloylm.pipeline.launch import rank_markers, run_stage_distributed

if os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") != "1":
    pytest.importorskip("deepspeed", reason="the deepspeed extra is not installed")

REPO = Path(__file__).resolve().parents[2]
LOSS_RTOL = 1e-4
UPDATE_RTOL = 1e-3
TERMS = ["osteon", "tendon", "enzyme", "neuron", "collagen", "keratin", "chitin", "silk",
         "axon", "plasma", "cortex", "villus", "alveolus", "nephron", "sarcomere", "platelet"]  # fmt: skip
BASE_TRAIN = {"learning_rate": 1e-2, "lr_scheduler": "constant", "warmup_ratio": 0.0,
              "save_steps": 100, "dtype": "float32", "max_seq_length": 48}  # fmt: skip


class Quiet(Progress):
    def log(self, message: str) -> None:
        pass


def write_chat(path: Path) -> Path:
    rows = [{"question": f"What is {t}?", "answer": f"{t} is a part of the body."} for t in TERMS]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def write_pairs(path: Path, tokenizer_dir: Path) -> Path:
    """Pairs whose prompts, and whose chosen replies, have one length in tokens each (see the
    module docstring: ORPO's NLL is a per-rank mean over prompt and reply tokens)."""
    from transformers import AutoTokenizer

    rows = [{"prompt": f"What is item {c}?", "chosen": f"Item {c} is a part of the body.",
             "rejected": "blue blue."} for c in "abcdefghijklmnop"]  # fmt: skip
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
    for key in ("prompt", "chosen"):
        assert len({len(tokenizer(r[key])["input_ids"]) for r in rows}) == 1, key
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def fields(root: Path, name: str) -> dict[str, Any]:
    work = root / name / "work"
    work.mkdir(parents=True, exist_ok=True)
    return {"stage_name": name, "run_name": "t", "seed": 0, "work_dir": str(work),
            "state_dir": str(root / name / "state"), "output_root": str(root)}  # fmt: skip


def run_single(kind: str, config: Any, root: Path, name: str) -> Any:
    """The stage in this process (one rank), the baseline."""
    from alloylm.registry import STAGE_KINDS

    f = fields(root, name)
    ctx = StageContext(name, "t", 0, Path(f["work_dir"]), Path(f["state_dir"]), root, Quiet())
    return STAGE_KINDS.get(kind).run(ctx, config)


def run_zero3(kind: str, config: Any, root: Path, name: str, **kwargs: Any) -> Any:
    return run_stage_distributed(
        kind, config.model_dump(mode="json"), fields(root, name), "torchrun", 2,
        "deepspeed_zero3", echo=False, **kwargs,
    )  # fmt: skip


def assert_same_losses(zero3: dict[str, Any], single: dict[str, Any]) -> None:
    a, b = zero3["loss_history"], single["loss_history"]
    assert [s for s, _ in a] == [s for s, _ in b] and a
    for (step, x), (_, y) in zip(a, b, strict=True):
        assert math.isclose(x, y, rel_tol=LOSS_RTOL), (step, x, y)


def assert_same_artifact(zero3_dir: Path, single_dir: Path, base_dir: Path) -> None:
    """Same tensor names, shapes and dtypes; the same training update within UPDATE_RTOL."""
    from safetensors.torch import load_file

    assert sorted(p.name for p in zero3_dir.glob("*.safetensors")) == ["model.safetensors"]
    a, b = (
        load_file(str(zero3_dir / "model.safetensors")),
        load_file(str(single_dir / "model.safetensors")),
    )
    base = load_file(str(base_dir / "model.safetensors"))
    assert a.keys() == b.keys() == base.keys()
    for key in a:
        assert a[key].shape == b[key].shape and a[key].dtype == b[key].dtype, key
    apart = sum(float((a[k] - b[k]).double().norm()) ** 2 for k in a) ** 0.5
    update = sum(float((b[k] - base[k]).double().norm()) ** 2 for k in a) ** 0.5
    assert update > 0 and apart <= UPDATE_RTOL * update, (apart, update)


def assert_sharded(state_dir: Path) -> None:
    """Each rank loaded its model partitioned (zero.Init) and holds about half its storage."""
    markers = rank_markers(state_dir)
    assert [m["rank"] for m in markers] == [0, 1]
    assert all(m["backend"] == "deepspeed" and m["partitioned_at_load"] for m in markers)
    assert all(m["distributed_type"] == "DEEPSPEED" for m in markers)
    for m in markers:
        assert abs(m["parameter_elements_held"] / m["total_parameters"] - 0.5) < 0.02, m


@pytest.mark.timeout(600)
def test_sft_under_zero3_through_alloy_run(tiny_llama: Path, tmp_path: Path) -> None:
    """`alloy run --launcher torchrun --num-processes 2 --config-file deepspeed_zero3`: the same
    losses as one process, real sharding, one plain model.safetensors with lineage."""
    from alloylm.stages import sft

    data = write_chat(tmp_path / "chat.jsonl")
    train = {**BASE_TRAIN, "max_steps": 3}
    recipe = {"run": {"name": "z3", "output": "out", "seed": 0},
              "stages": {"tuned": {"kind": "sft", "model": "tiny:llama", "data": [{"path": str(data)}],
                                   "train": {**train, "per_device_batch_size": 2}}}}  # fmt: skip
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(recipe))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-m", "alloylm.cli.main", "run", str(path), "--launcher", "torchrun",
         "--num-processes", "2", "--config-file", "deepspeed_zero3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=500,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    artifact = tmp_path / "out" / "tuned"
    manifest = json.loads((artifact / "alloy.json").read_text())

    single_cfg = sft.Config(model="tiny:llama", data=[{"path": str(data)}],
                            train={**train, "per_device_batch_size": 4})  # fmt: skip
    single = run_single("sft", single_cfg, tmp_path / "single", "tuned").metrics
    assert_same_losses(manifest["metrics"], single)
    assert manifest["metrics"]["total_parameters"] == single["total_parameters"]
    assert_same_artifact(artifact, tmp_path / "single" / "tuned" / "work", tiny_llama)
    assert_sharded(tmp_path / "out" / ".alloy" / "state" / "tuned")
    assert manifest["kind"] == "sft" and manifest["parents"] and manifest["data_hashes"]
    from transformers import AutoModelForCausalLM

    AutoModelForCausalLM.from_pretrained(str(artifact))  # a plain transformers folder
    assert not any(artifact.rglob("global_step*")) and not (artifact / "zero_to_fp32.py").exists()


@pytest.mark.timeout(600)
def test_cpt_under_zero3_resumes_after_kill9_of_one_rank(
    tiny_llama: Path, tmp_path: Path, data_root: Path
) -> None:
    """Rank 1 is killed (SIGKILL) after step 3; the rerun resumes from checkpoint-2 and ends with
    the losses and weights of an uninterrupted one-process run."""
    from alloylm.errors import AlloyError
    from alloylm.stages import cpt
    from alloylm.train.checkpoints import latest_checkpoint

    corpus = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    train = {**BASE_TRAIN, "max_steps": 4, "save_steps": 2, "max_seq_length": 32}

    def config(batch: int) -> cpt.Config:
        return cpt.Config(model="tiny:llama", data=[{"path": str(corpus), "limit": 6}],
                          train={**train, "per_device_batch_size": batch})  # fmt: skip

    flag = tmp_path / "kill-rank-1"
    flag.touch()
    env = {"ALLOY_TEST_KILL_FLAG": str(flag),
           "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "src"), os.environ.get("PYTHONPATH", "")])}  # fmt: skip
    with pytest.raises(AlloyError, match="failed"):
        run_zero3("cpt", config(2), tmp_path, "cpt", stage_module="tests.zero3_stages", env=env)
    assert not flag.exists()  # rank 1 reached step 3 and killed itself
    state = tmp_path / "cpt" / "state"
    checkpoint = latest_checkpoint(state / "checkpoints")
    assert checkpoint is not None and checkpoint.name == "checkpoint-2"
    assert (checkpoint / "latest").is_file()  # a ZeRO checkpoint: partitioned optimizer state

    resumed = run_zero3(
        "cpt", config(2), tmp_path, "cpt", stage_module="tests.zero3_stages", env=env
    )
    assert resumed.metrics["resumed_from_step"] == 2 and resumed.metrics["steps"] == 4
    single = run_single("cpt", config(4), tmp_path / "single", "cpt").metrics
    assert single["packed_rows"] >= 4 * 4  # every step's batch is full in both runs
    assert_same_losses(resumed.metrics, single)
    assert_same_artifact(
        tmp_path / "cpt" / "work", tmp_path / "single" / "cpt" / "work", tiny_llama
    )
    assert_sharded(state)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("precompute", [True, False], ids=["precomputed-ref", "online-ref"])
def test_dpo_under_zero3(tiny_llama: Path, tmp_path: Path, precompute: bool) -> None:
    """DPO's reference model under ZeRO-3: log-probs precomputed before training (TRL scores them
    through a DeepSpeed inference engine), or a reference model TRL builds and shards itself."""
    from alloylm.stages import dpo

    data = write_pairs(tmp_path / "pairs.jsonl", tiny_llama)

    def config(batch: int) -> dpo.Config:
        return dpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], beta=0.1,
                          precompute_ref_log_probs=precompute,
                          train={**BASE_TRAIN, "max_steps": 3, "learning_rate": 1e-3,
                                 "per_device_batch_size": batch})  # fmt: skip

    zero3 = run_zero3("dpo", config(2), tmp_path, "dpo").metrics
    single = run_single("dpo", config(4), tmp_path / "single", "dpo").metrics
    assert_same_losses(zero3, single)
    assert zero3["total_parameters"] == single["total_parameters"] > 0
    assert math.isclose(
        zero3["reward_margin_last"], single["reward_margin_last"], rel_tol=1e-3, abs_tol=1e-5
    )
    assert_same_artifact(
        tmp_path / "dpo" / "work", tmp_path / "single" / "dpo" / "work", tiny_llama
    )
    assert_sharded(tmp_path / "dpo" / "state")


@pytest.mark.timeout(600)
def test_orpo_under_zero3(tiny_llama: Path, tmp_path: Path) -> None:
    from alloylm.stages import orpo

    data = write_pairs(tmp_path / "pairs.jsonl", tiny_llama)

    def config(batch: int) -> orpo.Config:
        return orpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], beta=0.5,
                           train={**BASE_TRAIN, "max_steps": 3, "learning_rate": 1e-3,
                                  "per_device_batch_size": batch})  # fmt: skip

    zero3 = run_zero3("orpo", config(2), tmp_path, "orpo").metrics
    single = run_single("orpo", config(4), tmp_path / "single", "orpo").metrics
    assert_same_losses(zero3, single)
    assert_same_artifact(
        tmp_path / "orpo" / "work", tmp_path / "single" / "orpo" / "work", tiny_llama
    )
    assert_sharded(tmp_path / "orpo" / "state")


@pytest.mark.timeout(600)
def test_lora_sft_under_zero3_merges_the_gathered_adapter(tiny_llama: Path, tmp_path: Path) -> None:
    """LoRA under ZeRO-3 with merge_adapter: the merged artifact equals the one-process one (a
    merge of partitioned weights would leave the base unchanged)."""
    from safetensors.torch import load_file

    from alloylm.stages import sft

    data = write_chat(tmp_path / "chat.jsonl")

    def config(batch: int) -> sft.Config:
        return sft.Config(model=str(tiny_llama), data=[{"path": str(data)}],
                          train={**BASE_TRAIN, "max_steps": 3, "per_device_batch_size": batch,
                                 "lora": {"r": 4, "alpha": 8}})  # fmt: skip

    zero3 = run_zero3("sft", config(2), tmp_path, "sft").metrics
    single = run_single("sft", config(4), tmp_path / "single", "sft").metrics
    assert_same_losses(zero3, single)
    assert (zero3["trainable_parameters"], zero3["total_parameters"]) == (
        single["trainable_parameters"], single["total_parameters"])  # fmt: skip
    artifact = tmp_path / "sft" / "work"
    assert_same_artifact(artifact, tmp_path / "single" / "sft" / "work", tiny_llama)
    base, merged = (
        load_file(str(tiny_llama / "model.safetensors")),
        load_file(str(artifact / "model.safetensors")),
    )
    changed = [k for k in base if not (base[k] == merged[k]).all()]
    assert any("q_proj" in k for k in changed)  # the adapter was merged into the weights
    assert not any("lora_" in k for k in merged)
