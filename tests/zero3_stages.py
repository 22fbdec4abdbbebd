"""A test stage for the ZeRO-3 interruption test: cpt, whose rank 1 kills itself with SIGKILL at
the end of step 3 while the file named by $ALLOY_TEST_KILL_FLAG exists (rank 1 removes it first,
so the rerun trains on). Imported by every rank of a torchrun launch (`stage_module`)."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

from alloylm.stages.cpt import Config, inputs  # noqa: F401  (the stage module's interface)

KILL_AT_STEP = 3


def run(ctx: Any, cfg: Config) -> Any:
    from transformers import TrainerCallback

    import alloylm.train._trl as trl_module
    from alloylm.stages import cpt

    class KillRankOne(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            flag = Path(os.environ.get("ALLOY_TEST_KILL_FLAG", "/nonexistent"))
            if state.global_step == KILL_AT_STEP and int(os.environ["RANK"]) == 1 and flag.exists():
                flag.unlink()
                os.kill(os.getpid(), signal.SIGKILL)

    original = trl_module.train_resumable

    def train_resumable(trainer: Any, checkpoint_dir: Any) -> Any:
        trainer.add_callback(KillRankOne())
        return original(trainer, checkpoint_dir)

    trl_module.train_resumable = train_resumable
    try:
        return cpt.run(ctx, cfg)
    finally:
        trl_module.train_resumable = original
