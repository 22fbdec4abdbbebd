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


# -- the study's values (lamm-mit/LLM-finetuning@74b8e6f, the paper; recipes/paper/README.md) -----
PAPER = REPO / "recipes" / "paper"
GRIDS = sorted((PAPER / "study").glob("*.yaml"))
ALL = [*RECIPES, *GRIDS]
TEST_DATA = REPO / "tests" / "data"


def _load(recipe: Path):
    return load_pipeline(recipe, check_data=False)


def _of_kind(pipeline, kind: str) -> list:
    return [spec for spec in pipeline.stages.values() if spec.kind == kind]


@pytest.mark.parametrize("recipe", ALL, ids=lambda p: p.parent.name + "/" + p.stem)
def test_every_merge_uses_the_reference_schedule_and_g_is_labelled(recipe: Path) -> None:
    from alloylm.merge.plan import schedule_preset

    pipeline = _load(recipe)
    for spec in _of_kind(pipeline, "merge"):
        expected = "variant_g" if spec.name.endswith("_G") else "study"
        assert spec.config.schedule == expected, spec.name
    assert schedule_preset("study") == REFERENCE
    text = recipe.read_text()
    if recipe in GRIDS:
        assert "# G: variant_g" in text and "Inferred:" in text
    if recipe.stem == "llama31_8b_instruct":  # G where the study compared schedules
        g = pipeline.stages["orpo_slerp_G"].config
        assert g.models == ["${stages.orpo.output}"] and "Inferred:" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.stem)
def test_every_stage_is_merged(recipe: Path) -> None:
    stages = _load(recipe).stages
    family = next(key for key in INSTRUCT if recipe.stem.startswith(key))
    for step in ("cpt", "sft", "dpo", "orpo"):
        merge = stages[f"{step}_slerp"]
        assert merge.depends_on == [step]
        assert merge.config.base_model == INSTRUCT[family] and merge.config.method == "slerp"


@pytest.mark.parametrize("recipe", GRIDS, ids=lambda p: p.stem)
def test_every_grid_model_is_merged(recipe: Path) -> None:
    models = _load(recipe).study.models
    stage_models = {m["id"] for m in models if m["role"] == "stage"}
    merged = {m["parents"][0] for m in models if m["role"] == "merge"}
    assert merged == stage_models


@pytest.mark.parametrize("recipe", ALL, ids=lambda p: p.parent.name + "/" + p.stem)
def test_training_follows_the_studys_objective_prompts_and_optimizer(recipe: Path) -> None:
    pipeline = _load(recipe)
    sft, dpo, orpo = (_of_kind(pipeline, kind) for kind in ("sft", "dpo", "orpo"))
    assert sft and dpo and orpo
    for spec in sft:  # loss on every token, packed conversations attend to each other
        assert spec.config.objective == "all_tokens_concatenated", spec.name
    for spec in [*sft, *dpo, *orpo]:  # the alignment-handbook's empty system message
        assert spec.config.empty_system_turn is True, spec.name
    for spec in dpo:  # TRL cut long prompts from the left; none dropped
        assert spec.config.long_prompts == "truncate_left", spec.name
    for spec in orpo:  # run_orpo.py dropped them
        assert spec.config.long_prompts == "drop", spec.name
    for spec in [*sft, *dpo, *orpo, *_of_kind(pipeline, "cpt")]:
        assert spec.config.train.optimizer == "adamw_torch", spec.name
        for source in spec.config.data:  # fractions take the first rows, as the handbook did
            assert source.weight >= 1 or source.fraction == "first", (spec.name, source.path)


def _cpt_weights(recipe: Path) -> dict[str, float]:
    pipeline = _load(recipe)
    cpt = _of_kind(pipeline, "cpt")[0].config
    return {Path(source.path).stem: source.weight for source in cpt.data}


@pytest.mark.parametrize("recipe", ALL, ids=lambda p: p.parent.name + "/" + p.stem)
def test_cpt_weights_are_table_6s_and_the_doubt_is_said(recipe: Path) -> None:
    weights, text = _cpt_weights(recipe), recipe.read_text()
    if "smollm" in recipe.stem:  # Table 6: 80K 1.0, 60K 2.0
        assert weights["bio-silk-mech-mix-80K"] == 1.0
        assert weights["bio-materials-text-60K"] == 2.0
        assert "lamm-mit/lamm-mit/bio-silk-mech-mix-80" in text and "typo" in text
    else:  # Table 6: 2.0; the config's duplicate key ran 1.0
        assert weights["bio-silk-mech-mix-80K"] == 2.0
        assert weights["bio-materials-text-60K"] == 1.0
    assert "UNKNOWN" in text


@pytest.mark.parametrize("recipe", GRIDS, ids=lambda p: p.stem)
def test_the_benchmarks_score_true_false_with_multiple_choice(recipe: Path) -> None:
    from alloylm.evals.loaders import load_items
    from alloylm.evals.tasks import task_type

    pipeline = _load(recipe)
    tasks = pipeline.stages[pipeline.study.eval_stage].config.tasks
    assert [t.name for t in tasks] == ["spider_silk_basic", "spider_silk_advanced", "bio_inspired"]
    items = load_items(TEST_DATA / "spider_silk_format" / "items.csv").items
    kinds = sorted(item.kind for item in items)
    assert kinds.count("mcq") == 4 and kinds.count("true_false") == 4
    for task in tasks:  # every item of a file in the study's layout is scored, both kinds
        assert task_type(task.type).select(items) == items
    assert len(task_type("mcq").select(items)) == 4  # what `type: mcq` would have scored


@pytest.mark.parametrize(
    "recipe", [g for g in GRIDS if "smollm" not in g.stem], ids=lambda p: p.stem
)
def test_the_cpt_epoch_ablation_takes_one_runs_checkpoints(recipe: Path) -> None:
    pipeline = _load(recipe)
    models = {m["id"]: m for m in pipeline.study.models}
    for lineage in ("base", "instruct"):
        run = pipeline.stages[f"{lineage}_cpt"].config
        assert run.save_epochs is True and run.train.epochs == 5
        assert run.train.lr_scheduler == "cosine"  # one schedule over the five epochs
        for k in range(1, 6):
            model = models[f"{lineage}_cpt-e{k}"]
            assert model["stage"] == f"{lineage}_cpt" and model["variant"] == {"cpt_epoch": k}
            suffix = "" if k == 5 else f"/epochs/{k}"
            assert model["source"] == "${stages." + f"{lineage}_cpt.output}}" + suffix
            assert f"{lineage}_cpt-e{k}_slerp" in models  # each merged
    assert len(_of_kind(pipeline, "cpt")) == 2  # one run per lineage, shared by every strategy


def test_the_llama_plan_lists_table_4_and_says_what_the_study_does_not_give() -> None:
    from alloylm.cli.main import main

    recipe = PAPER / "study" / "llama31_8b.yaml"
    models = _load(recipe).study.models
    by = {
        (m["lineage"], m["strategy"], m["merged"])
        for m in models
        if m["role"] in ("stage", "merge")
    }
    for lineage in ("base", "instruct"):
        for strategy in ("CPT", "CPT-SFT", "CPT-SFT-DPO", "CPT-SFT-ORPO", "LoRA"):
            assert {(lineage, strategy, False), (lineage, strategy, True)} <= by
    assert {m["id"] for m in models if m["role"] in ("start", "partner")} == {
        "base", "instruct", "partner",
    }  # fmt: skip
    from alloylm.cli.display import console

    with console.capture() as captured:
        assert main(["study", "plan", str(recipe), "--no-data-check"]) == 0
    out = " ".join(captured.get().split())
    assert "LoRA *" in out and "no hyperparameters" in out
    assert "base_cpt-e1" in out and "instruct_lora_slerp" in out


def test_the_readme_table_matches_the_recipes() -> None:
    readme = (PAPER / "README.md").read_text()
    row = {
        line.split("|")[1].strip(): line.split("|")[2]
        for line in readme.splitlines()
        if line.startswith("| ") and line.count("|") >= 5
    }
    for setting in ("merge schedule", "merged models", "SFT objective", "empty system turn",
                    "DPO long prompts", "ORPO long prompts", "optimizer", "CPT-epoch ablation",
                    "LoRA case", "benchmarks' item kinds", "fractional weights"):  # fmt: skip
        assert any(key.startswith(setting) for key in row), setting
    stages = _load(PAPER / "llama31_8b_base.yaml").stages
    claims = {
        "SFT objective": f"sft.objective: {stages['sft'].config.objective}",
        "DPO long prompts": f"dpo.long_prompts: {stages['dpo'].config.long_prompts}",
        "ORPO long prompts": f"orpo.long_prompts: {stages['orpo'].config.long_prompts}",
        "optimizer": f"train.optimizer: {stages['sft'].config.train.optimizer}",
        "merge schedule": f"schedule: {stages['dpo_slerp'].config.schedule}",
        "empty system turn": "sft.empty_system_turn: true",
    }
    for setting, claim in claims.items():
        assert claim in row[setting], (setting, claim)
    assert "unverified" in readme and "Table 6" in readme


def test_the_llama_grids_commented_objective_axis_works(tmp_path: Path) -> None:
    """Uncommented, the example compares the study's SFT objective with alloylm's default."""
    text = (PAPER / "study" / "llama31_8b.yaml").read_text()
    start = text.index("    # settings:\n")
    block = text[start:].split("\n  merge:")[0]
    uncommented = "\n".join(line.replace("# ", "", 1) for line in block.splitlines())
    path = tmp_path / "llama31_8b.yaml"  # data paths are not checked (placeholders)
    path.write_text(text.replace(block, uncommented))
    stages = _load(path).stages
    objectives = {
        name: spec.config.objective for name, spec in stages.items() if spec.kind == "sft"
    }
    assert objectives["base_cpt_sft-study"] == "all_tokens_concatenated"
    assert objectives["base_cpt_sft-ours"] == "assistant_tokens"
