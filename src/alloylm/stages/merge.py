"""Stage kind `merge`: merge models (SLERP with the study's schedule by default), incl. sweeps.

    merged:
      kind: merge
      method: slerp                      # linear, task_arithmetic, ties, dare_linear, dare_ties, model_stock
      base_model: embedded:smollm2-135m-instruct
      models: [${stages.sft.output}]
      schedule: study                    # default for slerp; or variant_g, uniform, or parameters: {t: ...}
      sweep:                             # optional: several merges of the same parents, read once
        - {name: study, schedule: study}
        - {name: variant_g, schedule: variant_g}

Without a sweep the merged model is the artifact; with one, each variant is a model folder
`<artifact>/<name>/` with its own alloy.json (lineage: parents + the variant's schedule).
See docs/merge.md.
"""

from __future__ import annotations

import time

from alloylm.config.strict import StageConfig
from alloylm.contract import InputSpec, StageContext, StageResult
from alloylm.merge.config import MergeSettings

PRODUCES = "model"


class Config(MergeSettings, StageConfig):
    kind: str = "merge"


def inputs(cfg: Config) -> list[InputSpec]:
    specs = []
    if cfg.base_model:
        specs.append(InputSpec("base_model", cfg.base_model, "model"))
    for i, model in enumerate(cfg.models):
        source = model if isinstance(model, str) else model.model
        specs.append(InputSpec(f"models.{i}", source, "model"))
    for i, slice_ in enumerate(cfg.slices or []):
        if slice_.base_model:
            specs.append(InputSpec(f"slices.{i}.base_model", slice_.base_model, "model"))
        for j, src in enumerate(slice_.sources):
            specs.append(InputSpec(f"slices.{i}.sources.{j}.model", src.model, "model"))
    seen, unique = set(), []
    for spec in specs:
        if spec.value not in seen:
            seen.add(spec.value)
            unique.append(spec)
    if template_is_file(cfg.chat_template):
        unique.append(InputSpec("chat_template", cfg.chat_template, "file"))
    return unique


def template_is_file(chat_template: str | None) -> bool:
    """`chat_template` names a file (a path, or a path inside a stage's output), not inline Jinja."""
    if not chat_template:
        return False
    return "{" not in chat_template or chat_template.startswith("${stages.")


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.merge.artifacts import parents, write_variant_manifest
    from alloylm.merge.engine import MergeOutput, prepare_merge, run_merge

    started = time.perf_counter()
    if cfg.seed is None:  # DARE's drops follow the run's seed unless the stage sets one
        cfg = cfg.model_copy(update={"seed": ctx.seed})
    prepared = prepare_merge(cfg, ctx.model_path)
    variants = cfg.variants()
    sweep = cfg.sweep is not None
    outputs = [
        MergeOutput(name, params, ctx.work_dir / name if sweep else ctx.work_dir)
        for name, params in variants
    ]
    reports = run_merge(cfg, outputs, progress=ctx.progress, prepared=prepared)
    elapsed = time.perf_counter() - started
    for report in reports:
        ctx.log(_describe(report))
    if not sweep:
        return StageResult(
            metrics={"summary": _summary(reports[0]), **reports[0].summary()},
            details={
                "parameters": variants[0][1],
                "linear_fallback_names": reports[0].linear_fallback_names,
                "warnings": prepared.warnings,
                "parents": parents(prepared),
            },
        )
    for report, output in zip(reports, outputs, strict=True):
        write_variant_manifest(
            output.folder,
            prepared,
            report,
            output.parameters,
            stage=f"{ctx.stage_name}/{report.name}",
            run_name=ctx.run_name,
            wall_time_s=elapsed,
        )
    return StageResult(
        metrics={
            "summary": f"{len(reports)} variants",
            "variants": len(reports),
            "tensors": reports[0].tensors,
        },
        details={
            "variants": {r.name: r.summary() for r in reports},
            "warnings": prepared.warnings,
            "parents": parents(prepared),
        },
    )


def _summary(report) -> str:
    s = report.summary()
    if "linear_fallback_tensors" in s:
        return f"linear fallback {s['linear_fallback_tensors']}/{s['tensors']}"
    return f"{s['tensors']} tensors"


def _describe(report) -> str:
    s = report.summary()
    text = f"{report.name or 'merge'}: {s['tensors']} tensors"
    if "linear_fallback_tensors" in s:
        text += f", {s['linear_fallback_tensors']} took SLERP's linear fallback (|cos| > 0.9995)"
    return text
