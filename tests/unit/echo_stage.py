"""A minimal stage kind for testing the pipeline machinery without any model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult

PRODUCES = "model"
CALLS: list[str] = []


class Config(StageConfig):
    kind: Literal["echo"] = "echo"
    model: str = "tiny:llama"
    data_files: list[str] = []
    message: str = "hello"
    fail: bool = False


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("model", cfg.model, "model")]
    specs += [InputSpec(f"data_files[{i}]", path, "data") for i, path in enumerate(cfg.data_files)]
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    CALLS.append(ctx.stage_name)
    (ctx.work_dir / "config.json").write_text("{}")  # looks like a model folder
    (ctx.work_dir / "echo.json").write_text(
        json.dumps({"message": cfg.message, "model": cfg.model})
    )
    if cfg.fail:
        raise RuntimeError("stage failed on purpose")
    return StageResult(metrics={"final_loss": 1.0, "model_seen": Path(cfg.model).name})
