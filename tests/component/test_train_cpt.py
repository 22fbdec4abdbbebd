"""CPT stage on the tiny Llama: trains, saves a plain HF model, resumes after interruption."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from alloylm.contract import Progress, StageContext
from alloylm.stages import cpt

STEPS = 6


class Interrupted(Exception):
    pass


class InterruptAt(Progress):
    """Stops training at `step` (after checkpoint `step - 1` was written), like a kill."""

    def __init__(self, step: int) -> None:
        self.step = step
        self.updates: list[tuple[int, dict]] = []

    def update(self, step, **fields):
        self.updates.append((step, fields))
        if step >= self.step:
            raise Interrupted(f"interrupted at step {step}")

    def log(self, message):
        pass


class Quiet(Progress):
    def __init__(self) -> None:
        self.updates: list[tuple[int, dict]] = []

    def update(self, step, **fields):
        self.updates.append((step, fields))

    def log(self, message):
        pass


def make_config(data_root: Path, **train) -> cpt.Config:
    corpus = data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl"
    return cpt.Config(
        model="tiny:llama",
        data=[{"path": str(corpus), "limit": 12, "holdout": {"fraction": 0.25, "key": "module"}}],
        train={
            "max_steps": STEPS,
            "max_seq_length": 64,
            "per_device_batch_size": 2,
            "learning_rate": 1e-2,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
            "save_steps": 3,
            **train,
        },
    )


def run_stage(root: Path, cfg: cpt.Config, progress: Progress, work: str = "work"):
    ctx = StageContext(
        stage_name="cpt",
        run_name="test",
        seed=42,
        work_dir=root / work,
        state_dir=root / "state",
        output_root=root,
        progress=progress,
    )
    ctx.work_dir.mkdir(parents=True, exist_ok=True)
    return cpt.run(ctx, cfg)


def load_weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory, data_root, tiny_llama):
    root = tmp_path_factory.mktemp("cpt_full")
    progress = Quiet()
    result = run_stage(root, make_config(data_root), progress)
    return root, result, progress


def test_cpt_trains_and_saves_a_plain_model(uninterrupted, tiny_llama):
    root, result, progress = uninterrupted
    metrics = result.metrics
    losses = [loss for _, loss in metrics["loss_history"]]
    assert len(losses) == STEPS and all(math.isfinite(x) for x in losses)
    assert losses[-1] < losses[0]
    assert metrics["real_token_fraction"] >= 0.99
    assert metrics["tokens_trained"] == STEPS * 2 * 64
    assert progress.updates and progress.updates[-1][0] == STEPS
    assert "loss" in progress.updates[-1][1] and "tokens_per_s" in progress.updates[-1][1]

    before, after = load_weights(tiny_llama), load_weights(root / "work")
    assert before.keys() == after.keys()
    changed = [name for name in before if not (before[name] == after[name]).all()]
    assert len(changed) == len(before)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(root / "work")
    tokenizer = AutoTokenizer.from_pretrained(root / "work")
    assert model.config.num_hidden_layers == 2 and tokenizer.chat_template
    assert not (root / "work" / "training_args.bin").exists()


def test_cpt_writes_heldout_documents(uninterrupted):
    root, result, _ = uninterrupted
    rows = [json.loads(line) for line in (root / "work" / "heldout.jsonl").read_text().splitlines()]
    assert rows and len(rows) == result.details["heldout_documents"]
    source = result.details["sources"][0]
    assert source["holdout"]["heldout_records"] == len(rows)
    assert source["train_records"] + len(rows) == 12
    assert result.details["document_separator"] == {"position": "bos", "token": "<|im_start|>"}


def test_cpt_resumes_after_interruption_to_the_same_result(uninterrupted, tmp_path, data_root):
    full_root, full, _ = uninterrupted
    cfg = make_config(data_root)
    with pytest.raises(Interrupted):
        run_stage(tmp_path, cfg, InterruptAt(4), work="work1")
    assert (tmp_path / "state" / "checkpoints" / "checkpoint-3").is_dir()

    resumed = run_stage(tmp_path, cfg, Quiet(), work="work2")
    assert resumed.metrics["resumed_from_step"] == 3
    assert resumed.metrics["steps"] == STEPS
    full_losses = [loss for _, loss in full.metrics["loss_history"]]
    resumed_losses = [loss for _, loss in resumed.metrics["loss_history"]]
    assert resumed_losses == pytest.approx(full_losses, rel=1e-4)

    a, b = load_weights(full_root / "work"), load_weights(tmp_path / "work2")
    for name in a:
        assert (a[name] - b[name]).abs().max().item() < 1e-4, name


def test_checkpoints_are_removed_after_success(uninterrupted):
    root, _, _ = uninterrupted
    assert not list((root / "state" / "checkpoints").glob("checkpoint-*"))


def test_training_arguments_follow_the_train_block(tmp_path):
    from trl import DPOConfig

    from alloylm.train._trl import build_training_args
    from alloylm.train.config import TrainConfig

    train = TrainConfig(max_steps=7, warmup_ratio=0.1, learning_rate=3e-4, dtype="float32")
    args = build_training_args(train, tmp_path, seed=5)
    assert (args.max_steps, args.learning_rate, args.warmup_steps, args.seed) == (7, 3e-4, 0.1, 5)
    assert not args.bf16 and not args.activation_checkpointing  # TRL defaults both to True
    assert args.dataset_kwargs == {"skip_prepare_dataset": True}
    dpo = build_training_args(train, tmp_path, seed=5, args_class=DPOConfig, beta=0.2)
    assert isinstance(dpo, DPOConfig) and dpo.beta == 0.2 and dpo.max_steps == 7


class CheckpointsWhenTrainingEnds(Quiet):
    """Lists the stage's checkpoints at the end of training, before the stage tidies up."""

    def __init__(self, folder: Path) -> None:
        super().__init__()
        self.folder = folder
        self.seen: list[str] = []

    def finish(self) -> None:
        self.seen = sorted(p.name for p in self.folder.glob("checkpoint-*"))


def test_no_checkpoint_is_written_after_the_last_step(tmp_path, data_root, tiny_llama):
    """transformers saves a checkpoint after the last step; the stage saves the model itself and
    drops checkpoints on success, so that one (3x the model's size) would be written for nothing."""
    progress = CheckpointsWhenTrainingEnds(tmp_path / "state" / "checkpoints")
    run_stage(tmp_path, make_config(data_root), progress)
    assert progress.seen == ["checkpoint-3"]  # the periodic one (save_steps 3), not checkpoint-6
