"""A study: the strategy grid of Lu, Luu & Buehler (arXiv 2409.03444) as one `study:` section.

A pipeline file with a `study:` section names start models (lineages), strategies (chains of
training steps such as CPT-SFT-DPO), one template per step, the merge partner with its schedules,
optional ablation axes and the evaluation tasks. `expand_study` turns it into ordinary stages
(added to the file's own `stages:`), so every model of the grid is a cached, resumable stage with
lineage, and into the study plan (`study_plan.json`, the contract with `alloylm.analysis`):

- a chain prefix is one stage, shared by every strategy that starts with it (CPT once per lineage
  and per data variant, SFT once before both DPO and ORPO): stage names are the chain, e.g.
  `instruct_cpt_sft_dpo`, and two steps with identical configs are one stage;
- each strategy's final model is merged with the partner once per schedule
  (`instruct_cpt_sft_dpo_slerp`, or `..._slerp-G` when there are several schedules);
- one eval stage scores every start model, the partner, every stage model and every merge with the
  same tasks, protocols, template, seeds and limits (each source once).

Ablations multiply the strategies they apply to:
- `data`: named variants of one step's `data:` (the study's clean vs noisy CPT corpus); the step and
  everything after it exist once per variant, the stages before it are shared;
- `settings`: named variants of other keys of one step, laid over its template (e.g. the SFT
  `objective`: the study's against alloylm's); named and shared like data variants;
- `cpt_epochs`: one model per number of CPT epochs. The cpt stage saves only its final model, so
  each value is its own stage: `independent` (default) trains k epochs from the start model, each
  with the template's full schedule (exact, cost 1 + 2 + ... + N epochs); `chained` trains one epoch
  on the previous value's model (cost N epochs; each link restarts warmup and the LR schedule and
  the optimizer state, and shuffles with seed + k - 1, so it is not a checkpoint of one N-epoch run);
  `checkpoints` trains once for N epochs and takes the model after each epoch k of that run (the
  cpt stage's `save_epochs`; cost N epochs, one schedule: the study's own ablation). Model k < N
  is `${stages.<run>.output}/epochs/k`; its plan entry's `stage` is the run.

This module is pure (no torch, no files) except `write_plan`.
"""

from __future__ import annotations

import copy
import itertools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, ValidationError, field_validator

from alloylm.config.strict import StrictModel, fields_at
from alloylm.errors import ConfigError, did_you_mean

if TYPE_CHECKING:
    from alloylm.config.pipeline import Pipeline

PLAN_FILE = "study_plan.json"
PLAN_VERSION = 1
TRAINING_STEPS = ("cpt", "sft", "dpo", "orpo")
# The study's strategies (and its one LoRA case, as an SFT step with `train.lora`).
KNOWN_STRATEGIES = ("CPT", "CPT-SFT", "CPT-SFT-DPO", "CPT-SFT-ORPO", "SFT", "SFT-DPO", "SFT-ORPO")
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-]*$")  # ids join with '_', so no '_' inside one
PARTNER_ID = "partner"
VAR = re.compile(r"\$\{vars\.([A-Za-z0-9_\-]+)\}")

ErrorFactory = Callable[..., ConfigError]


# -- the study section ----------------------------------------------------------------------------
class Lineage(StrictModel):
    """A start model and its per-step overrides (deep-merged into the step templates)."""

    model: str = Field(description="model source of the start model")
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="step -> keys that differ for this lineage"
    )


class CurveSection(StrictModel):
    """Weight-interpolation curves: merges of a strategy's model at several global t."""

    strategies: list[str] = Field(min_length=1, description="strategies whose merge gets a curve")
    t: list[float] = Field(
        default_factory=lambda: [0.25, 0.5, 0.75],
        description="inner points; t = 0 (the partner) and t = 1 are models the study has anyway",
    )
    schedule: str | None = Field(
        None, description="None: the same t everywhere; a name of merge.schedules: it, times t"
    )

    @field_validator("t")
    @classmethod
    def _inner(cls, value: list[float]) -> list[float]:
        if any(not 0 < t < 1 for t in value) or len(set(value)) != len(value):
            raise ValueError(
                f"curve points are distinct values strictly between 0 and 1, got {value}"
            )
        return sorted(value)


class MergeSection(StrictModel):
    partner: str = Field(description="the general model every stage model is merged with")
    method: str = "slerp"
    strategies: list[str] | Literal["all", "none"] = Field(
        "all", description="strategies whose model is also merged (±merge)"
    )
    schedules: dict[str, str | dict[str, Any]] = Field(
        default_factory=lambda: {"ref": "study"},
        description="name -> a schedule preset (study, variant_g, uniform) or merge parameters",
    )
    settings: dict[str, Any] = Field(
        default_factory=dict, description="other merge-stage keys (dtype, out_dtype, ...)"
    )
    curve: CurveSection | None = None

    @field_validator("schedules")
    @classmethod
    def _some_schedule(cls, value: dict[str, Any]) -> dict[str, Any]:
        if not value:
            raise ValueError("give at least one schedule, e.g. {ref: study}")
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"schedule name {name!r} must be letters, digits or '-'")
        return value


class EpochAxis(StrictModel):
    epochs: list[int] = Field(min_length=1)
    mode: Literal["independent", "chained", "checkpoints"] = "independent"
    step: str = "cpt"
    strategies: list[str] | None = Field(
        None, description="strategies it applies to; default: every strategy with the step"
    )

    @field_validator("epochs")
    @classmethod
    def _positive(cls, value: list[int]) -> list[int]:
        if any(k < 1 for k in value) or len(set(value)) != len(value):
            raise ValueError(f"epochs must be distinct whole numbers >= 1, got {value}")
        return sorted(value)


class DataAxis(StrictModel):
    step: str = Field(description="the step whose data: varies")
    variants: dict[str, list[dict[str, Any]]] = Field(min_length=1)
    strategies: list[str] | None = None

    @field_validator("variants")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        for name in value:
            if not NAME.match(name):
                raise ValueError(f"variant name {name!r} must be letters, digits or '-'")
        return value


class SettingsAxis(StrictModel):
    step: str = Field(description="the step whose settings vary")
    variants: dict[str, dict[str, Any]] = Field(
        min_length=1, description="name -> keys laid over the step's template (deep-merged)"
    )
    strategies: list[str] | None = None

    @field_validator("variants")
    @classmethod
    def _names(cls, value: dict[str, Any]) -> dict[str, Any]:
        return DataAxis._names(value)


class Ablations(StrictModel):
    cpt_epochs: EpochAxis | None = None
    data: dict[str, DataAxis] = Field(default_factory=dict)
    settings: dict[str, SettingsAxis] = Field(
        default_factory=dict, description="e.g. the SFT objective: {step: sft, variants: {...}}"
    )


class StudySection(StrictModel):
    name: str | None = None
    lineages: dict[str, Lineage | str] = Field(min_length=1)
    strategies: list[str] = Field(min_length=1)
    stages: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="step templates: cpt, sft, dpo, orpo or your own"
    )
    merge: MergeSection | None = None
    ablations: Ablations = Field(default_factory=Ablations)
    eval: dict[str, Any] = Field(description="eval-stage keys; models and baseline are filled in")
    baseline: str | None = Field(
        None, description="lineage id or 'partner': the general model; default the partner"
    )
    eval_stage: str = "eval"
    notes: dict[str, str] = Field(
        default_factory=dict,
        description="strategy or step -> a note `alloy study plan` prints with the grid (e.g. "
        "which values the study does not give)",
    )


# -- the expansion's result -----------------------------------------------------------------------
@dataclass
class StudyExpansion:
    """Stages (name -> raw config, refs and vars unresolved) and the plan's models."""

    name: str
    stages: dict[str, dict[str, Any]]
    models: list[dict[str, Any]]  # plan entries; "eval_index" = position in the eval models list
    origins: dict[str, tuple[str | int, ...]]  # generated stage -> key path it comes from
    eval_stage: str
    baseline: str
    lines: dict[tuple[str | int, ...], int] = field(default_factory=dict)
    curves: list[dict[str, Any]] = field(default_factory=list)  # the plan's `curves`
    confirm_tasks: list[str] = field(default_factory=list)  # eval.confirm: no choice made on them
    notes: dict[str, str] = field(default_factory=dict)  # strategy or step -> note

    def stage_names(self) -> list[str]:
        return list(self.stages)


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` laid over it: mappings merge key by key, everything else is replaced."""
    merged = copy.deepcopy(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def stage_ref(name: str) -> str:
    return "${stages." + name + ".output}"


def parse_strategy(
    strategy: str, templates: dict[str, dict[str, Any]], where: tuple, error: ErrorFactory
) -> list[str]:
    """'CPT-SFT-DPO' -> ['cpt', 'sft', 'dpo']: each step must have a template in study.stages."""
    by_lower = {name.lower(): name for name in templates}
    steps = []
    for token in strategy.split("-"):
        step = by_lower.get(token.lower())
        if step is None:
            candidates = sorted({*KNOWN_STRATEGIES, *_template_strategies(templates)})
            suggestion = did_you_mean(strategy, candidates) or did_you_mean(
                token, [*TRAINING_STEPS, *templates]
            )
            if token.lower() in TRAINING_STEPS:
                raise error(
                    where,
                    f"strategy {strategy!r} needs step {token.lower()!r}, which has no template",
                    f"add study.stages.{token.lower()}: {{data: [...], train: {{...}}}}",
                )
            raise error(
                where,
                f"unknown strategy {strategy!r}: no step {token!r}{suggestion}",
                f"a strategy is steps joined by '-', each a key of study.stages "
                f"({', '.join(templates) or 'none yet'}); e.g. {', '.join(KNOWN_STRATEGIES[:4])}",
            )
        steps.append(step)
    return steps


def _template_strategies(templates: dict[str, Any]) -> list[str]:
    names = [name.upper() if name.lower() in TRAINING_STEPS else name for name in templates]
    return ["-".join(names[: i + 1]) for i in range(len(names))] + names


def step_kind(step: str, template: dict[str, Any]) -> str:
    return str(template.get("kind") or step)


def _applies(axis_strategies: list[str] | None, strategy: str, step: str, steps: list[str]) -> bool:
    if step not in steps:
        return False
    return axis_strategies is None or strategy in axis_strategies


def _set_epochs(config: dict[str, Any], epochs: int) -> dict[str, Any]:
    config = copy.deepcopy(config)
    train = dict(config.get("train") or {})
    train["epochs"] = epochs
    if "max_steps" in train:
        train["max_steps"] = -1  # epochs count only without a step budget
    config["train"] = train
    return config


def _checkpoint_run(
    config: dict[str, Any], epochs: list[int], *, last: bool = True
) -> dict[str, Any]:
    """The cpt run whose epoch models the `checkpoints` mode takes: the step's config at the axis's
    largest epoch count, saving each epoch. With `last=False`, the step's own config, which is
    that run (and so shared with it) when it already trains that many epochs without max_steps."""
    n = max(epochs)
    train = config.get("train") or {}
    if not last and (train.get("epochs") != n or train.get("max_steps", -1) != -1):
        return config
    run = _set_epochs(config, n)
    run["save_epochs"] = n > min(epochs)
    return run


def expand_study(
    section: Any, data: dict[str, Any], error: ErrorFactory, lines: dict[tuple, int] | None = None
) -> StudyExpansion:
    """Expand the `study:` section (vars already substituted) of pipeline `data` into stages."""
    try:
        study = StudySection.model_validate(section)
    except ValidationError as exc:
        raise _section_error(exc, error) from None
    explicit = data.get("stages") or {}
    templates = study.stages
    seed = int((data.get("run") or {}).get("seed", 42))
    name = study.name or str((data.get("run") or {}).get("name", "study"))

    for lineage_id in study.lineages:
        if not NAME.match(lineage_id):
            raise error(
                ("study", "lineages", lineage_id),
                f"lineage id {lineage_id!r} must be letters, digits or '-' (it starts stage names)",
            )
    for step, template in templates.items():
        kind = step_kind(step, template)
        if kind not in TRAINING_STEPS:
            raise error(
                ("study", "stages", step),
                f"step {step!r} has kind {kind!r}; a strategy step is a training stage",
                f"give kind: one of {', '.join(TRAINING_STEPS)} (a step named after one needs none)",
            )
        if not NAME.match(step) or "-" in step:
            raise error(("study", "stages", step), f"step name {step!r} must be letters/digits")
        if "model" in template:
            raise error(
                ("study", "stages", step, "model"),
                "a step template has no model: the study chains each step on the one before",
                "start models go under study.lineages",
            )
    chains = {
        strategy: parse_strategy(strategy, templates, ("study", "strategies", i), error)
        for i, strategy in enumerate(study.strategies)
    }
    if len(set(study.strategies)) != len(study.strategies):
        raise error(("study", "strategies"), f"strategies repeat: {study.strategies}")
    for lineage_id, lineage in study.lineages.items():
        if isinstance(lineage, Lineage):
            for step in lineage.stages:
                if step not in templates:
                    raise error(
                        ("study", "lineages", lineage_id, "stages", step),
                        f"no step template {step!r}{did_you_mean(step, templates)}",
                        f"steps: {', '.join(templates)}",
                    )
    _check_axis_strategies(study, error)
    for key in study.notes:
        if key not in study.strategies and key not in templates:
            raise error(
                ("study", "notes", key),
                f"note for {key!r}, which is neither a strategy nor a step"
                f"{did_you_mean(key, [*study.strategies, *templates])}",
            )
    epoch_axis = study.ablations.cpt_epochs
    if epoch_axis and epoch_axis.mode == "checkpoints":
        kind = step_kind(epoch_axis.step, templates[epoch_axis.step])
        if kind != "cpt":
            raise error(
                ("study", "ablations", "cpt_epochs", "mode"),
                f"mode 'checkpoints' keeps the epoch models of a cpt run; step "
                f"{epoch_axis.step!r} is a {kind} stage",
                "use mode: independent or chained for other steps",
            )

    stages: dict[str, dict[str, Any]] = {}
    origins: dict[str, tuple] = {}
    by_config: dict[str, str] = {}

    def register(stage: str, config: dict[str, Any], origin: tuple) -> str:
        key = json.dumps(config, sort_keys=True, default=str)
        if key in by_config:
            return by_config[key]  # the same training twice is one stage
        if stage in explicit:
            raise error(
                ("stages", stage),
                f"stage {stage!r} is also generated by the study ({'.'.join(map(str, origin))})",
                "rename your stage",
            )
        if stage in stages:
            raise error(origin, f"the study generates stage {stage!r} twice with different configs")
        stages[stage] = config
        origins[stage] = origin
        by_config[key] = stage
        return stage

    models: list[dict[str, Any]] = []
    sources: list[str] = []  # the eval stage's models, each once

    def add_source(source: str) -> int:
        if source not in sources:
            sources.append(source)
        return sources.index(source)

    for lineage_id, lineage in study.lineages.items():
        source = lineage if isinstance(lineage, str) else lineage.model
        models.append(
            {
                "id": lineage_id,
                "role": "start",
                "source": source,
                "lineage": lineage_id,
                "strategy": "none",
                "merged": False,
                "stage": None,
                "eval_index": add_source(source),
            }
        )
    if study.merge is not None:
        models.append(
            {
                "id": PARTNER_ID,
                "role": "partner",
                "source": study.merge.partner,
                "lineage": None,
                "strategy": "none",
                "merged": False,
                "stage": None,
                "eval_index": add_source(study.merge.partner),
            }
        )

    endpoints: list[dict[str, Any]] = []
    seen_endpoints: set[str] = set()
    checkpoints: dict[str, tuple[str, str]] = {}  # model id -> (the cpt run's stage, its folder)
    for lineage_id, lineage in study.lineages.items():
        start = lineage if isinstance(lineage, str) else lineage.model
        overrides = {} if isinstance(lineage, str) else lineage.stages
        for strategy, steps in chains.items():
            axes: list[tuple[str, str, list[Any]]] = []  # (axis name, step, values)
            for axis_name, axis in {**study.ablations.data, **study.ablations.settings}.items():
                if _applies(axis.strategies, strategy, axis.step, steps):
                    axes.append((axis_name, axis.step, list(axis.variants)))
            epoch_axis = study.ablations.cpt_epochs
            if epoch_axis and _applies(epoch_axis.strategies, strategy, epoch_axis.step, steps):
                axes.append(("cpt_epoch", epoch_axis.step, list(epoch_axis.epochs)))
            for combo in itertools.product(*(values for _, _, values in axes)):
                variant = {axis[0]: value for axis, value in zip(axes, combo, strict=True)}
                parent_source, prefix = start, lineage_id
                for step in steps:
                    config = deep_merge(templates[step], overrides.get(step, {}))
                    config["kind"] = step_kind(step, templates[step])
                    origin: tuple = ("study", "stages", step)
                    token = step
                    for (axis_name, axis_step, _), value in zip(axes, combo, strict=True):
                        if axis_step != step or axis_name == "cpt_epoch":
                            continue
                        if axis_name in study.ablations.settings:
                            change = study.ablations.settings[axis_name].variants[value]
                            config = deep_merge(config, change)
                            origin = (
                                "study",
                                "ablations",
                                "settings",
                                axis_name,
                                "variants",
                                value,
                            )
                        else:
                            config["data"] = copy.deepcopy(
                                study.ablations.data[axis_name].variants[value]
                            )
                            origin = ("study", "ablations", "data", axis_name, "variants", value)
                        token += f"-{value}"
                    epochs = variant.get("cpt_epoch")
                    if epoch_axis is not None and epochs is not None and step == epoch_axis.step:
                        if epoch_axis.mode == "checkpoints":  # one run, its epoch-k models
                            last = max(epoch_axis.epochs)
                            run = _checkpoint_run(config, epoch_axis.epochs)
                            # the template's own run when it has N epochs: one run serves both
                            shared = run == _checkpoint_run(config, epoch_axis.epochs, last=False)
                            run["model"] = parent_source
                            run_stage = f"{prefix}_{token}" + ("" if shared else f"-e{last}")
                            stage = register(run_stage, run, origin)
                            prefix = f"{prefix}_{token}-e{epochs}"
                            parent_source = stage_ref(stage)
                            if epochs != last:
                                parent_source = f"{parent_source}/epochs/{epochs}"
                            checkpoints[prefix] = (stage, parent_source)
                            continue
                        links = range(1, epochs + 1) if epoch_axis.mode == "chained" else [epochs]
                        for k in links:
                            linked = _set_epochs(config, 1 if epoch_axis.mode == "chained" else k)
                            if epoch_axis.mode == "chained" and k > 1:
                                train_seed = (config.get("train") or {}).get("seed", seed)
                                linked["train"]["seed"] = int(train_seed) + k - 1
                            linked["model"] = parent_source
                            stage = register(f"{prefix}_{token}-e{k}", linked, origin)
                            parent_source = stage_ref(stage)
                        prefix = stage
                        continue
                    if epoch_axis and epoch_axis.mode == "checkpoints" and step == epoch_axis.step:
                        config = _checkpoint_run(config, epoch_axis.epochs, last=False)
                    config["model"] = parent_source
                    stage = register(f"{prefix}_{token}", config, origin)
                    parent_source, prefix = stage_ref(stage), stage
                if prefix in seen_endpoints:
                    continue
                seen_endpoints.add(prefix)
                stage_name, source = checkpoints.get(prefix, (prefix, stage_ref(prefix)))
                entry = {
                    "id": prefix,
                    "role": "stage",
                    "stage": stage_name,  # an epoch checkpoint's is the run that saved it
                    "kind": stages[stage_name]["kind"],
                    "source": source,
                    "lineage": lineage_id,
                    "strategy": strategy,
                    "merged": False,
                    "steps": list(steps),
                    "variant": variant,
                    "eval_index": add_source(source),
                }
                models.append(entry)
                endpoints.append(entry)

    merge = study.merge
    if merge is not None and merge.strategies != "none":
        for entry in endpoints:
            if merge.strategies != "all" and entry["strategy"] not in merge.strategies:
                continue
            for schedule_name, schedule in merge.schedules.items():
                suffix = (
                    merge.method if len(merge.schedules) == 1 else f"{merge.method}-{schedule_name}"
                )
                config = {
                    "kind": "merge",
                    **copy.deepcopy(merge.settings),
                    "method": merge.method,
                    "base_model": merge.partner,
                    "models": [entry["source"]],
                }
                if isinstance(schedule, str):
                    config["schedule"] = schedule
                else:
                    config["parameters"] = {**config.get("parameters", {}), **schedule}
                stage = register(
                    f"{entry['id']}_{suffix}",
                    config,
                    ("study", "merge", "schedules", schedule_name),
                )
                models.append(
                    {
                        "id": stage,
                        "role": "merge",
                        "stage": stage,
                        "kind": "merge",
                        "source": stage_ref(stage),
                        "lineage": entry["lineage"],
                        "strategy": entry["strategy"],
                        "merged": True,
                        "parents": [entry["id"], PARTNER_ID],
                        "schedule": schedule_name,
                        "steps": entry["steps"],
                        "variant": entry["variant"],
                        "eval_index": add_source(stage_ref(stage)),
                    }
                )

    curves: list[dict[str, Any]] = []
    if merge is not None and merge.curve is not None:
        curves = _expand_curves(merge, endpoints, models, register, add_source, error)

    baseline = _baseline(study, error)
    baseline_source = next(m["source"] for m in models if m["id"] == baseline)
    for key in ("models", "baseline", "kind"):
        if key in study.eval:
            raise error(
                ("study", "eval", key),
                f"study.eval sets {key!r}, which the study fills in",
                "the eval stage scores every model of the grid; the baseline is study.baseline",
            )
    eval_keys = copy.deepcopy(study.eval)
    confirm = eval_keys.pop("confirm", None) or []
    confirm_tasks = _confirm_task_names(confirm, error)
    if confirm:  # scored with the others; the analysis makes no choice on them (docs/study.md)
        eval_keys["tasks"] = [*(eval_keys.get("tasks") or []), *confirm]
    eval_config = {
        "kind": "eval",
        **eval_keys,
        "models": sources,
        "baseline": baseline_source,
    }
    register(study.eval_stage, eval_config, ("study", "eval"))
    expansion = StudyExpansion(
        name=name,
        stages=stages,
        models=models,
        origins=origins,
        eval_stage=study.eval_stage,
        baseline=baseline,
        curves=curves,
        notes=dict(study.notes),
        confirm_tasks=confirm_tasks,
    )
    if lines is not None:
        expansion.lines = generated_lines(expansion, lines)
    return expansion


def scale_setting(setting: Any, factor: float) -> Any:
    """A merge parameter setting (number, gradient list, [{filter, value}]) with every value x factor."""
    if isinstance(setting, (bool, str)):
        return setting
    if isinstance(setting, (int, float)):
        return setting * factor
    if isinstance(setting, list):
        return [scale_setting(item, factor) for item in setting]
    if isinstance(setting, dict):
        return {k: scale_setting(v, factor) if k == "value" else v for k, v in setting.items()}
    return setting


def _confirm_task_names(confirm: Any, error: ErrorFactory) -> list[str]:
    """The names of `study.eval.confirm`'s tasks: each needs its own `name`, the name its records
    carry, so that the analysis knows them (a confirmation task is never used to choose)."""
    if not isinstance(confirm, list):
        raise error(("study", "eval", "confirm"), "expected a list of eval tasks",
                    "e.g. confirm: [{path: ..., type: mcq, name: mmlu_anatomy}]")  # fmt: skip
    names = []
    for i, task in enumerate(confirm):
        if not isinstance(task, dict) or not isinstance(task.get("name"), str):
            raise error(("study", "eval", "confirm", i), "a confirmation task needs a `name`",
                        "the name its scores carry: e.g. {path: ..., type: mcq, name: mmlu_anatomy}")  # fmt: skip
        names.append(task["name"])
    return names


def _expand_curves(
    merge: MergeSection,
    endpoints: list[dict[str, Any]],
    models: list[dict[str, Any]],
    register: Callable[[str, dict[str, Any], tuple], str],
    add_source: Callable[[str], int],
    error: ErrorFactory,
) -> list[dict[str, Any]]:
    """Merges at each inner t of the curve; the ends are the partner and the strategy's model
    (uniform t) or the partner and the schedule's merge (a schedule scaled by t)."""
    from alloylm.merge.plan import schedule_preset

    curve = merge.curve
    assert curve is not None
    where = ("study", "merge", "curve")
    if merge.method != "slerp":
        raise error((*where,), "curves interpolate with slerp's t", "use merge.method: slerp")
    if curve.schedule is not None and curve.schedule not in merge.schedules:
        raise error(
            (*where, "schedule"),
            f"no schedule {curve.schedule!r}{did_you_mean(curve.schedule, merge.schedules)}",
            f"schedules: {', '.join(merge.schedules)}",
        )
    for strategy in curve.strategies:
        if not any(e["strategy"] == strategy for e in endpoints):
            raise error(
                (*where, "strategies"),
                f"{strategy!r} is not one of the study's strategies"
                f"{did_you_mean(strategy, [e['strategy'] for e in endpoints])}",
            )
    by_id = {m["id"]: m for m in models}
    curves = []
    for entry in endpoints:
        if entry["strategy"] not in curve.strategies:
            continue
        merges = [m for m in models if m["role"] == "merge" and m["parents"][0] == entry["id"]]
        schedule_name = curve.schedule or next(iter(merge.schedules))
        anchor = next((m for m in merges if m["schedule"] == schedule_name), None)
        if anchor is None:
            raise error(
                (*where, "strategies"),
                f"strategy {entry['strategy']!r} is not merged (merge.strategies), so it has no curve",
            )
        if curve.schedule is None:
            setting: Any = None
            end, label = entry["id"], "t"
        else:
            chosen = merge.schedules[curve.schedule]
            setting = schedule_preset(chosen) if isinstance(chosen, str) else chosen.get("t")
            if setting is None:
                raise error((*where, "schedule"), f"schedule {curve.schedule!r} sets no t")
            end, label = anchor["id"], f"{curve.schedule}-t"
        points = [{"t": 0.0, "model": PARTNER_ID}]
        for t in curve.t:
            t_value = t if setting is None else scale_setting(setting, t)
            config = {
                "kind": "merge",
                **copy.deepcopy(merge.settings),
                "method": merge.method,
                "base_model": merge.partner,
                "models": [entry["source"]],
                "parameters": {**merge.settings.get("parameters", {}), "t": t_value},
            }
            stage = register(
                f"{entry['id']}_{merge.method}-{label}{round(t * 100):03d}", config, where
            )
            if stage not in by_id:
                model = {
                    "id": stage,
                    "role": "curve",
                    "stage": stage,
                    "kind": "merge",
                    "source": stage_ref(stage),
                    "lineage": entry["lineage"],
                    "strategy": entry["strategy"],
                    "merged": False,  # a point of a curve, not one of the study's merges
                    "parents": [entry["id"], PARTNER_ID],
                    "schedule": curve.schedule,
                    "t": t,
                    "curve_of": anchor["id"],
                    "steps": entry["steps"],
                    "variant": entry["variant"],
                    "eval_index": add_source(stage_ref(stage)),
                }
                models.append(model)
                by_id[stage] = model
            points.append({"t": t, "model": stage})
        points.append({"t": 1.0, "model": end})
        curves.append({"merge": anchor["id"], "schedule": curve.schedule, "points": points})
    return curves


def _baseline(study: StudySection, error: ErrorFactory) -> str:
    ids = [*study.lineages, *([PARTNER_ID] if study.merge else [])]
    if study.baseline is None:
        return PARTNER_ID if study.merge else next(iter(study.lineages))
    if study.baseline not in ids:
        raise error(
            ("study", "baseline"),
            f"baseline {study.baseline!r} is not a lineage or the partner{did_you_mean(study.baseline, ids)}",
            f"one of: {', '.join(ids)}",
        )
    return study.baseline


def _check_axis_strategies(study: StudySection, error: ErrorFactory) -> None:
    axes: list[tuple[tuple, str, list[str] | None]] = [
        (("study", "ablations", kind, name), axis.step, axis.strategies)
        for kind, group in (("data", study.ablations.data), ("settings", study.ablations.settings))
        for name, axis in group.items()
    ]
    for name in study.ablations.settings:
        if name in study.ablations.data or name == "cpt_epoch":
            raise error(
                ("study", "ablations", "settings", name),
                f"axis name {name!r} is taken (a data axis or cpt_epoch)",
                "give each axis its own name: it keys the plan's `variant`",
            )
    if study.ablations.cpt_epochs:
        axis = study.ablations.cpt_epochs
        axes.append((("study", "ablations", "cpt_epochs"), axis.step, axis.strategies))
    for where, step, strategies in axes:
        if step not in study.stages:
            raise error(
                (*where, "step"),
                f"no step template {step!r}{did_you_mean(step, study.stages)}",
                f"steps: {', '.join(study.stages)}",
            )
        for strategy in strategies or []:
            if strategy not in study.strategies:
                raise error(
                    (*where, "strategies"),
                    f"{strategy!r} is not one of the study's strategies{did_you_mean(strategy, study.strategies)}",
                    f"strategies: {', '.join(study.strategies)}",
                )
    merge = study.merge
    if merge and isinstance(merge.strategies, list):
        for strategy in merge.strategies:
            if strategy not in study.strategies:
                raise error(
                    ("study", "merge", "strategies"),
                    f"{strategy!r} is not one of the study's strategies{did_you_mean(strategy, study.strategies)}",
                    f"strategies: {', '.join(study.strategies)}",
                )


def _section_error(exc: ValidationError, error: ErrorFactory) -> ConfigError:
    """The first pydantic problem of the study section, at its key, with 'did you mean'.

    An unknown key comes first: a misspelt key also shows up as the missing key it was meant to be.
    """
    errors = exc.errors()
    first = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(part for part in first["loc"] if not str(part).startswith(("function-", "Lineage")))
    loc = tuple(
        p for p in loc if p not in ("str", "dict[str,any]", "list[str]", "literal['all','none']")
    )
    where = ("study", *loc)
    if first["type"] == "extra_forbidden":
        known = fields_at(StudySection, loc[:-1], mapping_keys=True)
        return error(
            where,
            f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), known)}",
            f"allowed here: {', '.join(known)}" if known else None,
        )
    if first["type"] == "missing":
        return error(where, f"missing required key {loc[-1]!r}")
    message = first["msg"].removeprefix("Value error, ")
    if "got " not in message:
        message += f" (got {first.get('input')!r})"
    return error(where, message)


def generated_lines(expansion: StudyExpansion, lines: dict[tuple, int]) -> dict[tuple, int]:
    """Line numbers for the generated stages' keys: those of the template each comes from."""
    extra: dict[tuple, int] = {}
    for stage, origin in expansion.origins.items():
        for path, line in lines.items():
            if path[: len(origin)] == origin:
                extra[("stages", stage, *path[len(origin) :])] = line
    return extra


def _where_in_study(stage: str, origin: tuple, loc: tuple) -> tuple:
    """The study key that a problem at `loc` of generated stage `stage` comes from."""
    if not loc:
        return origin
    if origin[:2] == ("study", "merge"):
        top = ("study", "merge")
        return (*top, *loc) if loc[0] in ("method",) else (*top, "settings", *loc)
    if loc[0] in ("model", "models", "base_model"):
        return ("study", "lineages")
    if origin[-2:-1] == ("variants",) and loc[0] == "data":
        return (*origin, *loc[1:])
    return (*origin, *loc)


def prevalidate(
    expansion: StudyExpansion, variables: dict[str, Any], base: Path, error: ErrorFactory
) -> None:
    """Validate every generated stage against its kind's config, errors at the study's keys.

    The loader validates them again as ordinary stages; checking here first names the template key
    (study.stages.sft.train.learning_rate) rather than the generated one.
    """
    from alloylm.config.pipeline import absolutize_paths
    from alloylm.registry import STAGE_KINDS

    def substitute(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: substitute(v) for k, v in value.items()}
        if isinstance(value, list):
            return [substitute(v) for v in value]
        if isinstance(value, str):
            return VAR.sub(lambda m: str(variables.get(m.group(1), m.group(0))), value)
        return value

    for stage, config in expansion.stages.items():
        origin = expansion.origins[stage]
        try:
            module = STAGE_KINDS.get(config["kind"])
        except (KeyError, ImportError) as exc:
            raise error(origin, f"stage kind {config['kind']!r} is not available: {exc}") from None
        try:
            module.Config.model_validate(absolutize_paths(substitute(config), base))
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = tuple(first["loc"])
            where = _where_in_study(stage, origin, loc)
            hint = f"stage {stage!r} is generated from {'.'.join(map(str, origin))}"
            if first["type"] == "extra_forbidden":
                known = fields_at(module.Config, loc[:-1])
                raise error(
                    where,
                    f"unknown key {loc[-1]!r}{did_you_mean(str(loc[-1]), known)}",
                    f"allowed here: {', '.join(known)}; {hint}" if known else hint,
                ) from None
            if first["type"] == "missing":
                raise error(where, f"missing required key {loc[-1]!r}", hint) from None
            raise error(where, f"{first['msg']} (got {first.get('input')!r})", hint) from None


def expand_section(
    data: dict[str, Any], lines: dict[tuple, int], file: Path
) -> tuple[dict[str, Any], StudyExpansion]:
    """The pipeline `data` with its `study:` section replaced by the stages it expands into.

    `lines` gains line numbers for the generated stages (their template's), so that any later error
    in a generated stage points at the line it comes from.
    """
    from alloylm.config.yaml_lines import dotted, line_of

    def error(where: tuple, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message,
            file=str(file),
            line=line_of(lines, where),
            key=dotted(where) or None,
            hint=hint,
        )

    expansion = expand_study(data["study"], data, error, lines)
    variables = data.get("vars") or {}
    prevalidate(expansion, variables if isinstance(variables, dict) else {}, file.parent, error)
    expanded = {key: value for key, value in data.items() if key != "study"}
    expanded["stages"] = {**(data.get("stages") or {}), **expansion.stages}
    lines.update(expansion.lines)
    return expanded, expansion


# -- the plan file (the contract with alloylm.analysis) ------------------------------------------
def plan_document(pipeline: Pipeline) -> dict[str, Any]:
    """study_plan.json's content: every model of the grid with the exact source the eval got."""
    from alloylm.config.pipeline import resolve_stage_refs

    expansion: StudyExpansion = pipeline.study
    output = pipeline.output_dir
    outputs = {name: output / name for name in pipeline.stages}
    eval_models = resolve_stage_refs(pipeline.stages[expansion.eval_stage].raw["models"], outputs)
    models = []
    for entry in expansion.models:
        entry = dict(entry)
        source = eval_models[entry.pop("eval_index")]
        entry["source"] = source
        entry["eval_model"] = source
        models.append(entry)
    return {
        "version": PLAN_VERSION,
        "study": expansion.name,
        "pipeline_file": str(pipeline.file),
        "output": str(output),
        "eval_stage": expansion.eval_stage,
        "baseline": expansion.baseline,
        "models": models,
        "curves": copy.deepcopy(expansion.curves),
        "confirm_tasks": list(expansion.confirm_tasks),
        "notes": dict(expansion.notes),
    }


def write_plan(pipeline: Pipeline) -> Path:
    """Write `<output>/study_plan.json` atomically; return its path."""
    from alloylm.atomic import atomic_write_json

    path = pipeline.output_dir / PLAN_FILE
    atomic_write_json(path, plan_document(pipeline))
    return path
