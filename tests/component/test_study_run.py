"""A tiny study end to end through `alloy study run` (tiny:llama, 1-step stages, 4 questions):
the grid expands, shared prefixes are built once, a rerun skips everything, study_plan.json holds
every evaluated model with the exact source the eval stage scored; `alloy run --parallel 2` runs
independent stages side by side in two processes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from alloylm.cli.main import main


def _printed(capsys) -> str:
    captured = capsys.readouterr()  # tables and progress go to stderr
    return captured.out + captured.err


TRAIN = {"max_steps": 1, "max_seq_length": 64, "per_device_batch_size": 1, "save_steps": 1}


def _files(tmp_path: Path) -> None:
    terms = ["heart", "bone", "skin", "lung"]
    rows = {
        "text.jsonl": [{"text": f"The {t} is an organ of the body. " * 4} for t in terms],
        "chat.jsonl": [
            {"question": f"What is the {t}?", "answer": f"An organ: {t}."} for t in terms
        ],
        "pref.jsonl": [
            {"prompt": f"What is the {t}?", "chosen": f"An organ: {t}.", "rejected": "blue blue"}
            for t in terms
        ],
        "mcq.jsonl": [
            {"question": f"Which is the {t}?", "choices": [t, "rock", "tree", "car"], "answer": "A"}
            for t in terms
        ],
    }
    for name, records in rows.items():
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in records))


def _study_file(tmp_path: Path, strategies: list[str]) -> Path:
    _files(tmp_path)
    study = {
        "lineages": {"instruct": {"model": "tiny:llama"}},
        "strategies": strategies,
        "stages": {
            "cpt": {
                "data": [{"path": "text.jsonl", "holdout": {"fraction": 0.25, "seed": 0}}],
                "train": TRAIN,
            },
            "sft": {"data": [{"path": "chat.jsonl"}], "train": TRAIN},
            "dpo": {"data": [{"path": "pref.jsonl"}], "max_prompt_length": 48, "train": TRAIN},
        },  # fmt: skip
        "merge": {
            "partner": "tiny:llama:1",
            "schedules": {"G": "variant_g"},
            "curve": {"strategies": ["CPT-SFT-DPO"], "t": [0.5]},
        },
        "eval": {
            "protocols": ["cloze"],
            "resamples": 50,
            "tasks": [
                {"path": "mcq.jsonl", "type": "mcq", "name": "review"},
                {
                    "path": "${stages.instruct_cpt.output}/heldout.jsonl",
                    "type": "perplexity",
                    "name": "heldout",
                    "max_length": 32,
                },
            ],  # fmt: skip
        },
    }
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump({"run": {"name": "tiny-study", "seed": 0, "output": "out"},
                                    "study": study}, sort_keys=False))  # fmt: skip
    return path


@pytest.mark.timeout(600)
def test_tiny_study_runs_end_to_end_and_reruns_nothing(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ALLOY_HOME", str(tmp_path / "home"))  # an empty eval cache
    path = _study_file(tmp_path, ["CPT-SFT", "CPT-SFT-DPO"])
    out = tmp_path / "out"

    assert main(["study", "plan", str(path)]) == 0
    planned = _printed(capsys)
    assert "instruct_cpt_sft_dpo_slerp" in planned and "to build" in planned

    assert main(["study", "run", str(path)]) == 0
    printed = _printed(capsys)
    # shared prefixes were built once: one cpt, one sft (before the DPO strategy too)
    for stage in ("instruct_cpt", "instruct_cpt_sft"):
        assert printed.count(f"build {stage} (") == 1
    built = sorted(p.name for p in out.iterdir() if (p / "alloy.json").exists())
    assert built == sorted(["instruct_cpt", "instruct_cpt_sft", "instruct_cpt_sft_dpo",
                            "instruct_cpt_sft_slerp", "instruct_cpt_sft_dpo_slerp",
                            "instruct_cpt_sft_dpo_slerp-t050", "eval"])  # fmt: skip
    sft = json.loads((out / "instruct_cpt_sft" / "alloy.json").read_text())
    assert sft["parents"][0]["stage"] == "instruct_cpt"

    plan = json.loads((out / "study_plan.json").read_text())
    assert plan["version"] == 1 and plan["study"] == "tiny-study" and plan["eval_stage"] == "eval"
    assert plan["output"] == str(out) and plan["baseline"] == "partner"
    by_id = {m["id"]: m for m in plan["models"]}
    assert set(by_id) == {"instruct", "partner", "instruct_cpt_sft", "instruct_cpt_sft_dpo",
                          "instruct_cpt_sft_slerp", "instruct_cpt_sft_dpo_slerp",
                          "instruct_cpt_sft_dpo_slerp-t050"}  # fmt: skip
    (curve,) = plan["curves"]
    assert [p["model"] for p in curve["points"]] == [
        "partner", "instruct_cpt_sft_dpo_slerp-t050", "instruct_cpt_sft_dpo"]  # fmt: skip
    assert by_id["instruct_cpt_sft_dpo_slerp"]["parents"] == ["instruct_cpt_sft_dpo", "partner"]
    assert by_id["instruct_cpt_sft_dpo"]["steps"] == ["cpt", "sft", "dpo"]
    # every model of the plan was scored by the eval stage, under the plan's eval_model string
    results = json.loads((out / "eval" / "results.json").read_text())
    records = results["results"] if isinstance(results, dict) else results
    scored = {(r["model"], r["task"]) for r in records}
    for model in plan["models"]:
        assert (model["eval_model"], "review") in scored
        assert (model["eval_model"], "heldout") in scored
    merge = json.loads((out / "instruct_cpt_sft_slerp" / "alloy.json").read_text())
    assert "linear_fallback_tensors" in merge["metrics"]
    try:
        import alloylm.analysis.report  # noqa: F401
    except ImportError:
        assert "no report" in printed
    else:
        html = (out / "report" / "report.html").read_text()
        report = json.loads((out / "report" / "study.json").read_text())
        figures = {f["id"]: f for f in report["figures"]}
        for figure in figures.values():
            assert figure["id"] in html
        # every figure that the data of this tiny study allows is drawn
        drawable = {"fig-accuracy", "fig-perplexity", "fig-expected", "fig-deviation",
                    "fig-curve", "fig-loss", "fig-schedule", "fig-lineage"}  # fmt: skip
        assert drawable <= {i for i, f in figures.items() if f["drawn"]}, figures

    # a rerun builds nothing
    assert main(["study", "run", str(path), "--no-report"]) == 0
    again = _printed(capsys)
    assert "build " not in again and again.count("skip ") == 7
    assert main(["study", "plan", str(path)]) == 0
    assert "7 stages: 7 built, 0 stale (rebuilt on run), 0 to build" in _printed(capsys)


@pytest.mark.timeout(600)
def test_parallel_runs_independent_stages_side_by_side(tmp_path, capsys, monkeypatch):
    """Two merges of the same parents (independent stages) in two processes at once."""
    from alloylm.lineage import read_manifest

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # CPU: slots share the cores
    pipeline = {
        "run": {"name": "par", "seed": 0, "output": "out"},
        "stages": {
            "a": {
                "kind": "merge",
                "method": "linear",
                "models": ["tiny:llama", "tiny:llama:1"],
                "parameters": {"weight": 0.5},
            },
            "b": {
                "kind": "merge",
                "method": "slerp",
                "base_model": "tiny:llama",
                "models": ["tiny:llama:1"],
            },
            "c": {
                "kind": "merge",
                "method": "linear",
                "models": ["${stages.a.output}", "${stages.b.output}"],
                "parameters": {"weight": 0.5},
            },
        },  # fmt: skip
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(pipeline))
    events: list[tuple[str, str, dict]] = []

    from alloylm.pipeline.load import load_pipeline
    from alloylm.pipeline.parallel import run_parallel, slot_environments

    loaded = load_pipeline(path)
    outcomes = run_parallel(
        loaded,
        [str(path)],
        slot_environments([[], []]),
        on_event=lambda event, o: events.append((event, o.name, dict(o.metrics))),
    )
    status = {o.name: o.status for o in outcomes}
    assert status == {"a": "built", "b": "built", "c": "built"}
    started = [e for e in events if e[0] == "start"]
    assert [e[1] for e in started[:2]] == ["a", "b"]  # both ready: started at once
    assert {e[2]["slot"] for e in started[:2]} == {0, 1}
    times = {o.name: o.metrics for o in outcomes}
    # a and b ran at the same time; c waited for both
    assert max(times["a"]["started"], times["b"]["started"]) < min(
        times["a"]["ended"], times["b"]["ended"]
    )
    assert times["c"]["started"] >= max(times["a"]["ended"], times["b"]["ended"])
    manifest = read_manifest(tmp_path / "out" / "c")
    assert {p["stage"] for p in manifest["parents"]} == {"a", "b"}
    assert (tmp_path / "out" / ".alloy" / "logs" / "a.log").exists()

    # through the CLI: everything is built, so everything is skipped
    assert main(["run", str(path), "--parallel", "2"]) == 0
    assert _printed(capsys).count("skip ") == 3


def test_device_groups_are_disjoint():
    from alloylm.errors import ConfigError
    from alloylm.pipeline.parallel import device_groups, slot_environments

    assert device_groups(2, ["0", "1", "2", "3"]) == [["0", "1"], ["2", "3"]]
    assert device_groups(2, ["0", "1", "2", "3", "4"], per_group=2) == [["0", "1"], ["2", "3"]]
    assert slot_environments([["0", "1"], ["2", "3"]]) == [
        {"CUDA_VISIBLE_DEVICES": "0,1"},
        {"CUDA_VISIBLE_DEVICES": "2,3"},
    ]
    assert device_groups(3, []) == [[], [], []]
    with pytest.raises(ConfigError, match="needs 4 devices"):
        device_groups(2, ["0", "1", "2"], per_group=2)
