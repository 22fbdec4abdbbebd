"""Stage kind `export`: write a trained or merged model as one GGUF file (llama.cpp, Ollama).

    gguf:
      kind: export
      model: ${stages.merged.output}
      to: gguf
      dtype: q8_0          # f32, f16 (default), bf16 or q8_0

The artifact is a folder holding `model-<dtype>.gguf`, its alloy.json and a model card whose
front matter says `base_model_relation: quantized`; any model source accepts the folder (it is
dequantized back to safetensors once). The GGUF also carries `alloylm.source.*` metadata naming
the parent's stage and content hash. See docs/export.md.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult

PRODUCES = "model"


class Config(StageConfig):
    kind: str = "export"
    model: str = Field(description="model source or ${stages.<name>.output} (a Llama model)")
    to: Literal["gguf"] = "gguf"
    dtype: Literal["f32", "f16", "bf16", "q8_0"] = "f16"


def inputs(cfg: Config) -> list[InputSpec]:
    return [InputSpec("model", cfg.model, "model")]


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.lineage import hub_lineage
    from alloylm.models.export_gguf import export_gguf, source_provenance

    model_dir = ctx.model_path(cfg.model)
    base_models, license = hub_lineage(cfg.model, model_dir)
    out = ctx.work_dir / f"model-{cfg.dtype}.gguf"
    name = f"{ctx.run_name}-{ctx.stage_name}" if ctx.run_name else ctx.stage_name
    result = export_gguf(
        model_dir,
        out,
        dtype=cfg.dtype,
        name=name,
        provenance=source_provenance(model_dir),
        base_models=base_models,
        license=license,
    )
    ctx.log(f"wrote {out.name} ({result.size_bytes / 2**20:,.1f} MiB, {result.pre_tokenizer})")
    summary = result.summary()
    return StageResult(
        metrics={"summary": f"{cfg.dtype} {result.size_bytes / 2**20:,.1f} MiB"},
        details={"gguf": summary},
        outputs={"gguf": out.name},
    )
