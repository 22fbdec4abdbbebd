"""Every shipped study recipe validates (stage configs, DAG) without its user-provided data."""

from __future__ import annotations

from pathlib import Path

import pytest

from alloylm.pipeline.graph import check_graph
from alloylm.pipeline.load import load_pipeline

RECIPES = sorted((Path(__file__).resolve().parents[2] / "recipes" / "paper").glob("*.yaml"))
INSTRUCT = {
    "llama31": "meta-llama/Llama-3.1-8B-Instruct",
    "mistral": "mistralai/Mistral-7B-Instruct-v0.3",
    "smollm": "HuggingFaceTB/SmolLM-1.7B-Instruct",
}


def test_all_five_recipes_are_shipped() -> None:
    assert [r.name for r in RECIPES] == [
        "llama31_8b_base.yaml", "llama31_8b_instruct.yaml", "mistral_7b_v03_base.yaml",
        "mistral_7b_v03_instruct.yaml", "smollm_1.7b.yaml",
    ]  # fmt: skip


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_recipe_validates_and_wires_the_study_chain(recipe: Path) -> None:
    pipeline = load_pipeline(recipe, check_data=False)
    order = check_graph(pipeline, check_data=False)
    stages = pipeline.stages
    assert [stages[n].kind for n in order][:2] == ["cpt", "sft"]
    assert {n: stages[n].depends_on for n in ("sft", "dpo", "orpo", "dpo_slerp", "orpo_slerp")} == {
        "sft": ["cpt"], "dpo": ["sft"], "orpo": ["sft"], "dpo_slerp": ["dpo"], "orpo_slerp": ["orpo"],
    }  # fmt: skip
    family = next(key for key in INSTRUCT if recipe.stem.startswith(key))
    for merge in ("dpo_slerp", "orpo_slerp"):
        config = stages[merge].config
        assert config.method == "slerp" and config.base_model == INSTRUCT[family]
    # the intended CPT mix weights: the duplicated study source counts twice
    assert 2.0 in [source.weight for source in stages["cpt"].config.data]
    text = recipe.read_text()
    assert "HARDWARE:" in text and "lamm-mit/LLM-finetuning" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_preference_hyperparameters_are_the_studys(recipe: Path) -> None:
    stages = load_pipeline(recipe, check_data=False).stages
    dpo, orpo = stages["dpo"].config, stages["orpo"].config
    assert (dpo.loss_type, dpo.train.learning_rate, dpo.train.lr_scheduler, dpo.train.warmup_ratio) == (
        "sigmoid", 5.0e-7, "cosine", 0.1,
    )  # fmt: skip
    assert dpo.train.epochs == 1 and dpo.beta in (0.01, 0.05)
    assert dpo.beta == (0.01 if recipe.stem == "mistral_7b_v03_base" else 0.05)
    assert orpo.beta == 0.1 and orpo.train.lr_scheduler == "cosine"
    assert orpo.train.learning_rate in (3.0e-6, 5.0e-6)


@pytest.mark.parametrize(
    "recipe", [r for r in RECIPES if r.stem != "smollm_1.7b"], ids=lambda p: p.stem
)
def test_orpo_warms_up_for_the_studys_100_steps(recipe: Path) -> None:
    from alloylm.train._trl import warmup_steps

    orpo = load_pipeline(recipe, check_data=False).stages["orpo"].config
    assert orpo.train.warmup_steps == 100
    assert warmup_steps(orpo.train) == 100  # a whole number of steps, not a ratio


def test_warmup_ratio_applies_when_no_steps_are_given() -> None:
    from alloylm.train._trl import warmup_steps
    from alloylm.train.config import TrainConfig

    assert warmup_steps(TrainConfig(warmup_ratio=0.1)) == 0.1
    assert warmup_steps(TrainConfig(warmup_ratio=0.0)) == 0
    assert warmup_steps(TrainConfig(warmup_ratio=0.1, warmup_steps=7)) == 7


REPO = Path(__file__).resolve().parents[2]
REFERENCE = [
    {"filter": "self_attn", "value": [0, 0.5, 0.3, 0.7, 1]},
    {"filter": "mlp", "value": [1, 0.5, 0.7, 0.3, 0]},
    {"value": 0.5},
]


def test_study_cpu_merges_with_the_reference_schedule() -> None:
    from alloylm.merge.plan import schedule_preset

    pipeline = load_pipeline(REPO / "recipes" / "study_cpu.yaml")
    merges = [m for m in pipeline.study.models if m["role"] == "merge"]
    assert merges and {m["schedule"] for m in merges} == {"ref"}
    for merge in merges:
        config = pipeline.stages[merge["stage"]].config
        assert config.schedule == "study" and schedule_preset(config.schedule) == REFERENCE
    text = (REPO / "recipes" / "study_cpu.yaml").read_text()
    assert "# G: variant_g" in text and "Inferred:" in text  # G stays, labelled


def test_a_study_merges_with_the_reference_schedule_by_default() -> None:
    from alloylm.pipeline.study import MergeSection

    assert MergeSection(partner="x").schedules == {"ref": "study"}
