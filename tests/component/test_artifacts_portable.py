"""A cpt -> sft -> dpo -> merge -> export (GGUF) -> eval lineage on tiny:llama, run by the pipeline
runner: every model folder has one pad token, a tokenizer config transformers 4.x loads too (when
the side venv exists), the chat template in tokenizer_config.json, weights readable by others
(0644), and manifests and cards that name parents by stage and content hash, with no
`${stages...}` placeholder and no absolute path of this machine."""

from __future__ import annotations

import json
import os
import subprocess
import textwrap
from pathlib import Path

import pytest
import yaml

from alloylm.lineage import lineage_tree, read_manifest
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner

TERMS = ["osteon", "tendon", "enzyme", "neuron", "collagen", "keratin", "chitin", "silk"]
TRAIN = "{max_steps: 2, learning_rate: 1.0e-3, per_device_batch_size: 2, max_seq_length: 48}"
MODELS = ("cpt", "sft", "dpo", "merged", "gguf")


def tf4_python() -> str | None:
    """The python of a side venv with transformers 4.x: $ALLOY_TF4_PYTHON, or .ci-venvs/tf4."""
    candidate = os.environ.get("ALLOY_TF4_PYTHON") or str(
        Path(__file__).resolve().parents[2] / ".ci-venvs" / "tf4" / "bin" / "python"
    )
    return candidate if Path(candidate).exists() else None


@pytest.fixture(scope="module")
def lineage(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("lineage")
    os.environ.setdefault("ALLOY_EVALS_DIR", str(root / "eval-cache"))
    (root / "text.jsonl").write_text(
        "".join(
            json.dumps({"text": f"The {t} is a structure of the body. " * 4}) + "\n" for t in TERMS
        )
    )
    (root / "chat.jsonl").write_text(
        "".join(
            json.dumps({"question": f"What is {t}?", "answer": f"{t} is a {t}."}) + "\n"
            for t in TERMS
        )
    )
    (root / "pairs.jsonl").write_text(
        "".join(
            json.dumps({"prompt": f"What is {t}?", "chosen": f"{t} is a {t}.", "rejected": "blue."})
            + "\n"
            for t in TERMS
        )
    )
    (root / "mcq.jsonl").write_text(
        "".join(
            json.dumps({"question": f"Which is {t}?", "choices": [t, "blue", "red", "green"], "answer": "A"})
            + "\n"
            for t in TERMS[:4]
        )
    )  # fmt: skip
    pipeline = root / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            f"""\
            run: {{name: t, output: out}}
            stages:
              cpt: {{kind: cpt, model: "tiny:llama", data: [{{path: text.jsonl}}], train: {TRAIN}}}
              sft: {{kind: sft, model: "${{stages.cpt.output}}", data: [{{path: chat.jsonl}}], train: {TRAIN}}}
              dpo: {{kind: dpo, model: "${{stages.sft.output}}", data: [{{path: pairs.jsonl}}], train: {TRAIN}}}
              merged: {{kind: merge, method: slerp, base_model: "${{stages.sft.output}}", models: ["${{stages.dpo.output}}"]}}
              gguf: {{kind: export, model: "${{stages.merged.output}}", dtype: q8_0}}
              eval: {{kind: eval, models: ["${{stages.merged.output}}"], tasks: [{{path: mcq.jsonl}}], protocols: [loglik], resamples: 10}}
            """
        )
    )  # fmt: skip
    outcomes = PipelineRunner(load_pipeline(pipeline)).run()
    assert [o.status for o in outcomes] == ["built"] * 6, [o.error for o in outcomes]
    return root


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n", 2)[1])


def test_one_pad_token_across_the_lineage(lineage: Path) -> None:
    out = lineage / "out"
    pads = {}
    for stage in MODELS[:4]:
        tokenizer_config = json.loads((out / stage / "tokenizer_config.json").read_text())
        config = json.loads((out / stage / "config.json").read_text())
        pads[stage] = (tokenizer_config["pad_token"], config["pad_token_id"])
        assert tokenizer_config["pad_token"] != tokenizer_config["eos_token"]
    assert len(set(pads.values())) == 1, pads


def test_tokenizer_config_is_portable_and_holds_the_chat_template(lineage: Path) -> None:
    for stage in MODELS[:4]:
        folder = lineage / "out" / stage
        tokenizer_config = json.loads((folder / "tokenizer_config.json").read_text())
        assert tokenizer_config["tokenizer_class"] == "PreTrainedTokenizerFast"
        assert tokenizer_config["chat_template"] == (folder / "chat_template.jinja").read_text()


def test_weights_are_readable_by_other_users(lineage: Path) -> None:
    out = lineage / "out"
    weights = [*out.glob("*/model.safetensors"), *out.glob("gguf/*.gguf")]
    assert len(weights) == 5
    for path in weights:
        assert path.stat().st_mode & 0o777 == 0o644, (path, oct(path.stat().st_mode))


def test_manifests_and_cards_name_parents_by_stage_and_hash(lineage: Path) -> None:
    out = lineage / "out"
    hashes = {stage: read_manifest(out / stage)["content_hash"] for stage in (*MODELS, "eval")}
    for stage in (*MODELS, "eval"):
        for name in ("alloy.json", "README.md"):
            if not (out / stage / name).exists():
                continue
            text = (out / stage / name).read_text()
            assert "${stages." not in text, (stage, name)
            assert str(lineage) not in text, (stage, name)  # no absolute path of this machine
    sft = read_manifest(out / "sft")
    (model_parent,) = [p for p in sft["parents"] if p["role"] == "model"]
    assert model_parent["stage"] == "cpt" and model_parent["hash"] == hashes["cpt"]
    assert model_parent["source"] == f"cpt@{hashes['cpt'][:12]}"
    assert model_parent["path"] == "../cpt"
    assert sft["config"]["model"] == f"cpt@{hashes['cpt'][:12]}"
    tree = lineage_tree(out / "gguf")  # relative paths still walk back to the tiny model
    chain = []
    while tree["parents"]:
        tree = [p for p in tree["parents"] if p.get("role") in ("model", "base_model")][0]
        chain.append(tree.get("stage") or tree.get("source"))
    assert chain[:2] == ["merged", "sft"] and chain[-1] == "tiny:llama"


def test_cards_front_matter_per_kind(lineage: Path) -> None:
    out = lineage / "out"
    relation = {"cpt": "finetune", "sft": "finetune", "dpo": "finetune", "merged": "merge"}
    for stage in MODELS:
        meta = _front_matter((out / stage / "README.md").read_text())
        assert "alloylm" in meta["tags"]
        # tiny:llama is on no Hub: no base_model to name, so no relation either
        assert "base_model" not in meta and "base_model_relation" not in meta, stage
        assert meta["library_name"] == ("gguf" if stage == "gguf" else "transformers")
        if stage in relation:
            assert relation[stage] in ("finetune", "merge")
    merged_card = (out / "merged" / "README.md").read_text()
    assert "## Merge configuration" in merged_card and "method: slerp" in merged_card
    index = _front_matter(merged_card)["model-index"]  # the eval stage measured the merge
    (result,) = index[0]["results"]
    assert result["dataset"]["name"] == "mcq" and result["metrics"][0]["type"] == "accuracy"
    assert result["metrics"][0]["value"] == pytest.approx(
        json.loads((out / "eval" / "results.json").read_text())["results"][0]["score"]
    )


def test_merged_model_loads_in_transformers_4(lineage: Path, tmp_path: Path) -> None:
    """Tokenizer, chat template and weights of the merged model in transformers 4.x give the
    same ids, rendering and logits as in 5.x. The copy gets SmolLM2's RoPE base (100000), which
    4.x reads only from the legacy `rope_theta` that finalize_model_files adds."""
    import shutil

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from alloylm.models.saving import finalize_model_files

    python = tf4_python()
    if python is None:
        missing = "no transformers 4.x side venv (.ci-venvs/tf4 or $ALLOY_TF4_PYTHON)"
        if os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") == "1":  # CI: run .ci/side-venvs.sh
            pytest.fail(missing + "; ALLOY_REQUIRE_EQUIVALENCE=1 requires it")
        pytest.skip(missing)
    folder = tmp_path / "merged"
    shutil.copytree(lineage / "out" / "merged", folder)
    config = json.loads((folder / "config.json").read_text())
    config.pop("rope_theta", None)
    config["rope_parameters"] = {"rope_theta": 100000.0, "rope_type": "default"}
    (folder / "config.json").write_text(json.dumps(config))  # as transformers 5 writes it
    finalize_model_files(folder)

    text = "The heart pumps 12 litres, café 🦙"
    messages = [{"role": "user", "content": "What is an osteon?"}]
    script = textwrap.dedent(
        f"""\
        import json, torch, transformers
        from transformers import AutoModelForCausalLM, AutoTokenizer
        assert transformers.__version__.startswith("4."), transformers.__version__
        t = AutoTokenizer.from_pretrained({str(folder)!r})
        m = AutoModelForCausalLM.from_pretrained({str(folder)!r}, torch_dtype=torch.float32)
        ids = t({text!r})["input_ids"]
        with torch.no_grad():
            logits = m(torch.tensor([ids])).logits[0].tolist()
        print(json.dumps({{"ids": ids, "pad": t.pad_token, "logits": logits,
            "chat": t.apply_chat_template({messages!r}, tokenize=False, add_generation_prompt=True)}}))
        """
    )
    run = subprocess.run([python, "-c", script], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    seen = json.loads(run.stdout.strip().splitlines()[-1])
    ours = AutoTokenizer.from_pretrained(str(folder))
    assert seen["ids"] == ours(text)["input_ids"]
    assert seen["pad"] == ours.pad_token
    assert seen["chat"] == ours.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    with torch.no_grad():
        expected = model(torch.tensor([seen["ids"]])).logits[0]
    assert torch.allclose(torch.tensor(seen["logits"]), expected, atol=1e-4)


def test_finalize_model_files_on_a_transformers_5_save(tiny_llama: Path, tmp_path: Path) -> None:
    """What transformers 5 writes for SmolLM2 (TokenizersBackend, pad = EOS, template only in
    the .jinja file) becomes loadable by 4.x, with a pad token distinct from EOS."""
    import shutil

    from alloylm.models.saving import finalize_model_files

    folder = tmp_path / "m"
    shutil.copytree(tiny_llama, folder)
    config_path = folder / "tokenizer_config.json"
    tokenizer_config = json.loads(config_path.read_text())
    tokenizer_config.update(tokenizer_class="TokenizersBackend", pad_token="<|im_end|>")
    tokenizer_config.pop("chat_template", None)
    config_path.write_text(json.dumps(tokenizer_config))
    decided = finalize_model_files(folder)
    written = json.loads(config_path.read_text())
    assert written["tokenizer_class"] == "PreTrainedTokenizerFast"
    assert written["pad_token"] == decided["pad_token"] == "<|endoftext|>"
    assert written["chat_template"] == (folder / "chat_template.jinja").read_text()
    for name in ("config.json", "generation_config.json"):
        assert json.loads((folder / name).read_text())["pad_token_id"] == decided["pad_token_id"]
    from transformers import AutoTokenizer

    assert AutoTokenizer.from_pretrained(str(folder)).pad_token_id == decided["pad_token_id"]


def test_sweep_variants_name_their_parents_portably(tmp_path: Path) -> None:
    """Each sweep variant's alloy.json (written by the merge stage itself) names an artifact
    parent by stage and hash, with a path relative to the variant folder."""
    pipeline = tmp_path / "p.yaml"
    pipeline.write_text(
        textwrap.dedent(
            """\
            run: {name: s, output: out}
            stages:
              a: {kind: merge, method: linear, parameters: {weight: 0.5}, models: ["tiny:llama", "tiny:llama:1"]}
              b: {kind: merge, method: slerp, base_model: "${stages.a.output}", models: ["tiny:llama:1"], sweep: {grid: [0.3, 0.7]}}
            """
        )
    )  # fmt: skip
    outcomes = PipelineRunner(load_pipeline(pipeline)).run()
    assert [o.status for o in outcomes] == ["built", "built"], [o.error for o in outcomes]
    a_hash = read_manifest(tmp_path / "out" / "a")["content_hash"]
    variants = [p.parent for p in (tmp_path / "out" / "b").glob("*/alloy.json")]
    assert len(variants) == 2
    assert str(tmp_path) not in (tmp_path / "out" / "b" / "alloy.json").read_text()
    for variant in variants:
        text = (variant / "alloy.json").read_text() + (variant / "README.md").read_text()
        assert str(tmp_path) not in text and "${stages." not in text
        base = [p for p in read_manifest(variant)["parents"] if p["role"] == "base_model"][0]
        assert (base["stage"], base["hash"]) == ("a", a_hash)
        assert base["source"] == f"a@{a_hash[:12]}" and base["path"] == "../../a"
        assert (variant / base["path"]).resolve() == (tmp_path / "out" / "a").resolve()
