"""DPO with precomputed reference log-probs scores only the pairs training draws (issue 16, item 4):
max_steps=2 over 40 pairs scores 4 of them, trains exactly as scoring all 40 does, and a longer
rerun scores only the rows it adds."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from alloylm.contract import StageContext

TERMS = [f"term{i} " + "word " * (i % 7) for i in range(40)]  # varied lengths: padding differs
TRAIN = {"max_steps": 2, "learning_rate": 2.0e-3, "per_device_batch_size": 2, "max_seq_length": 48,
         "warmup_ratio": 0.0, "lr_scheduler": "constant", "logging_steps": 1,
         # float32: bf16 autocast (dtype auto on a CPU with AVX512-BF16) rounds a row's log-prob
         # differently with other rows beside it, and this test compares two row subsets exactly
         "dtype": "float32"}  # fmt: skip


def _pairs(path: Path) -> Path:
    lines = [
        json.dumps({"prompt": f"What is {t}?", "chosen": f"{t} is a {t}.", "rejected": "blue."})
        for t in TERMS
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(tiny_llama: Path, tmp_path: Path, name: str, state: str, max_steps: int = 2):
    from alloylm.stages import dpo

    work = tmp_path / name
    work.mkdir()
    data = tmp_path / "pairs.jsonl"
    if not data.exists():
        _pairs(data)
    cfg = dpo.Config(model=str(tiny_llama), data=[{"path": str(data)}], beta=0.1,
                     precompute_ref_log_probs=True, train={**TRAIN, "max_steps": max_steps})  # fmt: skip
    ctx = StageContext("dpo", "test", 0, work, tmp_path / state, tmp_path)
    result = dpo.run(ctx, cfg)
    shutil.rmtree(ctx.state_dir / "checkpoints", ignore_errors=True)  # as the runner does
    return result, work


@pytest.fixture
def reference_passes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Pairs the reference model scores, counted at TRL's own reference forward."""
    from alloylm.train import _trl

    passes: list[int] = []
    original = _trl.DPOTrainer.compute_ref_log_probs

    def counting(self, model, inputs):  # noqa: ANN001
        passes.append(int(inputs["input_ids"].shape[0]) // 2)  # a batch is [chosen, rejected]
        return original(self, model, inputs)

    monkeypatch.setattr(_trl.DPOTrainer, "compute_ref_log_probs", counting)
    return passes


def _weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _score_everything(monkeypatch: pytest.MonkeyPatch) -> None:
    """TRL's behaviour before the fix: the reference scores every row."""
    from alloylm.train import _trl

    monkeypatch.setattr(
        _trl.CachedRefDPOTrainer, "_rows_training_uses", lambda self, d: list(range(len(d)))
    )


def _cached_rows(state: Path) -> int:
    import torch
    from safetensors.torch import load_file

    (cache,) = (state / "ref_logps").glob("*.safetensors")
    chosen = load_file(str(cache))["ref_chosen_logps"]
    assert len(chosen) == len(TERMS)
    return int((~torch.isnan(chosen)).sum())


@pytest.mark.timeout(600)
def test_only_the_rows_training_draws_are_scored(
    tiny_llama: Path, tmp_path: Path, reference_passes: list[int], monkeypatch
) -> None:
    import torch

    short, short_dir = _run(tiny_llama, tmp_path, "short", "state")
    assert sum(reference_passes) == 4 == short.metrics["ref_rows_scored"]  # 2 steps x 2 pairs
    assert short.metrics["ref_log_probs"] == "computed" and short.metrics["steps"] == 2
    assert _cached_rows(tmp_path / "state") == 4

    # a longer run in the same state folder scores only the 6 rows it adds
    reference_passes.clear()
    longer, longer_dir = _run(tiny_llama, tmp_path, "longer", "state", max_steps=5)
    assert sum(reference_passes) == 6 == longer.metrics["ref_rows_scored"]
    assert longer.metrics["ref_rows_reused"] == 4
    assert _cached_rows(tmp_path / "state") == 10

    # the same runs with every row scored (fresh state folders) train to the same weights and loss
    _score_everything(monkeypatch)
    reference_passes.clear()
    full, full_dir = _run(tiny_llama, tmp_path, "full", "state-full")
    assert sum(reference_passes) == len(TERMS)
    full_long, full_long_dir = _run(tiny_llama, tmp_path, "full-long", "state-full-long", 5)
    for ours, theirs, ours_dir, theirs_dir in (
        (short, full, short_dir, full_dir),
        (longer, full_long, longer_dir, full_long_dir),
    ):
        assert ours.metrics["final_loss"] == pytest.approx(theirs.metrics["final_loss"], abs=1e-6)
        a, b = _weights(ours_dir), _weights(theirs_dir)
        assert a.keys() == b.keys()
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=0, atol=1e-6)
    # the weights moved (otherwise equal weights would prove nothing)
    base = _weights(Path(tiny_llama))
    assert any(not torch.equal(base[k], _weights(short_dir)[k]) for k in base)

    # a rerun (another beta) of the short run reads every row it needs from the file
    monkeypatch.undo()
    reference_passes.clear()
    again, _ = _run(tiny_llama, tmp_path, "again", "state")
    assert again.metrics["ref_log_probs"] == "cached" and sum(reference_passes) == 0


def test_a_pair_without_reference_log_probs_stops_training(
    tiny_llama: Path, tmp_path: Path, monkeypatch
) -> None:
    """If the trainer drew other rows than predicted it would train on NaN: it stops instead."""
    from alloylm.errors import AlloyError
    from alloylm.train import _trl

    original = _trl._first_epoch_order
    monkeypatch.setattr(_trl, "_first_epoch_order", lambda loader: original(loader)[::-1])
    with pytest.raises(AlloyError, match="reference log-probs were not computed"):
        _run(tiny_llama, tmp_path, "wrong", "state")
