"""End to end on tiny:llama: protocols, perplexity, KV-cache scoring exactness, cache hits, stage, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alloylm.evals import runner as runner_lib
from alloylm.evals.runner import EvalSettings, TaskSpec, evaluate

TINY = "tiny:llama"


@pytest.fixture(autouse=True)
def eval_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "eval-cache"))


@pytest.fixture
def bench_file(data_root, tmp_path) -> Path:
    lines = (
        (data_root / "openstax_mcq/anatomy_physiology_2e_mcq.jsonl").read_text().splitlines()[:6]
    )
    path = tmp_path / "ap.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture
def heldout_file(data_root, tmp_path) -> Path:
    with open(data_root / "openstax_corpus/anatomy_physiology_2e.jsonl") as handle:
        docs = [json.loads(handle.readline()) for _ in range(2)]
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps({"text": d["text"][:1500]}) + "\n" for d in docs))
    return path


@pytest.fixture(scope="module")
def scorer():
    from alloylm.evals.scoring import Scorer
    from alloylm.models.loading import load_causal_lm, load_tokenizer
    from alloylm.models.sources import resolve_model

    folder = resolve_model(TINY)
    return Scorer(load_causal_lm(folder), load_tokenizer(folder), batch_size=3)


def test_kv_cache_option_scores_equal_scoring_each_option_alone(scorer):
    import torch

    prefix = scorer.encode("Question: what holds bones together?\nAnswer:", special_tokens=False)
    options = [
        scorer.encode(" " + text, special_tokens=False)
        for text in ("ligaments", "a tendon of muscle", "x")
    ]
    shared = scorer.continuation_logprobs(prefix, options)
    for option, value in zip(options, shared, strict=True):
        ids = torch.tensor([prefix + option])
        with torch.no_grad():
            logprobs = torch.log_softmax(scorer.model(input_ids=ids).logits[0].float(), dim=-1)
        alone = sum(float(logprobs[len(prefix) - 1 + i, token]) for i, token in enumerate(option))
        assert value == pytest.approx(alone, abs=1e-4)


@pytest.mark.parametrize(
    "shared_prefix", ["", "The following are multiple choice questions about anatomy.\n\n"]
)
def test_batched_letter_scores_equal_one_plain_forward_each(scorer, shared_prefix):
    import torch

    texts = ("short", "a much longer prompt here", "mid size", "x")
    prompts = [scorer.encode(shared_prefix + text, special_tokens=False) for text in texts]
    letters = [[330, 389], [340, 422], [330, 422], [389, 340]]
    batched = scorer.next_token_logprobs(prompts, letters)
    for prompt, candidates, row in zip(prompts, letters, batched, strict=True):
        with torch.no_grad():
            logits = scorer.model(input_ids=torch.tensor([prompt])).logits[0, -1].float()
        expected = torch.log_softmax(logits, dim=-1)[candidates].tolist()
        assert row == pytest.approx(expected, abs=1e-4)


def test_end_to_end_all_protocols_and_perplexity(bench_file, heldout_file):
    tasks = [
        TaskSpec(name="ap", path=str(bench_file)),
        TaskSpec(name="heldout", path=str(heldout_file), type="perplexity"),
    ]
    settings = EvalSettings(
        protocols=("paper", "loglik", "cloze"), resamples=50, max_new_tokens=4, baseline=TINY
    )
    records = evaluate([TINY, "tiny:llama:1"], tasks, settings, log=lambda _: None)
    by_key = {(r["model"], r["task"], r["protocol"]): r for r in records}
    assert len(records) == 2 * 4
    for model in (TINY, "tiny:llama:1"):
        for protocol in ("paper", "loglik", "cloze"):
            record = by_key[(model, "ap", protocol)]
            assert record["n"] == 6 and len(record["predictions"]) == 6
            assert (
                0.0 <= record["score"] <= 1.0
                and record["ci95"][0] <= record["score"] <= record["ci95"][1]
            )
            predictions = record["predictions"]
            parsed = [p for p in predictions if p["parsed"]]
            assert record["unparseable"] == 6 - len(parsed)  # counted from the answers given
            assert record["answered"] == len(parsed)
            assert all(p["pred"] is None for p in predictions if not p["parsed"])
            if protocol != "paper":  # scoring always picks an option
                assert record["unparseable"] == 0
            assert record["correct"] == sum(p["correct"] for p in predictions)
            assert record["score"] == pytest.approx(record["correct"] / 6)
            assert record["settings"]["template"] == "chat" and not record["cached"]
        ppl = by_key[(model, "heldout", "perplexity")]
        assert (
            ppl["metric"] == "perplexity" and ppl["score"] > 1000
        )  # a random model: near the vocabulary size
    other = by_key[("tiny:llama:1", "ap", "loglik")]
    assert "relative_improvement" in other["vs_baseline"] and "paired" in other["vs_baseline"]
    assert "per_category" in other and sum(c["n"] for c in other["per_category"].values()) == 6


def test_second_call_is_served_from_the_cache(bench_file, monkeypatch):
    tasks = [TaskSpec(name="ap", path=str(bench_file))]
    settings = EvalSettings(protocols=("loglik",), resamples=50)
    first = evaluate([TINY], tasks, settings, log=lambda _: None)

    def no_model(self):
        raise AssertionError("the model must not be loaded on a cache hit")

    monkeypatch.setattr(runner_lib._LazyScorer, "get", no_model)
    second = evaluate([TINY], tasks, settings, log=lambda _: None)
    assert second[0]["cached"] and second[0]["score"] == first[0]["score"]
    assert second[0]["predictions"] == first[0]["predictions"]
    # a changed setting that can change the score is a different result
    with pytest.raises(AssertionError, match="must not be loaded"):
        evaluate(
            [TINY],
            tasks,
            EvalSettings(protocols=("loglik",), resamples=50, template="plain"),
            log=lambda _: None,
        )


def test_eval_stage_runs_without_the_runner(bench_file, tmp_path):
    from alloylm.contract import StageContext
    from alloylm.stages import evaluate as stage

    cfg = stage.Config(
        kind="eval",
        models=[TINY],
        tasks=[{"path": str(bench_file), "protocols": ["cloze"]}],
        resamples=50,
    )
    assert [(spec.kind, spec.data_kind) for spec in stage.inputs(cfg)] == [
        ("model", "any"),
        ("data", "benchmark"),
    ]
    ctx = StageContext("eval", "test", 42, tmp_path / "work", tmp_path / "state", tmp_path)
    ctx.work_dir.mkdir()
    result = stage.run(ctx, cfg)
    saved = json.loads((ctx.work_dir / "results.json").read_text())
    assert saved["results"][0]["protocol"] == "cloze" and result.outputs == {"eval": "results.json"}
    assert set(result.metrics) == {f"ap/cloze/{TINY}", "summary"}
    assert result.metrics["summary"].startswith("ap/cloze 0.")


def test_cli_runs_two_models_with_one_setting(bench_file, tmp_path, capsys):
    import argparse

    from alloylm.cli import eval as cli

    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out = tmp_path / "all.json"
    args = parser.parse_args(
        [
            TINY,
            "tiny:llama:1",
            "--tasks",
            str(bench_file),
            "--protocol",
            "loglik",
            "--resamples",
            "50",
            "--output",
            str(out),
        ]
    )
    assert cli.run(args) == 0
    printed = capsys.readouterr().out
    assert "tiny:llama:1" in printed and "loglik" in printed
    records = json.loads(out.read_text())["results"]
    assert {r["model"] for r in records} == {TINY, "tiny:llama:1"}
    assert len({json.dumps(r["settings"], sort_keys=True) for r in records}) == 1


def test_parallel_workers_give_the_same_scores_as_one(scorer):
    """Batches spread over worker threads (one intra-op thread each) change speed, not results."""
    import torch

    from alloylm.evals.scoring import Scorer

    texts = [f"Question {n}: which tissue {'is ' * n}dense?\nAnswer:" for n in range(7)]
    prompts = [scorer.encode(text, special_tokens=False) for text in texts]
    labels = [[scorer.encode(" " + letter, special_tokens=False)[-1] for letter in "ABCD"]] * 7
    options = [scorer.encode(" " + word, special_tokens=False) for word in ("bone", "the skin")]
    threads_before = torch.get_num_threads()
    results = {}
    for workers in (1, 3):
        parallel = Scorer(scorer.model, scorer.tokenizer, batch_size=2, workers=workers)
        done: list[int] = []
        results[workers] = (
            parallel.next_token_logprobs(prompts, labels, done.append),
            parallel.continuation_logprobs_many([(p, options) for p in prompts], done.append),
            parallel.generate(prompts, max_new_tokens=3, progress=done.append),
            parallel.document_nll(texts, max_length=8, progress=done.append),
        )
        assert sum(done[:4]) == 7  # next-token batches report every prompt once
    assert torch.get_num_threads() == threads_before  # the one-thread setting is restored
    letters, options_scores, answers, nll = results[1]
    assert answers == results[3][2]
    for one, many in zip(
        [letters, options_scores, nll], [results[3][i] for i in (0, 1, 3)], strict=True
    ):
        flat_one = [value for row in one for value in row]
        assert flat_one == pytest.approx([value for row in many for value in row], abs=1e-4)
