"""Benchmark plumbing (issue 16 item 5): a benchmark refuses a loaded machine unless forced, every
results file carries its load, and the summary publishes only figures from idle runs, with the
ratio and spread computed by hand below. Nothing is timed here."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def _module(name: str):
    sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def common():
    return _module("_common")


@pytest.fixture
def summary():
    return _module("summary")


def _machine(monkeypatch, loads: list[tuple[float, float, float]], cores: int = 2) -> None:
    """os.getloadavg returns `loads` one after another (the last one from then on)."""
    queue = list(loads)
    monkeypatch.setattr(os, "getloadavg", lambda: queue.pop(0) if len(queue) > 1 else queue[0])
    monkeypatch.setattr(os, "cpu_count", lambda: cores)


def test_a_loaded_machine_is_refused_unless_forced(common, monkeypatch, capsys) -> None:
    _machine(monkeypatch, [(1.2, 0.9, 0.7)])  # 2 cores: threshold 1.0
    with pytest.raises(SystemExit) as refused:
        common.begin("x")
    assert refused.value.code == common.REFUSED_EXIT == 3
    assert "1-minute load 1.2 is above 1" in capsys.readouterr().err
    run = common.begin("x", force=True)
    record = common.run_record(run)
    assert record["loaded"] and record["forced"]
    assert record["load_at_start"] == [1.2, 0.9, 0.7] and record["load_threshold_1m"] == 1.0
    assert record["cores"] == 2 and record["date"] == record["started_at"][:10]


def test_an_idle_run_is_not_loaded_unless_the_load_rises_beyond_its_own(common, monkeypatch):
    _machine(monkeypatch, [(0.4, 0.5, 0.6), (2.9, 1.5, 0.9)])  # ends at 2.9 <= 2 + 1
    record = common.run_record(common.begin("x"))
    assert not record["loaded"] and record["load_at_end"] == [2.9, 1.5, 0.9]
    _machine(monkeypatch, [(0.4, 0.5, 0.6), (3.5, 1.5, 0.9)])  # 3.5 > 3: someone else joined
    record = common.run_record(common.begin("x"))
    assert record["loaded"] and record["loaded_because"] == ["1-minute load 3.5 at end > 3"]


def test_spread_is_range_over_median(summary) -> None:
    assert summary.spread([10.0, 12.0, 11.0]) == pytest.approx(2 / 11)
    assert summary.spread([5.0]) is None and summary.spread(None) is None


def _idle_run(**overrides) -> dict:
    run = {"date": "2026-12-02", "load_at_start": [0.2, 0.3, 0.4], "load_at_end": [1.9, 0.8, 0.5],
           "loaded": False, "loaded_because": [], "cpu_model": "AMD EPYC", "cores": 2}  # fmt: skip
    return {**run, **overrides}


def _merge(run: dict | None) -> dict:
    data = {
        "alloylm_single": {"wall_s_runs": [10.0, 12.0, 11.0], "wall_s": 10.0,
                           "wall_s_median": 11.0, "peak_rss_mib": 600.0},
        "alloylm_sweep7": {"wall_s_runs": [16.0, 17.0], "wall_s": 16.0, "wall_s_median": 16.5,
                           "peak_rss_mib": 650.0},
        "mergekit_single": {"wall_s_runs": [30.0, 33.0, 36.0], "wall_s": 30.0,
                            "wall_s_median": 33.0, "peak_rss_mib": 1800.0},
    }  # fmt: skip
    return {**data, "run": run} if run else data


def test_summary_publishes_idle_figures_with_peer_ratio_and_spread(summary, tmp_path) -> None:
    (tmp_path / "merge_speed.json").write_text(json.dumps(_merge(_idle_run())))
    rows = {row[1]: row for row in summary.rows_for(tmp_path)}
    merge = rows["SLERP merge, whole process (median s)"]
    # value 11 s (median), peer 33 s, 33 / 11 = 3.00x faster, spread (12 - 10) / 11 = 18%
    assert merge[2:6] == ["11 s", "mergekit-yaml 33", "3.00 x faster than the peer", "18%"]
    assert merge[6:] == ["0.2/0.3/0.4", "1.9/0.8/0.5", "2026-12-02", "AMD EPYC, 2 cores",
                         "published"]  # fmt: skip
    assert rows["SLERP merge peak RSS"][4].startswith("3.00 x less memory")  # 1800 / 600
    assert rows["sweep of 7 schedules (median s)"][4].startswith("1.50 x one merge")  # 16.5 / 11
    text = summary.markdown(summary.rows_for(tmp_path), tmp_path)
    assert "| merge_speed | SLERP merge, whole process (median s) | 11 s |" in text


@pytest.mark.parametrize(
    ("data", "label"),
    [
        (_merge(_idle_run(loaded=True, loaded_because=["1-minute load 1.4 at start > 1"])),
         "loaded: not published (1-minute load 1.4 at start > 1)"),
        ({**_merge(None), "cpu_count": 2, "load_average_at_start": [6.74, 7.06, 7.57]},
         "loaded: not published (1-minute load 6.74 at start)"),
        ({**_merge(None), "cpu_count": 2}, "unverified: no load record at the start, not published"),
    ],
)  # fmt: skip
def test_loaded_and_unrecorded_runs_are_not_published(summary, tmp_path, data, label) -> None:
    (tmp_path / "merge_speed.json").write_text(json.dumps(data))
    rows = summary.rows_for(tmp_path)
    assert rows and all(row[-1] == label for row in rows)
    assert all(row[2] == row[4] == row[5] == "-" for row in rows)  # no value, ratio or spread


def test_the_recorded_results_publish_nothing_measured_under_load(summary) -> None:
    """The files in benchmarks/results before this plumbing: loaded or unverified, every one."""
    results = BENCHMARKS / "results"
    for path in results.glob("*.json"):
        if path.name.startswith("_"):
            continue
        data = json.loads(path.read_text())
        if "run" in data:  # written by a benchmark run since: judged by its own record
            continue
        if data.get("timing") is False:  # error rates (calibration.json): no timing to judge
            continue
        status = summary.status_of(data)
        assert not status.published, path.name
        figures, problem = summary.figures_of(path.stem, data)
        assert figures and problem is None, path.name  # the reader understands its layout


def test_eval_speed_reports_bf16_rows_without_lm_eval(monkeypatch, tmp_path, capsys) -> None:
    """Without lm-eval (the --check run) the bf16 rows still give a report (it raised KeyError)."""
    import argparse

    eval_speed = _module("eval_speed")
    monkeypatch.setattr(eval_speed, "results_dir", lambda: tmp_path)
    monkeypatch.setattr(eval_speed, "run_record", lambda run: {})

    def row(seconds: float, predictions: dict[int, int]) -> dict:
        return {"seconds": seconds, "cpu_seconds": seconds, "accuracy": 0.5, "runs_seconds": [seconds],
                "predictions": predictions}  # fmt: skip

    rows = {"alloylm loglik": row(4.0, {0: 1, 1: 2}), "alloylm loglik bf16": row(2.0, {0: 1, 1: 3})}
    args = argparse.Namespace(task="t.csv", batch_size=8, repeats=1, skip_paper=True)
    eval_speed.report(rows, 2, args, run=None)
    written = json.loads((tmp_path / "eval_speed.json").read_text())
    assert written["comparison"] == {"bf16_answers_differing_from_fp32": 1}
    assert "lm-eval" not in capsys.readouterr().out.split("\n")[-2]


def test_a_run_of_some_benchmarks_keeps_the_record_of_the_last_whole_run(
    monkeypatch, tmp_path
) -> None:
    run_all = _module("run_all")
    whole = {"budget_s": 1800, "check": False, "started": "2026-12-07T16:31:31Z",
             "benchmarks": [{"benchmark": "train_throughput", "outcome": "measured"}]}  # fmt: skip
    (tmp_path / "_make_bench.json").write_text(json.dumps(whole))
    monkeypatch.setenv("ALLOY_BENCH_RESULTS", str(tmp_path))
    monkeypatch.setattr(run_all, "wait_until_idle", lambda limit: (0.0, [0.1, 0.2, 0.3]))
    monkeypatch.setattr(
        run_all, "run_one", lambda plan, *a: {"benchmark": plan.name, "outcome": "measured"}
    )
    assert run_all.main(["--only", "merge_speed"]) == 0
    assert json.loads((tmp_path / "_make_bench.json").read_text()) == whole
    partial = json.loads((tmp_path / "_make_bench_only.json").read_text())
    assert partial["only"] == ["merge_speed"]
    assert [e["benchmark"] for e in partial["benchmarks"]] == ["merge_speed"]
    text = (tmp_path / "SUMMARY.md").read_text()
    assert "Last make bench: started 2026-12-07T16:31:31Z" in text
    assert "Last run_all.py --only merge_speed: started" in text
