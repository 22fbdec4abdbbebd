"""`distill` stage: raw domain text -> CPT text, chat examples and preference pairs.

Teacher-driven generators (qa, summary, structured, preference) and deterministic builders
(glossary_qa, glossary_preference, exercise_qa) in one stage; see docs/distill.md. The SQLite
call cache lives in ctx.state_dir, so an interrupted stage resumes without repeating a call.
"""

from __future__ import annotations

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.distill.config import DistillConfig
from alloylm.hashing import sha256_path

PRODUCES = "data"


class Config(StageConfig, DistillConfig):
    """The stage's keys: everything in DistillConfig, plus `kind` and `description`."""


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec(f"paths[{i}]", p, "data") for i, p in enumerate(cfg.paths)]
    specs += [InputSpec(f"builders[{i}].path", b.path, "data") for i, b in enumerate(cfg.builders)]
    specs += [
        InputSpec(f"decontaminate.files[{i}]", f, "data", "benchmark")
        for i, f in enumerate(cfg.decontaminate.files)
    ]
    if cfg.teacher is not None and cfg.teacher.type == "local":
        specs.append(InputSpec("teacher.model", cfg.teacher.model, "model"))
    if cfg.chunking.tokenizer:  # its tokenizer sets the chunk boundaries
        specs.append(InputSpec("chunking.tokenizer", cfg.chunking.tokenizer, "model"))
    if cfg.prompts_dir:  # the user's templates override the built-in ones of the same name
        specs.append(InputSpec("prompts_dir", cfg.prompts_dir, "file"))
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from pathlib import Path

    from alloylm.distill.engine import run_distill

    result = run_distill(
        cfg,
        ctx.work_dir,
        ctx.state_dir,
        seed=ctx.seed,
        log=ctx.log,
        progress=ctx.progress,
        resolve_model=ctx.model_path,
    )
    read = [*cfg.paths, *(b.path for b in cfg.builders), *cfg.decontaminate.files]
    hashes = {p: sha256_path(p) for p in read if Path(p).exists()}
    stats = result.stats
    metrics = {"records_" + kind: count for kind, count in stats["records_per_kind"].items()} | {
        "teacher_calls": stats["teacher"]["calls_made"],
        "teacher_tokens": stats["teacher"]["prompt_tokens"] + stats["teacher"]["completion_tokens"],
    }
    return StageResult(
        metrics=metrics, data_hashes=hashes, details={"distill": stats}, outputs=result.outputs
    )
