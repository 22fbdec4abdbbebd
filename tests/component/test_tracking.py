"""Experiment tracking for real and offline: a tiny pipeline (cpt -> dpo, a slerp merge, an eval)
reports to TensorBoard and to an MLflow file store; both are read back with the trackers' own
readers (tensorboard's EventAccumulator, the mlflow client) and compared with alloy.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")

from alloylm.pipeline.load import load_pipeline  # noqa: E402
from alloylm.pipeline.runner import PipelineRunner  # noqa: E402

TRAIN = {"max_steps": 3, "max_seq_length": 64, "per_device_batch_size": 1, "save_steps": 10,
         "learning_rate": 1e-3, "lr_scheduler": "constant", "warmup_ratio": 0.0}  # fmt: skip


def _pipeline(tmp_path: Path, tracking: dict, dpo_report_to: list[str] | None = None) -> Path:
    terms = ["heart", "bone", "skin", "lung"]
    rows = {
        "text.jsonl": [{"text": f"The {t} is an organ of the body. " * 4} for t in terms],
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
    dpo_train = {**TRAIN, "max_steps": 2}
    if dpo_report_to is not None:
        dpo_train["report_to"] = dpo_report_to
    stages = {
        "cpt": {"kind": "cpt", "model": "tiny:llama", "data": [{"path": "text.jsonl"}],
                "train": TRAIN},
        "dpo": {"kind": "dpo", "model": "${stages.cpt.output}", "data": [{"path": "pref.jsonl"}],
                "max_prompt_length": 48, "train": dpo_train},
        "merge": {"kind": "merge", "method": "slerp", "parameters": {"t": 0.5},
                  "base_model": "${stages.cpt.output}", "models": ["tiny:llama:1"]},
        "eval": {"kind": "eval", "models": ["${stages.merge.output}", "${stages.cpt.output}"],
                 "protocols": ["cloze"],
                 "resamples": 20, "tasks": [{"path": "mcq.jsonl", "type": "mcq", "name": "review"}]},
    }  # fmt: skip
    path = tmp_path / "p.yaml"
    document = {"run": {"name": "tracked", "seed": 0, "output": "out"}, "tracking": tracking,
                "stages": stages}  # fmt: skip
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _manifest(out: Path, stage: str) -> dict:
    return json.loads((out / stage / "alloy.json").read_text())


@pytest.mark.timeout(600)
def test_tensorboard_and_mlflow_receive_what_alloy_json_records(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    monkeypatch.setenv("ALLOY_EVALS_DIR", str(tmp_path / "eval-cache"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = f"file:{tmp_path / 'mlruns'}"
    path = _pipeline(
        tmp_path, {"report_to": ["tensorboard", "mlflow"], "mlflow_uri": uri}, ["tensorboard"]
    )
    outcomes = PipelineRunner(load_pipeline(path)).run()
    assert [o.status for o in outcomes] == ["built"] * 4, [o.error for o in outcomes]
    out = tmp_path / "out"
    cpt = _manifest(out, "cpt")
    history = cpt["metrics"]["loss_history"]
    assert [step for step, _ in history] == [1, 2, 3]
    assert cpt["config"]["train"]["report_to"] == ["tensorboard", "mlflow"]

    # TensorBoard: <output>/.alloy/tracking/tensorboard/<experiment>/<stage>
    board = out / ".alloy" / "tracking" / "tensorboard" / "tracked"
    events = EventAccumulator(str(board / "cpt"))
    events.Reload()
    logged = [(e.step, e.value) for e in events.Scalars("train/loss")]
    assert [step for step, _ in logged] == [1, 2, 3]
    assert [v for _, v in logged] == pytest.approx([v for _, v in history], rel=1e-6)
    assert "train/learning_rate" in events.Tags()["scalars"]

    dpo_events = EventAccumulator(str(board / "dpo"))
    dpo_events.Reload()
    dpo = _manifest(out, "dpo")
    dpo_loss = [e.value for e in dpo_events.Scalars("train/loss")]
    assert dpo_loss == pytest.approx([v for _, v in dpo["metrics"]["loss_history"]], rel=1e-6)
    assert any(tag.startswith("train/rewards/") for tag in dpo_events.Tags()["scalars"])

    merge_events = EventAccumulator(str(board / "merge"))
    merge_events.Reload()
    merge = _manifest(out, "merge")["metrics"]
    fallback = merge_events.Scalars("merge/linear_fallback_tensors")
    assert [e.value for e in fallback] == [merge["linear_fallback_tensors"]]

    eval_events = EventAccumulator(str(board / "eval"))
    eval_events.Reload()
    scores = {k: v for k, v in _manifest(out, "eval")["metrics"].items() if k != "summary"}
    assert scores
    for key, value in scores.items():
        assert [e.value for e in eval_events.Scalars(f"eval/{key}")] == pytest.approx([value])
    # the 95% intervals, and the second model's paired verdict against the first (the baseline)
    records = json.loads((out / "eval" / "results.json").read_text())["results"]
    assert len(records) == len(scores) == 2
    for key, record in zip(scores, records, strict=True):
        low, high = record["ci95"]
        assert [e.value for e in eval_events.Scalars(f"eval/{key}.ci95_low")] == pytest.approx(
            [low]
        )
        assert [e.value for e in eval_events.Scalars(f"eval/{key}.ci95_high")] == pytest.approx(
            [high]
        )
    second, compared = list(scores)[1], records[1]["vs_baseline"]
    verdict = eval_events.Tensors(f"eval/{second}.vs_baseline.verdict/text_summary")
    assert compared["verdict"] in verdict[0].tensor_proto.string_val[0].decode()

    # MLflow: one experiment (the pipeline's name), one run per stage; the dpo stage's
    # train.report_to overrides the pipeline's tracking block (tensorboard only)
    client = MlflowClient(tracking_uri=uri)
    experiment = client.get_experiment_by_name("tracked")
    runs = {r.info.run_name: r for r in client.search_runs([experiment.experiment_id])}
    assert set(runs) == {"cpt", "merge", "eval"}
    loss = client.get_metric_history(runs["cpt"].info.run_id, "loss")
    assert sorted((m.step, m.value) for m in loss) == [
        (step, pytest.approx(value, rel=1e-6)) for step, value in history
    ]
    merge_run = runs["merge"].data.metrics
    assert merge_run["linear_fallback_tensors"] == merge["linear_fallback_tensors"]
    assert merge_run["linear_fallback_fraction"] == pytest.approx(merge["linear_fallback_fraction"])
    for key, value in scores.items():
        assert runs["eval"].data.metrics[key] == pytest.approx(value)
    first = list(scores)[0]
    assert runs["eval"].data.metrics[f"{first}.ci95_low"] == pytest.approx(records[0]["ci95"][0])
    assert runs["eval"].data.params[f"{second}.vs_baseline.verdict"] == compared["verdict"]
    assert runs["eval"].data.metrics[f"{second}.vs_baseline.difference"] == pytest.approx(
        compared["paired"]["difference"]
    )

    # a rerun builds nothing, and switching trackers off changes no content hash
    path = _pipeline(tmp_path, {})
    assert [o.status for o in PipelineRunner(load_pipeline(path)).run()] == ["skipped"] * 4


def test_report_to_names_are_checked_with_did_you_mean(tmp_path):
    from alloylm.errors import ConfigError

    path = _pipeline(tmp_path, {"report_to": ["tensorbaord"]})
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    text = caught.value.render()
    assert "tensorbaord" in text and "did you mean 'tensorboard'" in text and "tracking" in text

    path = _pipeline(tmp_path, {}, dpo_report_to=["mlfow"])
    with pytest.raises(ConfigError) as caught:
        load_pipeline(path)
    text = caught.value.render()
    assert "did you mean 'mlflow'" in text and "stages.dpo.train.report_to" in text
