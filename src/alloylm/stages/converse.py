"""`converse` stage: one conversation script answered by every model, one transcript each.

```yaml
transcripts:
  kind: converse
  script_file: conversations/collagen_leaves.yaml     # relative to the pipeline YAML
  models: [embedded:smollm2-135m-instruct, ${stages.sft.output}, ${stages.merged.output}]
  generation: {max_new_tokens: 256}                    # overrides of the script's settings
```
The artifact folder holds `<model>.json` and `<model>.md` per model and `summary.json` (JSON
turns valid or not, timings); a `judge` stage reads the folder. See docs/conversations.md.
"""

from __future__ import annotations

from pydantic import Field

from alloylm.chat.conversations import GenerationOverrides
from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult

PRODUCES = "data"


class Config(StageConfig):
    script_file: str = Field(description="the conversation script (YAML)")
    models: list[str] = Field(min_length=1)
    names: list[str] | None = Field(
        None, description="display names, one per model (default: stage name or source)"
    )
    generation: GenerationOverrides = GenerationOverrides()
    dtype: str | None = None
    threads: int | None = Field(None, ge=1)


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec("script_file", cfg.script_file, "file")]
    specs += [InputSpec(f"models[{i}]", model, "model") for i, model in enumerate(cfg.models)]
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.chat.conversations import converse, load_script
    from alloylm.errors import ConfigError

    if cfg.names is not None and len(cfg.names) != len(cfg.models):
        raise ConfigError(
            f"{len(cfg.names)} names for {len(cfg.models)} models",
            key="names",
            hint="give one name per model, in the same order, or none",
        )
    loaded = load_script(cfg.script_file)
    settings = loaded.script.generation.merged(cfg.generation.model_dump())
    models = [(source, ctx.model_path(source)) for source in cfg.models]
    result = converse(
        loaded,
        models,
        ctx.work_dir,
        settings=settings,
        names=cfg.names,
        dtype=cfg.dtype,
        threads=cfg.threads,
        log=ctx.log,
    )
    rows = result.summary["models"]
    json_turns = sum(row["json_turns"] for row in rows)
    metrics = {
        "models": len(rows),
        "turns": len(loaded.script.turns),
        "json_valid": sum(row["json_valid"] for row in rows),
        "json_turns": json_turns,
        "generate_s": round(sum(row["generate_s"] for row in rows), 2),
    }
    metrics["summary"] = f"{len(rows)} transcripts, JSON valid {metrics['json_valid']}/{json_turns}"
    return StageResult(
        metrics=metrics,
        data_hashes={loaded.path.as_posix(): loaded.sha256},
        details={"converse": result.summary},
    )
