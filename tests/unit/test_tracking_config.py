"""The `tracking:` block and `train.report_to`: names, precedence, environment, hash."""

from __future__ import annotations

import os

import pytest
import yaml

from alloylm.config.pipeline import REPORT_TO_NAMES, check_report_to
from alloylm.pipeline.load import load_pipeline
from alloylm.pipeline.runner import PipelineRunner
from alloylm.pipeline.tracking import flatten_metrics, resolve_tracking, tracking_environment


def test_names_are_the_integrations_of_the_installed_transformers():
    from transformers.integrations.integration_utils import INTEGRATION_TO_CALLBACK

    assert set(REPORT_TO_NAMES) == set(INTEGRATION_TO_CALLBACK) | {"all", "none"}


def test_check_report_to():
    assert check_report_to("none") == []
    assert check_report_to("tensorboard") == ["tensorboard"]
    assert check_report_to(["mlflow", "none"]) == ["mlflow"]
    with pytest.raises(ValueError, match="did you mean 'wandb'"):
        check_report_to(["wandbb"])
    with pytest.raises(ValueError, match="list of tracker names"):
        check_report_to(3)


def _file(tmp_path, tracking=None, stage_tracking=None, report_to=None):
    train = {"max_steps": 1}
    if report_to is not None:
        train["report_to"] = report_to
    cpt = {"kind": "cpt", "model": "tiny:llama", "data": [{"path": "t.jsonl"}], "train": train}
    merge = {"kind": "merge", "method": "linear", "parameters": {"weight": 0.5},
             "models": ["${stages.cpt.output}", "tiny:llama:1"]}  # fmt: skip
    if stage_tracking is not None:
        merge["tracking"] = stage_tracking
    document = {"run": {"name": "p", "output": "out"}, "stages": {"cpt": cpt, "merge": merge}}
    if tracking is not None:
        document["tracking"] = tracking
    (tmp_path / "t.jsonl").write_text('{"text": "a b c"}\n')
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_precedence_pipeline_then_stage_then_train_report_to(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    pipeline = load_pipeline(_file(tmp_path))
    resolved = {n: resolve_tracking(pipeline, s) for n, s in pipeline.stages.items()}
    assert resolved["cpt"].report_to == () and resolved["merge"].report_to == ()

    path = _file(
        tmp_path,
        tracking={"report_to": ["tensorboard", "mlflow"], "logging_dir": "tb"},
        stage_tracking={"report_to": ["mlflow"], "experiment": "other"},
        report_to="tensorboard",
    )
    pipeline = load_pipeline(path)
    cpt = resolve_tracking(pipeline, pipeline.stages["cpt"])
    merge = resolve_tracking(pipeline, pipeline.stages["merge"])
    assert cpt.report_to == ("tensorboard",) and merge.report_to == ("mlflow",)
    assert (cpt.experiment, cpt.run, merge.experiment, merge.run) == ("p", "cpt", "other", "merge")
    assert cpt.tensorboard_dir == tmp_path / "tb" / "p" / "cpt"  # relative to the YAML file
    assert merge.mlflow_uri == f"file:{tmp_path / 'out' / '.alloy' / 'tracking' / 'mlruns'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert resolve_tracking(pipeline, pipeline.stages["merge"]).mlflow_uri == (
        "http://127.0.0.1:5000"
    )


def test_tracking_changes_no_content_hash(tmp_path):
    def hashes(path):
        pipeline = load_pipeline(path)
        runner = PipelineRunner(pipeline)
        found: dict[str, str] = {}
        for name in ("cpt", "merge"):
            found[name] = runner.content_hash(pipeline.stages[name], found)[0]
        return found

    plain = hashes(_file(tmp_path))
    tracked = hashes(
        _file(tmp_path, {"report_to": "mlflow"}, {"report_to": []}, report_to=["tensorboard"])
    )
    assert plain == tracked


def test_unknown_key_in_a_stage_tracking_block(tmp_path):
    from alloylm.errors import ConfigError

    with pytest.raises(ConfigError) as caught:
        load_pipeline(_file(tmp_path, stage_tracking={"report": ["mlflow"]}))
    text = caught.value.render()
    assert "stages.merge.tracking" in text and "did you mean 'report_to'" in text


def test_environment_is_set_for_the_stage_and_restored(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "before")
    monkeypatch.delenv("TENSORBOARD_LOGGING_DIR", raising=False)
    pipeline = load_pipeline(_file(tmp_path, {"report_to": ["tensorboard", "mlflow"]}))
    tracking = resolve_tracking(pipeline, pipeline.stages["cpt"])
    with tracking_environment(tracking):
        assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "p"
        assert os.environ["TENSORBOARD_LOGGING_DIR"] == str(tracking.tensorboard_dir)
        assert os.environ["MLFLOW_ALLOW_FILE_STORE"] == "true"
        assert os.environ["ALLOY_TRACKING_RUN"] == "cpt"
    assert os.environ["MLFLOW_EXPERIMENT_NAME"] == "before"
    assert "TENSORBOARD_LOGGING_DIR" not in os.environ


def test_build_training_args_names_the_run():
    from alloylm.train._trl import build_training_args
    from alloylm.train.config import TrainConfig

    args = build_training_args(TrainConfig(max_steps=1), "/tmp/x", seed=0)
    assert args.report_to == []
    os.environ["ALLOY_TRACKING_RUN"], os.environ["ALLOY_TRACKING_EXPERIMENT"] = "sft", "exp"
    try:
        args = build_training_args(
            TrainConfig(max_steps=1, report_to=["tensorboard"]), "/x", seed=0
        )
    finally:
        del os.environ["ALLOY_TRACKING_RUN"], os.environ["ALLOY_TRACKING_EXPERIMENT"]
    assert (args.report_to, args.run_name, args.project) == (["tensorboard"], "sft", "exp")


def test_flatten_metrics():
    numbers, texts = flatten_metrics(
        {"a": 1, "b": {"c": 0.5, "d": True, "e": float("nan")}, "s": "x", "h": [[1, 2.0]]}
    )
    assert numbers == {"a": 1.0, "b/c": 0.5, "b/d": 1.0} and texts == {"s": "x"}
