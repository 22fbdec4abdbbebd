"""The study expansion: a `study:` section -> ordinary stages and the plan (pure, no training)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alloylm.errors import ConfigError
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.study import (
    PLAN_FILE,
    deep_merge,
    expand_study,
    plan_document,
    stage_ref,
    write_plan,
)

REPO = Path(__file__).resolve().parents[2]
GRID = ["CPT", "CPT-SFT", "CPT-SFT-DPO", "CPT-SFT-ORPO"]


def _error(where, message, hint=None):
    return ConfigError(message, key=".".join(map(str, where)), hint=hint)


def _section(**changes):
    section = {
        "lineages": {"instruct": {"model": "tiny:llama"}},
        "strategies": list(GRID),
        "stages": {
            "cpt": {"data": [{"path": "text.jsonl"}], "train": {"max_steps": 1}},
            "sft": {"data": [{"path": "chat.jsonl"}], "train": {"max_steps": 1}},
            "dpo": {"data": [{"path": "pref.jsonl"}], "train": {"max_steps": 1}},
            "orpo": {"data": [{"path": "pref.jsonl"}], "train": {"max_steps": 1}},
        },
        "merge": {"partner": "tiny:llama:1", "schedules": {"G": "variant_g"}},
        "eval": {"protocols": ["cloze"], "tasks": [{"path": "mcq.jsonl", "type": "mcq"}]},
    }
    return deep_merge(section, changes)


def _expand(section):
    return expand_study(section, {"run": {"name": "t", "seed": 7}}, _error)


def _kinds(expansion, kind):
    return [name for name, config in expansion.stages.items() if config["kind"] == kind]


def test_the_grid_builds_each_shared_prefix_once():
    expansion = _expand(_section())
    assert _kinds(expansion, "cpt") == ["instruct_cpt"]  # one CPT per lineage
    assert _kinds(expansion, "sft") == ["instruct_cpt_sft"]  # one SFT before both DPO and ORPO
    stages = expansion.stages
    assert stages["instruct_cpt"]["model"] == "tiny:llama"
    assert stages["instruct_cpt_sft"]["model"] == stage_ref("instruct_cpt")
    assert stages["instruct_cpt_sft_dpo"]["model"] == stage_ref("instruct_cpt_sft")
    assert stages["instruct_cpt_sft_orpo"]["model"] == stage_ref("instruct_cpt_sft")
    assert len(_kinds(expansion, "merge")) == 4  # each strategy's model, +merge
    assert _kinds(expansion, "eval") == ["eval"]
    assert len(stages) == 4 + 4 + 1
    roles = [m["role"] for m in expansion.models]
    assert roles == ["start", "partner"] + ["stage"] * 4 + ["merge"] * 4
    # the template is shared, the chain is filled in
    assert stages["instruct_cpt_sft_dpo"]["data"] == [{"path": "pref.jsonl"}]


def test_merges_have_the_right_parents_and_schedule():
    expansion = _expand(_section())
    merge = expansion.stages["instruct_cpt_sft_dpo_slerp"]
    assert merge["method"] == "slerp"
    assert merge["base_model"] == "tiny:llama:1"  # the partner: t = 0 gives it
    assert merge["models"] == [stage_ref("instruct_cpt_sft_dpo")]
    assert merge["schedule"] == "variant_g"
    entry = next(m for m in expansion.models if m["id"] == "instruct_cpt_sft_dpo_slerp")
    assert entry["parents"] == ["instruct_cpt_sft_dpo", "partner"]
    assert entry["schedule"] == "G" and entry["merged"] and entry["strategy"] == "CPT-SFT-DPO"


def test_one_eval_scores_every_model_once_with_the_same_settings():
    section = _section(merge={"partner": "tiny:llama"})  # the partner is the start model
    expansion = _expand(section)
    evaluation = expansion.stages["eval"]
    assert evaluation["models"][0] == "tiny:llama"
    assert len(evaluation["models"]) == 1 + 4 + 4  # start == partner: scored once
    assert len(set(evaluation["models"])) == len(evaluation["models"])
    assert evaluation["baseline"] == "tiny:llama" and expansion.baseline == "partner"
    assert evaluation["protocols"] == ["cloze"] and evaluation["tasks"][0]["type"] == "mcq"
    ids = {m["id"]: m["eval_index"] for m in expansion.models}
    assert ids["instruct"] == ids["partner"] == 0


def test_two_lineages_two_schedules_multiply_and_lineage_overrides_stay_in_their_lineage():
    section = _section(
        lineages={
            "base": {"model": "tiny:llama:2"},
            "instruct": {"model": "tiny:llama", "stages": {"dpo": {"beta": 0.01}}},
        },
        merge={"schedules": {"G": "variant_g", "study": "study", "flat": {"t": 0.3}}},
    )
    expansion = _expand(section)
    assert sorted(_kinds(expansion, "cpt")) == ["base_cpt", "instruct_cpt"]
    assert len(_kinds(expansion, "dpo")) == 2 and len(_kinds(expansion, "merge")) == 2 * 4 * 3
    assert "beta" not in expansion.stages["base_cpt_sft_dpo"]
    assert expansion.stages["instruct_cpt_sft_dpo"]["beta"] == 0.01
    flat = expansion.stages["base_cpt_slerp-flat"]
    assert flat["parameters"] == {"t": 0.3} and "schedule" not in flat
    assert expansion.stages["base_cpt_slerp-study"]["schedule"] == "study"


def test_a_data_axis_shares_the_stages_before_its_step():
    section = _section(
        ablations={
            "data": {
                "sft_data": {
                    "step": "sft",
                    "variants": {"clean": [{"path": "c.jsonl"}], "noisy": [{"path": "n.jsonl"}]},
                }
            }
        }
    )
    expansion = _expand(section)
    assert _kinds(expansion, "cpt") == ["instruct_cpt"]  # before the varied step: shared
    assert _kinds(expansion, "sft") == ["instruct_cpt_sft-clean", "instruct_cpt_sft-noisy"]
    assert expansion.stages["instruct_cpt_sft-noisy"]["data"] == [{"path": "n.jsonl"}]
    assert expansion.stages["instruct_cpt_sft-noisy_dpo"]["model"] == stage_ref(
        "instruct_cpt_sft-noisy"
    )
    # CPT (1) + 3 strategies with SFT x 2 variants = 7 models, each merged
    stage_models = [m for m in expansion.models if m["role"] == "stage"]
    assert len(stage_models) == 1 + 3 * 2 and len(_kinds(expansion, "merge")) == 7
    variants = {m["id"]: m["variant"] for m in stage_models}
    assert variants["instruct_cpt"] == {}
    assert variants["instruct_cpt_sft-clean_orpo"] == {"sft_data": "clean"}


def test_cpt_data_axis_times_strategies():
    section = _section(
        ablations={
            "data": {
                "cpt_corpus": {
                    "step": "cpt",
                    "variants": {"clean": [{"path": "c.txt"}], "noisy": [{"path": "n.txt"}]},
                }
            }
        }
    )
    expansion = _expand(section)
    assert _kinds(expansion, "cpt") == ["instruct_cpt-clean", "instruct_cpt-noisy"]
    for kind in ("sft", "dpo", "orpo"):
        assert len(_kinds(expansion, kind)) == 2
    assert len(_kinds(expansion, "merge")) == 4 * 2


def test_cpt_epochs_independent_and_chained():
    independent = _expand(
        _section(ablations={"cpt_epochs": {"epochs": [3, 1, 2], "strategies": ["CPT"]}})
    )
    epochs = {
        name: (config["model"], config["train"]["epochs"], config["train"]["max_steps"])
        for name, config in independent.stages.items()
        if name.startswith("instruct_cpt-e") and config["kind"] == "cpt"
    }
    # each value trains from the start model (its own full schedule); max_steps gives way to epochs
    assert epochs == {f"instruct_cpt-e{k}": ("tiny:llama", k, -1) for k in (1, 2, 3)}
    assert "instruct_cpt" in independent.stages  # the other strategies keep the template's CPT
    merged = [m for m in independent.models if m["role"] == "merge" and m["strategy"] == "CPT"]
    assert [m["variant"] for m in merged] == [{"cpt_epoch": k} for k in (1, 2, 3)]

    chained = _expand(
        _section(
            ablations={
                "cpt_epochs": {"epochs": [1, 2, 3], "mode": "chained", "strategies": ["CPT"]}
            }
        )
    )
    links = {
        n: c
        for n, c in chained.stages.items()
        if n.startswith("instruct_cpt-e") and c["kind"] == "cpt"
    }
    assert list(links) == ["instruct_cpt-e1", "instruct_cpt-e2", "instruct_cpt-e3"]
    assert links["instruct_cpt-e1"]["model"] == "tiny:llama"
    assert links["instruct_cpt-e2"]["model"] == stage_ref("instruct_cpt-e1")
    assert links["instruct_cpt-e3"]["model"] == stage_ref("instruct_cpt-e2")
    assert all(c["train"]["epochs"] == 1 for c in links.values())
    assert links["instruct_cpt-e3"]["train"]["seed"] == 7 + 2  # each epoch shuffles anew


def test_merge_only_some_strategies():
    expansion = _expand(_section(merge={"strategies": ["CPT-SFT-DPO"]}))
    assert _kinds(expansion, "merge") == ["instruct_cpt_sft_dpo_slerp"]
    assert not _kinds(_expand(_section(merge={"strategies": "none"})), "merge")


def test_lora_and_sft_only_strategies():
    section = _section(strategies=["SFT", "LoRA"])
    section["stages"]["lora"] = {"kind": "sft", "data": [{"path": "chat.jsonl"}],
                                 "train": {"lora": {"r": 8}}}  # fmt: skip
    expansion = _expand(section)
    assert expansion.stages["instruct_sft"]["model"] == "tiny:llama"
    assert expansion.stages["instruct_lora"]["kind"] == "sft"
    assert expansion.stages["instruct_lora"]["train"]["lora"] == {"r": 8}


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("CPT-SFT-DOP", "did you mean 'CPT-SFT-DPO'"),
        ("CPT-STF", "did you mean 'CPT-SFT'"),
        ("CPT-KTO", "no step 'KTO'"),
    ],
)
def test_unknown_strategy_says_did_you_mean(strategy, expected):
    with pytest.raises(ConfigError) as error:
        _expand(_section(strategies=["CPT", strategy]))
    assert expected in error.value.message
    assert error.value.key == "study.strategies.1"


def test_a_step_without_template_and_other_mistakes_name_the_key():
    section = _section()
    del section["stages"]["orpo"]
    with pytest.raises(ConfigError, match="needs step 'orpo', which has no template"):
        _expand(section)
    with pytest.raises(ConfigError) as error:
        _expand(_section(merge={"strategies": ["CPT-SFT-DPX"]}))
    assert "did you mean 'CPT-SFT-DPO'" in error.value.message
    assert error.value.key == "study.merge.strategies"
    with pytest.raises(ConfigError, match="fills in"):
        _expand(_section(eval={"models": ["x"]}))
    with pytest.raises(ConfigError) as error:
        _expand(_section(baseline="instrct"))
    assert "did you mean 'instruct'" in error.value.message


def _write(tmp_path: Path, study: dict, **top) -> Path:
    for name in ("text.jsonl", "chat.jsonl", "pref.jsonl", "mcq.jsonl"):
        (tmp_path / name).write_text("{}\n")
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"run": {"name": "t", "output": "out"}, **top, "study": study}))
    return path


def test_a_study_file_loads_as_an_ordinary_pipeline_and_writes_the_plan(tmp_path):
    pipeline = load_pipeline(_write(tmp_path, _section()), check_data=False)
    assert list(pipeline.stages)[0] == "instruct_cpt"
    assert pipeline.stages["instruct_cpt_sft_orpo"].depends_on == ["instruct_cpt_sft"]
    assert pipeline.stages["eval"].kind == "eval"
    path = write_plan(pipeline)
    assert path == tmp_path / "out" / PLAN_FILE
    plan = json.loads(path.read_text())
    assert plan == plan_document(pipeline)
    assert plan["version"] == 1 and plan["eval_stage"] == "eval" and plan["baseline"] == "partner"
    assert plan["output"] == str(tmp_path / "out")
    by_id = {m["id"]: m for m in plan["models"]}
    assert by_id["instruct_cpt_sft"]["source"] == str(tmp_path / "out" / "instruct_cpt_sft")
    assert by_id["instruct_cpt_sft"]["eval_model"] == by_id["instruct_cpt_sft"]["source"]
    assert by_id["partner"]["source"] == "tiny:llama:1"
    # every model's source is exactly one of the eval stage's models
    from alloylm.config.pipeline import resolve_stage_refs

    outputs = {name: tmp_path / "out" / name for name in pipeline.stages}
    evaluated = resolve_stage_refs(pipeline.stages["eval"].config.models, outputs)
    assert {m["source"] for m in plan["models"]} == set(evaluated)
    for model in plan["models"]:
        assert "eval_index" not in model
        for parent in model.get("parents", []):
            assert parent in by_id


def test_errors_in_a_template_point_at_the_template(tmp_path):
    section = _section()
    section["stages"]["sft"]["train"]["learning_rat"] = 1e-5
    path = _write(tmp_path, section)
    with pytest.raises(ConfigError) as error:
        load_pipeline(path, check_data=False)
    assert error.value.key == "study.stages.sft.train.learning_rat"
    assert "did you mean 'learning_rate'" in error.value.message
    line = path.read_text().splitlines()[error.value.line - 1]
    assert "learning_rat" in line


def test_unknown_study_key_and_overrides(tmp_path):
    path = _write(tmp_path, {**_section(), "stratgies": ["CPT"]})
    with pytest.raises(ConfigError) as error:
        load_pipeline(path, check_data=False)
    assert (
        "did you mean 'strategies'" in error.value.message and error.value.key == "study.stratgies"
    )
    assert error.value.line is not None
    # overrides reach the study section before it expands
    pipeline = load_pipeline(
        _write(tmp_path, _section()), ["study.stages.cpt.train.max_steps=5"], check_data=False
    )
    assert pipeline.stages["instruct_cpt"].config.train.max_steps == 5


def test_a_hand_written_stage_with_a_generated_name_is_refused(tmp_path):
    stage = {"kind": "merge", "method": "linear", "models": ["tiny:llama", "tiny:llama:1"]}
    path = _write(tmp_path, _section(), stages={"instruct_cpt": stage})
    with pytest.raises(ConfigError, match="also generated by the study"):
        load_pipeline(path, check_data=False)


def test_study_cpu_recipe_validates():
    pipeline = load_pipeline(REPO / "recipes" / "study_cpu.yaml")
    names = list(pipeline.stages)
    assert names[0] == "data"
    assert [n for n in names if pipeline.stages[n].kind == "cpt"] == ["instruct_cpt"]
    kinds = sorted(pipeline.stages[n].kind for n in names)
    assert kinds.count("merge") == 4 + 3 and kinds.count("eval") == 1
    evaluation = pipeline.stages["eval"].config
    assert evaluation.protocols == ["cloze"]
    assert [t.type for t in evaluation.tasks] == ["mcq", "perplexity", "mcq", "mcq"]
    # the confirmation split: the shipped MMLU questions, no choice made on them
    assert [t.name for t in evaluation.tasks[2:]] == ["mmlu_anatomy", "mmlu_college_biology"]
    assert pipeline.study.confirm_tasks == ["mmlu_anatomy", "mmlu_college_biology"]
    assert evaluation.tasks[0].limit is None  # all 336 review questions
    assert evaluation.tasks[1].path.endswith("instruct_cpt.output}/heldout.jsonl")
    assert evaluation.tasks[1].unit_chars == 1000  # 32 scoring units of the 8 held-out sections
    assert len(evaluation.models) == 9 + 3  # the start model is the partner; 3 curve points
    (curve,) = pipeline.study.curves
    assert curve["merge"] == "instruct_cpt_sft_dpo_slerp" and len(curve["points"]) == 5


def test_study_cpu_deep_is_study_cpu_with_a_longer_cpt():
    """The deep study asks study_cpu's question where SLERP is spherical: the same grid, with
    only the names and the cpt stage's steps, learning rate and checkpoint interval changed."""
    shallow = yaml.safe_load((REPO / "recipes" / "study_cpu.yaml").read_text())
    deep = yaml.safe_load((REPO / "recipes" / "study_cpu_deep.yaml").read_text())
    cpt_train = deep["study"]["stages"]["cpt"]["train"]
    assert (cpt_train["max_steps"], cpt_train["learning_rate"]) == (280, 1.0e-3)
    assert cpt_train.pop("lr_scheduler") == "cosine"  # the default, stated
    for key in ("max_steps", "learning_rate", "save_steps"):
        cpt_train[key] = shallow["study"]["stages"]["cpt"]["train"][key]
    deep["run"]["name"] = deep["study"]["name"] = "study_cpu"
    deep["run"]["output"] = "../runs/study_cpu"
    assert deep == shallow
    pipeline = load_pipeline(REPO / "recipes" / "study_cpu_deep.yaml")
    assert pipeline.stages["instruct_cpt"].config.train.max_steps == 280
    assert len(pipeline.stages["eval"].config.models) == 9 + 3


@pytest.mark.parametrize(
    "recipe", sorted((REPO / "recipes" / "paper" / "study").glob("*.yaml")), ids=lambda p: p.stem
)
def test_paper_study_recipes_validate(recipe):
    pipeline = load_pipeline(recipe, check_data=False)
    study = pipeline.study
    assert set(study.models[0]) >= {"id", "role", "source"}
    merges = [n for n, s in pipeline.stages.items() if s.kind == "merge"]
    lineages = [m for m in study.models if m["role"] == "start"]
    stage_models = [m for m in study.models if m["role"] == "stage"]
    assert len(merges) == len(stage_models) >= 4 * len(lineages)  # every model also merged
    for name in merges:
        config = pipeline.stages[name].config
        assert config.schedule == "study"  # the study's reference schedule
        assert config.base_model.endswith(("Instruct", "Instruct-v0.3"))
    if len(lineages) == 2:  # Base and Instruct differ where the study's configs differ
        base = pipeline.stages["base_cpt_sft_orpo"].config
        instruct = pipeline.stages["instruct_cpt_sft_orpo"].config
        assert base.model.endswith("base_cpt_sft.output}")
        assert base != instruct


def test_a_curve_adds_merges_at_inner_t_with_the_ends_from_the_grid():
    expansion = _expand(
        _section(merge={"curve": {"strategies": ["CPT-SFT-DPO"], "t": [0.5, 0.25]}})
    )
    (curve,) = expansion.curves
    assert curve["merge"] == "instruct_cpt_sft_dpo_slerp"
    points = [(p["t"], p["model"]) for p in curve["points"]]
    assert points == [
        (0.0, "partner"),  # slerp's t = 0 is the partner
        (0.25, "instruct_cpt_sft_dpo_slerp-t025"),
        (0.5, "instruct_cpt_sft_dpo_slerp-t050"),
        (1.0, "instruct_cpt_sft_dpo"),  # t = 1 is the strategy's model
    ]
    stage = expansion.stages["instruct_cpt_sft_dpo_slerp-t025"]
    assert stage["parameters"] == {"t": 0.25} and "schedule" not in stage
    assert stage["models"] == [stage_ref("instruct_cpt_sft_dpo")]
    entry = next(m for m in expansion.models if m["id"] == "instruct_cpt_sft_dpo_slerp-t025")
    assert entry["role"] == "curve" and not entry["merged"]  # not one of the study's merges
    assert stage_ref("instruct_cpt_sft_dpo_slerp-t025") in expansion.stages["eval"]["models"]


def test_a_curve_can_scale_a_schedule():
    from alloylm.pipeline.study import scale_setting

    schedule = [{"filter": "self_attn", "value": [0, 0.3, 0.5, 0.7, 1]}, {"value": 0.5}]
    assert scale_setting(schedule, 0.5) == [
        {"filter": "self_attn", "value": [0, 0.15, 0.25, 0.35, 0.5]},
        {"value": 0.25},
    ]
    expansion = _expand(
        _section(merge={"curve": {"strategies": ["CPT"], "t": [0.5], "schedule": "G"}})
    )
    (curve,) = expansion.curves
    assert [p["model"] for p in curve["points"]] == [
        "partner", "instruct_cpt_slerp-G-t050", "instruct_cpt_slerp"]  # fmt: skip
    t = expansion.stages["instruct_cpt_slerp-G-t050"]["parameters"]["t"]
    assert t[0] == {"filter": "self_attn", "value": [0, 0.15, 0.25, 0.35, 0.5]}
    with pytest.raises(ConfigError, match="did you mean 'CPT-SFT'"):
        _expand(_section(merge={"curve": {"strategies": ["CPT-STF"]}}))
    with pytest.raises(ConfigError, match="strictly between 0 and 1"):
        _expand(_section(merge={"curve": {"strategies": ["CPT"], "t": [0, 0.5]}}))


def test_a_misspelt_key_is_named_rather_than_the_missing_one():
    section = _section()
    section["lineages"] = {"instruct": {"modle": "tiny:llama"}}
    with pytest.raises(ConfigError) as error:
        _expand(section)
    assert error.value.key == "study.lineages.instruct.modle"
    assert "did you mean 'model'" in error.value.message
    with pytest.raises(ConfigError) as error:
        _expand(_section(ablations={"cpt_epochs": {"epochs": [0, 1]}}))
    assert error.value.key == "study.ablations.cpt_epochs.epochs"
    assert error.value.message.count("got") == 1


def test_confirmation_tasks_are_scored_and_named_in_the_plan():
    confirm = [{"path": "mmlu.csv", "type": "mcq", "name": "mmlu_confirm"}]
    section = _section()
    section["eval"]["confirm"] = confirm
    expansion = _expand(section)
    tasks = expansion.stages["eval"]["tasks"]
    assert [t.get("name") for t in tasks] == [
        None,
        "mmlu_confirm",
    ] and "confirm" not in expansion.stages["eval"]
    assert expansion.confirm_tasks == ["mmlu_confirm"]
    section["eval"]["confirm"] = [{"path": "mmlu.csv"}]
    with pytest.raises(ConfigError, match="needs a `name`"):
        _expand(section)
