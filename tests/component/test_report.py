"""`alloy report` on a real tiny study run: a pipeline on tiny:llama (CPT, SFT, SLERP merges, a t
sweep, one eval stage) plus the study plan the expansion writes; then study.json, the CSV files,
every figure, the CLI, degenerate studies, and the page in a real headless browser."""

from __future__ import annotations

import csv
import json
import random
import re
import shutil
from pathlib import Path

import pytest

WORDS = [
    "bone",
    "muscle",
    "nerve",
    "cell",
    "tissue",
    "blood",
    "heart",
    "lung",
    "kidney",
    "liver",
    "skin",
    "joint",
    "tendon",
    "ligament",
    "cartilage",
    "neuron",
]

PIPELINE = """
run: {name: tiny_study, seed: 3, output: ./run}
stages:
  cpt:
    kind: cpt
    model: tiny:llama
    data: [{path: corpus.jsonl, holdout: {fraction: 0.2, seed: 0, key: module}}]
    train: {max_steps: 4, max_seq_length: 64, per_device_batch_size: 2, learning_rate: 1.0e-3, save_steps: 2, logging_steps: 1}
  cpt_sft:
    kind: sft
    model: ${stages.cpt.output}
    data: [{path: chats.jsonl}]
    train: {max_steps: 3, max_seq_length: 64, per_device_batch_size: 2, learning_rate: 1.0e-3, save_steps: 2, logging_steps: 1}
  cpt_slerp:
    kind: merge
    method: slerp
    base_model: tiny:llama:1
    models: ["${stages.cpt.output}"]
  cpt_sft_slerp:
    kind: merge
    method: slerp
    base_model: tiny:llama:1
    models: ["${stages.cpt_sft.output}"]
  cpt_sft_t:
    kind: merge
    method: slerp
    base_model: tiny:llama:1
    models: ["${stages.cpt_sft.output}"]
    sweep: {grid: [0.0, 0.5, 1.0]}
  eval:
    kind: eval
    models: [tiny:llama, tiny:llama:1, "${stages.cpt.output}", "${stages.cpt_sft.output}",
             "${stages.cpt_slerp.output}", "${stages.cpt_sft_slerp.output}",
             "${stages.cpt_sft_t.output}/t0", "${stages.cpt_sft_t.output}/t0.5", "${stages.cpt_sft_t.output}/t1"]
    protocols: [cloze]
    resamples: 200
    tasks:
      - {path: bench_a.jsonl, type: mcq, name: bench_a}
      - {path: bench_b.jsonl, type: mcq, name: bench_b}
      - {path: "${stages.cpt.output}/heldout.jsonl", type: perplexity, name: heldout}
"""

FIGURES = (
    "fig-accuracy",
    "fig-perplexity",
    "fig-expected",
    "fig-deviation",
    "fig-correlation",
    "fig-clusters",
    "fig-curve",
    "fig-loss",
    "fig-schedule",
    "fig-lineage",
)


def write_inputs(root: Path) -> None:
    rng = random.Random(0)
    with open(root / "corpus.jsonl", "w") as handle:
        for i in range(24):
            text = " ".join(rng.choice(WORDS) for _ in range(100))
            handle.write(json.dumps({"text": text, "module": f"m{i}"}) + "\n")
    with open(root / "chats.jsonl", "w") as handle:
        for word in WORDS:
            chat = [
                {"role": "user", "content": f"What is a {word}?"},
                {"role": "assistant", "content": f"A {word} is a part of the body."},
            ]
            handle.write(json.dumps({"messages": chat}) + "\n")
    for name, count in (("bench_a", 30), ("bench_b", 20)):
        with open(root / f"{name}.jsonl", "w") as handle:
            for i in range(count):
                choices = rng.sample(WORDS, 4)
                question = {
                    "id": f"{name}-{i}",
                    "question": f"Which word names a {choices[i % 4]}?",
                    "choices": choices,
                    "answer": "ABCD"[i % 4],
                    "chapter": f"ch{i % 2}",
                }
                handle.write(json.dumps(question) + "\n")


def study_plan(out: Path, merges: tuple[str, ...] | None = None) -> dict:
    """The plan as the study expansion writes it (docs/study.md), for the pipeline above."""

    def stage_model(id_: str, kind: str, strategy: str, folder: str, **extra) -> dict:
        return {
            "id": id_,
            "role": "merge" if kind == "merge" else "stage",
            "stage": folder.split("/")[0],
            "kind": kind,
            "lineage": "base",
            "strategy": strategy,
            "merged": kind == "merge",
            "variant": {},
            "source": str(out / folder),
            "eval_model": str(out / folder),
            **extra,
        }

    models = [
        {
            "id": "start",
            "role": "start",
            "source": "tiny:llama",
            "eval_model": "tiny:llama",
            "lineage": "base",
            "strategy": "none",
            "merged": False,
            "stage": None,
        },
        {
            "id": "partner",
            "role": "partner",
            "source": "tiny:llama:1",
            "eval_model": "tiny:llama:1",
            "lineage": None,
            "strategy": "none",
            "merged": False,
            "stage": None,
        },
        stage_model("cpt", "cpt", "CPT", "cpt", steps=["cpt"]),
        stage_model("cpt_sft", "sft", "CPT-SFT", "cpt_sft", steps=["cpt", "sft"]),
        stage_model(
            "cpt_slerp", "merge", "CPT", "cpt_slerp", parents=["cpt", "partner"], schedule="study"
        ),
        stage_model(
            "cpt_sft_slerp",
            "merge",
            "CPT-SFT",
            "cpt_sft_slerp",
            parents=["cpt_sft", "partner"],
            schedule="study",
        ),
    ]
    for t in ("0", "0.5", "1"):
        models.append(
            stage_model(
                f"cpt_sft_t{t}",
                "merge",
                "CPT-SFT",
                f"cpt_sft_t/t{t}",
                parents=["cpt_sft", "partner"],
                schedule=f"t={t}",
                variant={"t": float(t)},
            )
        )
    if merges is not None:
        models = [m for m in models if not m["merged"] or m["id"] in merges]
    plan = {
        "version": 1,
        "study": "tiny_study",
        "pipeline_file": str(out.parent / "study.yaml"),
        "output": str(out),
        "eval_stage": "eval",
        "baseline": "start",
        "models": models,
    }
    if merges is None:
        plan["curves"] = [
            {
                "merge": "cpt_sft_slerp",
                "points": [{"t": float(t), "model": f"cpt_sft_t{t}"} for t in ("0", "0.5", "1")],
            }
        ]
    return plan


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A real tiny study run, built once: ~30 s on 2 cores."""
    from alloylm.pipeline.load import load_pipeline
    from alloylm.pipeline.runner import PipelineRunner

    root = tmp_path_factory.mktemp("study")
    write_inputs(root)
    (root / "study.yaml").write_text(PIPELINE)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("ALLOY_EVALS_DIR", str(root / "eval-cache"))
        outcomes = PipelineRunner(load_pipeline(root / "study.yaml")).run()
    assert [o.status for o in outcomes] == ["built"] * len(outcomes), [
        (o.name, o.error) for o in outcomes
    ]
    out = root / "run"
    (out / "study_plan.json").write_text(json.dumps(study_plan(out), indent=2))
    return out


@pytest.fixture(scope="module")
def report(run_dir) -> Path:
    from alloylm.analysis.report import write_report

    return write_report(run_dir)


@pytest.mark.timeout(600)
def test_study_json_holds_every_number(report, run_dir):
    assert report == run_dir / "report" / "report.html"
    study = json.loads((report.parent / "study.json").read_text())
    assert study["headline"] == "overall/cloze"
    assert [b["key"] for b in study["benchmarks"]] == [
        "bench_a/cloze",
        "bench_b/cloze",
        "heldout/perplexity",
        "overall/cloze",
    ]
    models = {m["id"]: m for m in study["models"]}
    assert all(m["evaluated"] for m in models.values())
    records = json.loads((run_dir / "eval" / "results.json").read_text())["results"]
    by_key = {(r["model"], r["task"]): r for r in records}
    for model in models.values():  # per-benchmark scores are the eval's own, matched by eval_model
        record = by_key[(model["eval_model"], "bench_a")]
        assert model["scores"]["bench_a/cloze"]["score"] == record["score"]
        assert model["scores"]["bench_a/cloze"]["ci95"] == record["ci95"]
        pooled = (record["correct"] + by_key[(model["eval_model"], "bench_b")]["correct"]) / 50
        assert model["scores"]["overall/cloze"]["score"] == pytest.approx(pooled)
    merges = {m["id"]: m for m in study["merges"]}
    assert set(merges) == {"cpt_slerp", "cpt_sft_slerp", "cpt_sft_t0", "cpt_sft_t0.5", "cpt_sft_t1"}
    t0 = merges["cpt_sft_t0"]["benchmarks"]["overall/cloze"]
    # t = 0 is the partner itself: its gap to the partner is exactly 0 on every question
    assert t0["P_merged"] == pytest.approx(models["partner"]["scores"]["overall/cloze"]["score"])
    for merge in merges.values():
        result = merge["benchmarks"]["overall/cloze"]
        assert result["E"] == pytest.approx((result["P1"] + result["P2"]) / 2)
        assert result["verdict_vs_best_parent"] and "pp [" in result["verdict_vs_best_parent"]
        assert merge["linear_fallback"]["tensors"] > 0
    assert study["across"]["merge_ids"] == list(merges)
    assert len(study["curves"]) == 1 and [p["t"] for p in study["curves"][0]["points"]] == [
        0.0,
        0.5,
        1.0,
    ]
    training = {s["stage"]: s for s in study["training"]}
    assert set(training) == {"cpt", "cpt_sft"}
    assert [row[0] for row in training["cpt"]["loss_history"]] == [1, 2, 3, 4]
    schedules = {s["merge"]: s for s in study["schedules"]}
    assert [row["attention"] for row in schedules["cpt_sft_slerp"]["layers"]] == [
        0.0,
        1.0,
    ]  # 2 layers
    assert [row["mlp"] for row in schedules["cpt_sft_t0.5"]["layers"]] == [0.5, 0.5]
    edges = {tuple(e) for e in study["lineage"]["edges"]}
    assert {
        ("start", "cpt"),
        ("cpt", "cpt_sft"),
        ("cpt_sft", "cpt_sft_slerp"),
        ("partner", "cpt_sft_slerp"),
    } <= edges


@pytest.mark.timeout(600)
def test_csv_files_and_every_figure(report):
    with open(report.parent / "models.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 9 * 4  # 9 models x (2 tasks, perplexity, overall)
    assert {r["benchmark"] for r in rows} == {
        "bench_a/cloze",
        "bench_b/cloze",
        "heldout/perplexity",
        "overall/cloze",
    }
    with open(report.parent / "merges.csv") as handle:
        merges = list(csv.DictReader(handle))
    assert len(merges) == 5 * 3 and all(r["verdict_vs_best_parent"] for r in merges)
    html = report.read_text()
    for figure in FIGURES:
        start = html.index(f'<figure id="{figure}">')
        assert "<svg" in html[start : html.index("</figure>", start)], figure
    assert "Not drawn" not in html
    # nothing to fetch: no script, stylesheet link, import or remote URL (SVG namespaces aside)
    text = re.sub(r'xmlns(:xlink)?="http://www.w3.org/[^"]*"', "", html)
    for forbidden in ("http://", "https://", "<script", "<link", "@import", "url(http", "src="):
        assert forbidden not in text, forbidden


@pytest.mark.timeout(600)
def test_cli_prints_the_summary_and_writes_elsewhere(run_dir, tmp_path, capsys):
    from alloylm.cli.main import main

    assert main(["report", str(run_dir), "-o", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr()
    assert "cpt_sft_slerp" in printed.err and "A vs both parents" in printed.err
    # the terminal names each family and its correction (issue 23)
    assert "Family 'vs " in printed.err and "Holm's step-down correction" in printed.err
    assert f"report: {tmp_path / 'out' / 'report.html'}" in printed.out
    assert main(["report", str(run_dir), "-o", str(tmp_path / "off"), "--correction", "none"]) == 0
    assert "no multiplicity correction (turned off)" in capsys.readouterr().err
    assert (tmp_path / "out" / "study.json").is_file()
    assert main(["report", str(tmp_path)]) == 2
    assert "holds no study_plan.json" in capsys.readouterr().err


@pytest.mark.timeout(600)
def test_a_study_with_one_merge_says_what_is_missing(run_dir, tmp_path):
    from alloylm.analysis.report import write_report

    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("*.safetensors", "report"))
    (copy / "study_plan.json").write_text(
        json.dumps(study_plan(run_dir, merges=("cpt_sft_slerp",)))
    )
    html = write_report(copy).read_text()
    study = json.loads((copy / "report" / "study.json").read_text())
    assert study["across"]["correlation"]["note"] == (
        "not enough merges for a correlation matrix: needs 3, the study has 1"
    )
    drawn = {f["id"]: f for f in study["figures"]}
    assert not drawn["fig-correlation"]["drawn"] and not drawn["fig-clusters"]["drawn"]
    assert not drawn["fig-curve"]["drawn"]
    assert drawn["fig-expected"]["drawn"] and drawn["fig-lineage"]["drawn"]
    assert "Not drawn: not enough merges for a correlation matrix" in html


BROWSER = "/usr/bin/chromium"


@pytest.mark.timeout(600)
def test_report_in_a_headless_browser(report, tmp_path):
    if not Path(BROWSER).exists():
        pytest.skip(f"{BROWSER} is not installed (apt-get install -y chromium; .ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is a dev dependency"
    )

    requests, problems = [], []
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=BROWSER,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("request", lambda request: requests.append(request.url))
            page.on(
                "console", lambda message: message.type == "error" and problems.append(message.text)
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            page.goto(report.as_uri(), wait_until="load")
            sizes = {figure: page.locator(f"#{figure} svg").bounding_box() for figure in FIGURES}
            # issue 23: the page names the correction of every family of verdicts
            families = page.locator("li.family-sentence").all_inner_texts()
            # issue 23 defect 11: no table reaches past the content column; a wide table
            # scrolls inside its own container (the merge table was cut off at 1280 px)
            column = page.locator("#models").bounding_box()
            tables = page.evaluate(
                """() => [...document.querySelectorAll('table')].map(t => {
                    const box = t.parentElement.getBoundingClientRect();
                    return {id: t.id || t.className, right: box.right, width: box.width,
                            scrolls: t.parentElement.classList.contains('scroll')};
                })"""
            )
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert requests and all(url.startswith(("file://", "data:")) for url in requests), requests
    assert problems == []
    for figure, box in sizes.items():
        assert box is not None and box["width"] > 0 and box["height"] > 0, figure
    assert (tmp_path / "report.png").stat().st_size > 10_000
    assert any(text.startswith("Family 'vs ") and "Holm's step-down correction" in text
               for text in families), families  # fmt: skip
    assert any(text.startswith("Family 'merges on ") for text in families), families
    assert tables and column is not None
    for table in tables:
        assert table["scrolls"], table
        assert table["right"] <= column["x"] + column["width"] + 1, (table, column)
