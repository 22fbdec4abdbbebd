"""A study's numbers from its run folder: the plan, the eval records and the stages' alloy.json.

Reads `<run>/study_plan.json` (written by the study expansion, see docs/study.md), the eval stage's
`results.json` (records of `alloylm.evals.results`, matched to plan models by their `eval_model`
string) and every stage's `alloy.json`; computes per-model scores, per-merge synergy, the analysis
across merges, interpolation curves, loss histories, merge schedules and the lineage graph. The
result is one JSON-ready dict, `study.json`; nothing here draws or re-scores.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm.errors import AlloyError

PLAN_FILE = "study_plan.json"
MANIFEST = "alloy.json"
TRAINING_KINDS = ("cpt", "sft", "dpo", "orpo")
OVERALL = "overall"
CONFIRM = "confirm"


@dataclass
class StudyInputs:
    run_dir: Path
    plan: dict[str, Any]
    records: list[dict[str, Any]]
    eval_settings: dict[str, Any]
    manifests: dict[str, dict[str, Any]] = field(default_factory=dict)  # stage folder -> alloy.json
    notes: list[str] = field(default_factory=list)


def _read_json(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise AlloyError(
            f"{what} is not valid JSON: {error}",
            file=str(path),
            hint="it is written atomically by alloy; rerun the command that writes it",
        ) from error


def load_study(run_dir: str | Path) -> StudyInputs:
    """The plan, the eval records and the manifests of a study's run folder (clear errors if absent)."""
    run_dir = Path(run_dir).resolve()
    if not run_dir.is_dir():
        raise AlloyError(
            f"{run_dir} is not a folder",
            hint="give the output folder of a study run (run.output in the study's YAML)",
        )
    plan_path = run_dir / PLAN_FILE
    if not plan_path.is_file():
        raise AlloyError(
            f"{run_dir} holds no {PLAN_FILE}: it is not the output folder of a study",
            hint="run the study first: alloy study run STUDY.yaml (it writes the plan, then the report)",
        )
    plan = _read_json(plan_path, "the study plan")
    for key in ("models", "eval_stage"):
        if key not in plan:
            raise AlloyError(
                f"the study plan has no {key!r}",
                file=str(plan_path),
                key=key,
                hint="rewrite it with alloy study run (docs/study.md describes the plan)",
            )
    eval_dir = run_dir / plan["eval_stage"]
    eval_manifest = _read_manifest(eval_dir)
    results_name = ((eval_manifest or {}).get("outputs") or {}).get("eval", "results.json")
    results_path = eval_dir / results_name
    if not results_path.is_file():
        raise AlloyError(
            f"the eval stage {plan['eval_stage']!r} has not finished: {results_path} is missing",
            hint="run the study (alloy study run STUDY.yaml); finished stages are skipped",
        )
    results = _read_json(results_path, "the eval results")
    manifests = {}
    for folder in sorted(p for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = _read_manifest(folder)
        if manifest is not None:
            manifests[folder.name] = manifest
    return StudyInputs(
        run_dir=run_dir,
        plan=plan,
        records=list(results.get("results") or []),
        eval_settings=dict(results.get("settings") or {}),
        manifests=manifests,
    )


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    path = folder / MANIFEST
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


# --- benchmarks and per-model scores -------------------------------------------------------------


def benchmark_key(task: str, protocol: str) -> str:
    return f"{task}/{protocol}"


def _eval_model(model: dict[str, Any]) -> str:
    return str(model.get("eval_model") or model.get("source") or model["id"])


def model_records(inputs: StudyInputs) -> dict[str, dict[str, dict[str, Any]]]:
    """model id -> benchmark key -> record (the first record when a model was listed twice)."""
    by_source: dict[str, dict[str, dict[str, Any]]] = {}
    for record in inputs.records:
        key = benchmark_key(record["task"], record["protocol"])
        by_source.setdefault(record["model"], {}).setdefault(key, record)
    return {model["id"]: by_source.get(_eval_model(model), {}) for model in inputs.plan["models"]}


def benchmarks(
    records: Sequence[dict[str, Any]], confirm_tasks: Sequence[str] = ()
) -> list[dict[str, Any]]:
    """The benchmarks of the eval, in its order, plus one pooled 'overall' per protocol that has
    two or more accuracy tasks. Tasks named in `confirm_tasks` (the study's `eval.confirm`) are
    marked `confirm` and pooled apart, as 'confirm/<protocol>': no choice is made on them."""
    confirm = set(confirm_tasks)
    seen: dict[str, dict[str, Any]] = {}
    for record in records:
        key = benchmark_key(record["task"], record["protocol"])
        if key not in seen:
            seen[key] = {
                "key": key,
                "task": record["task"],
                "protocol": record["protocol"],
                "metric": record["metric"],
                "pooled": False,
                "n": record["n"],
                "confirm": record["task"] in confirm,
            }
    rows = list(seen.values())
    for protocol in dict.fromkeys(r["protocol"] for r in rows if r["metric"] == "accuracy"):
        for split, name in ((False, OVERALL), (True, CONFIRM)):
            tasks = [
                r
                for r in rows
                if r["metric"] == "accuracy" and r["protocol"] == protocol and r["confirm"] == split
            ]
            if len(tasks) >= 2:
                rows.append(
                    {
                        "key": benchmark_key(name, protocol),
                        "task": name,
                        "protocol": protocol,
                        "metric": "accuracy",
                        "pooled": True,
                        "tasks": [r["task"] for r in tasks],
                        "n": sum(r["n"] for r in tasks),
                        "confirm": split,
                    }
                )
    return rows


def headline_benchmark(rows: Sequence[dict[str, Any]], *, confirm: bool = False) -> str | None:
    """The pooled accuracy of the first protocol, else the first accuracy benchmark (among the
    selection benchmarks, or among the confirmation ones with `confirm=True`)."""
    accuracy = [r for r in rows if r["metric"] == "accuracy" and r.get("confirm", False) == confirm]
    if not accuracy:
        return None
    first_protocol = accuracy[0]["protocol"]
    same = [r for r in accuracy if r["protocol"] == first_protocol]
    pooled = [r for r in same if r["pooled"]]
    return (pooled or same)[0]["key"]


def answers(bench: dict[str, Any], records: dict[str, dict[str, Any]]) -> dict[str, bool] | None:
    """{question id: correct} of one model on one accuracy benchmark (pooled over tasks for overall)."""
    from alloylm.analysis.scores import correct_by_id, pooled_correct

    if bench["pooled"]:
        parts = [records.get(benchmark_key(task, bench["protocol"])) for task in bench["tasks"]]
        if any(part is None for part in parts):
            return None
        return pooled_correct(parts)  # type: ignore[arg-type]
    record = records.get(bench["key"])
    return correct_by_id(record) if record is not None else None


def score_models(
    inputs: StudyInputs, rows: list[dict[str, Any]], *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    from alloylm.analysis.scores import accuracy_with_interval, improvement_over_baseline
    from alloylm.evals.results import paired_perplexity
    from alloylm.evals.stats import relative_improvement

    per_model = model_records(inputs)
    baseline = inputs.plan.get("baseline")
    base_records = per_model.get(baseline or "", {})
    out = []
    for model in inputs.plan["models"]:
        records = per_model[model["id"]]
        entry = {
            key: model.get(key)
            for key in (
                "id",
                "role",
                "stage",
                "kind",
                "lineage",
                "strategy",
                "merged",
                "parents",
                "schedule",
                "variant",
            )
            if key in model
        }
        entry["eval_model"] = _eval_model(model)
        entry["evaluated"] = bool(records)
        entry["scores"], entry["vs_baseline"] = {}, {}
        for bench in rows:
            if bench["metric"] == "accuracy":
                mine = answers(bench, records)
                if mine is None:
                    continue
                if bench["pooled"]:
                    entry["scores"][bench["key"]] = accuracy_with_interval(
                        list(mine.values()), resamples=resamples, seed=seed
                    )
                else:
                    record = records[bench["key"]]
                    entry["scores"][bench["key"]] = {
                        "score": record["score"],
                        "ci95": record["ci95"],
                        "n": record["n"],
                    }
                theirs = (
                    answers(bench, base_records)
                    if baseline and model["id"] != baseline and not bench.get("confirm")
                    else None
                )
                if theirs:
                    comparison = improvement_over_baseline(
                        mine, theirs, resamples=resamples, seed=seed
                    )
                    if comparison:
                        entry["vs_baseline"][bench["key"]] = comparison
            else:
                record = records.get(bench["key"])
                if record is None:
                    continue
                entry["scores"][bench["key"]] = {
                    "score": record["score"],
                    "ci95": record["ci95"],
                    "n": record["n"],
                    "tokens": record.get("tokens"),
                    "approximate": bool(record.get("approximate")),
                    "ci_note": record.get("ci_note"),
                }
                reference = base_records.get(bench["key"])
                if reference is not None and model["id"] != baseline:
                    comparison = {
                        "relative_improvement": relative_improvement(
                            record["score"],
                            reference["score"],
                            higher_is_better=bench["metric"] != "perplexity",
                        ),
                    }
                    if bench["metric"] == "perplexity":
                        paired = paired_perplexity(
                            record, reference, resamples=resamples, seed=seed
                        )
                        if paired is not None:
                            comparison["paired_ratio"] = paired
                    entry["vs_baseline"][bench["key"]] = comparison
        out.append(entry)
    return out


# --- merges ----------------------------------------------------------------------------------------


def merge_folder(inputs: StudyInputs, model: dict[str, Any]) -> Path | None:
    """The folder holding a merge's own alloy.json: its source when that is a model folder inside
    the run (sweep variants are <stage>/<variant>), else <run>/<stage>."""
    source = Path(str(model.get("source") or ""))
    for candidate in (source, inputs.run_dir / str(model.get("stage") or "")):
        if candidate.is_dir() and (candidate / MANIFEST).is_file():
            return candidate
    return None


def linear_fallback(manifest: dict[str, Any] | None) -> dict[str, Any] | None:
    metrics = (manifest or {}).get("metrics") or {}
    if "linear_fallback_tensors" not in metrics:
        return None
    return {
        "tensors": metrics.get("tensors"),
        "fallback": metrics["linear_fallback_tensors"],
        "share": metrics.get("linear_fallback_fraction"),
    }


def analyse_merges(
    inputs: StudyInputs, rows: list[dict[str, Any]], *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    from alloylm.analysis.synergy import analyse_merge

    per_model = model_records(inputs)
    out = []
    for model in inputs.plan["models"]:
        if not model.get("merged"):
            continue
        parents = list(model.get("parents") or [])
        folder = merge_folder(inputs, model)
        manifest = _read_manifest(folder) if folder else None
        entry: dict[str, Any] = {
            "id": model["id"],
            "parents": parents,
            "lineage": model.get("lineage"),
            "strategy": model.get("strategy"),
            "schedule": model.get("schedule"),
            "variant": model.get("variant"),
            "linear_fallback": linear_fallback(manifest),
            "benchmarks": {},
            "notes": [],
        }
        if len(parents) != 2:
            entry["notes"].append(f"{len(parents)} parents: the study's analysis needs exactly two")
            out.append(entry)
            continue
        for bench in rows:
            if bench["metric"] != "accuracy" or bench.get("confirm"):
                continue  # no choice, and no verdict, on a confirmation benchmark
            mine = answers(bench, per_model.get(model["id"], {}))
            first = answers(bench, per_model.get(parents[0], {}))
            second = answers(bench, per_model.get(parents[1], {}))
            if mine is None or first is None or second is None:
                missing = [
                    n
                    for n, a in zip([model["id"], *parents], (mine, first, second), strict=True)
                    if a is None
                ]
                entry["notes"].append(f"{bench['key']}: not evaluated: {', '.join(missing)}")
                continue
            try:
                result = analyse_merge(mine, first, second, resamples=resamples, seed=seed)
            except ValueError as error:
                entry["notes"].append(f"{bench['key']}: {error}")
                continue
            best = parents[0] if result["P1"] >= result["P2"] else parents[1]
            result["best_parent"] = best
            entry["benchmarks"][bench["key"]] = result
        out.append(entry)
    return out


# --- across merges ---------------------------------------------------------------------------------

ATTRIBUTES = (
    ("SFT", "SFT step (1 yes, 0 no)"),
    ("DPO", "DPO step (1 yes, 0 no)"),
    ("ORPO", "ORPO step (1 yes, 0 no)"),
    ("Instruct", "lineage (1 Instruct, 0 Base)"),
    ("diversity", "parent diversity |P1 - P2|"),
    ("improvement", "gain over the parents' mean, A - E"),
    ("performance", "merged accuracy A"),
)


def merge_attributes(
    merges: list[dict[str, Any]], key: str
) -> tuple[list[str], dict[str, list[float]]]:
    """One row per merge analysed on benchmark `key`: the study's Fig. 10 attributes."""
    ids, columns = [], {name: [] for name, _ in ATTRIBUTES}
    for merge in merges:
        result = merge["benchmarks"].get(key)
        if result is None:
            continue
        steps = str(merge.get("strategy") or "").upper().split("-")
        ids.append(merge["id"])
        columns["SFT"].append(float("SFT" in steps))
        columns["DPO"].append(float("DPO" in steps))
        columns["ORPO"].append(float("ORPO" in steps))
        columns["Instruct"].append(float(str(merge.get("lineage") or "").lower() == "instruct"))
        columns["diversity"].append(result["diversity"])
        columns["improvement"].append(result["vs_expected"]["difference"])
        columns["performance"].append(result["P_merged"])
    return ids, columns


def analyse_across(merges: list[dict[str, Any]], key: str | None, *, seed: int) -> dict[str, Any]:
    from alloylm.analysis.across import (
        correlation_interval,
        correlation_matrix,
        hierarchical_linkage,
        kmeans_two,
        not_enough,
        verdict_correlation,
    )

    if key is None:
        return {
            "benchmark": None,
            "merge_ids": [],
            "notes": ["no accuracy benchmark: nothing to analyse across merges"],
        }
    ids, columns = merge_attributes(merges, key)
    correlation = correlation_matrix(columns)
    expected = [m["benchmarks"][key]["E"] for m in merges if key in m["benchmarks"]]
    actual = [m["benchmarks"][key]["P_merged"] for m in merges if key in m["benchmarks"]]
    clusters = kmeans_two(expected, actual, seed=seed)
    dendrogram = (
        hierarchical_linkage(clusters["points"])
        if clusters.get("points") and clusters.get("note") is None
        else {"linkage": [], "note": clusters.get("note") or not_enough("a dendrogram", len(ids))}
    )
    statements = []
    if len(ids) >= 3:
        for x, y in (("diversity", "improvement"), ("diversity", "performance")):
            if x in correlation["names"] and y in correlation["names"]:
                statements.append(
                    verdict_correlation(x, y, correlation_interval(columns[x], columns[y]))
                )
    return {
        "benchmark": key,
        "merge_ids": ids,
        "attributes": columns,
        "attribute_meaning": dict(ATTRIBUTES),
        "correlation": correlation,
        "statements": statements,
        "kmeans": clusters,
        "dendrogram": dendrogram,
    }


# --- curves, training, schedules, lineage -----------------------------------------------------------


def analyse_curves(
    inputs: StudyInputs, rows: list[dict[str, Any]], key: str | None, *, resamples: int, seed: int
) -> list[dict[str, Any]]:
    from alloylm.analysis.scores import interpolation_curve

    per_model = model_records(inputs)
    bench = next((r for r in rows if r["key"] == key), None)
    out = []
    for curve in inputs.plan.get("curves") or []:
        if bench is None:
            out.append({"merge": curve.get("merge"), "note": "no accuracy benchmark"})
            continue
        points, missing = [], []
        for point in curve.get("points") or []:
            got = answers(bench, per_model.get(point["model"], {}))
            if got is None:
                missing.append(point["model"])
            else:
                points.append((float(point["t"]), got))
        result = interpolation_curve(points, resamples=resamples, seed=seed)
        for row, point in zip(
            result["points"],
            sorted(
                (p for p in curve.get("points") or [] if p["model"] not in missing),
                key=lambda p: float(p["t"]),
            ),
            strict=True,
        ):
            row["model"] = point["model"]
        out.append({"merge": curve.get("merge"), "benchmark": key, "missing": missing, **result})
    return out


def training_histories(inputs: StudyInputs) -> list[dict[str, Any]]:
    """The recorded loss of every training stage of the run, [[step, loss], ...]."""
    out = []
    for stage, manifest in inputs.manifests.items():
        if manifest.get("kind") not in TRAINING_KINDS:
            continue
        metrics = manifest.get("metrics") or {}
        out.append(
            {
                "stage": stage,
                "kind": manifest["kind"],
                "loss_history": metrics.get("loss_history") or [],
                "final_loss": metrics.get("final_loss"),
                "steps": metrics.get("steps"),
                "tokens_trained": metrics.get("tokens_trained"),
                "wall_time_s": manifest.get("wall_time_s"),
            }
        )
    return out


def merge_schedules(inputs: StudyInputs) -> list[dict[str, Any]]:
    """Per-layer t of every merge (attention and MLP tensors), from its alloy.json and config.json."""
    from alloylm.merge.plan import explain_schedule

    out = []
    for model in inputs.plan["models"]:
        if not model.get("merged"):
            continue
        folder = merge_folder(inputs, model)
        manifest = _read_manifest(folder) if folder else None
        if manifest is None:
            out.append(
                {"merge": model["id"], "layers": [], "note": "no alloy.json found for this merge"}
            )
            continue
        parameters = (
            (manifest.get("details") or {}).get("parameters")
            or (manifest.get("config") or {}).get("parameters")
            or {}
        )
        setting = parameters.get("t")
        layers = _num_layers(folder)
        if setting is None or layers is None:
            why = (
                "the merge has no t parameter (not SLERP)"
                if setting is None
                else "config.json has no layer count"
            )
            out.append({"merge": model["id"], "layers": [], "note": why})
            continue
        try:
            rows = explain_schedule(setting, layers)
        except AlloyError as error:
            out.append({"merge": model["id"], "layers": [], "note": error.message})
            continue
        out.append(
            {
                "merge": model["id"],
                "setting": setting,
                "layers": [
                    {"layer": r.layer, "attention": _number(r.attention), "mlp": _number(r.mlp)}
                    for r in rows
                ],
                "note": None,
            }
        )
    return out


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _num_layers(folder: Path | None) -> int | None:
    if folder is None or not (folder / "config.json").is_file():
        return None
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    value = config.get("num_hidden_layers") or (config.get("text_config") or {}).get(
        "num_hidden_layers"
    )
    return int(value) if value else None


def lineage_graph(inputs: StudyInputs) -> dict[str, Any]:
    """Nodes (plan models, and stages or sources they were built from) and edges parent -> child."""
    models = inputs.plan["models"]
    by_stage = {m["stage"]: m["id"] for m in models if m.get("stage")}
    nodes: dict[str, dict[str, Any]] = {
        m["id"]: {
            "id": m["id"],
            "kind": "merge" if m.get("merged") else (m.get("kind") or m.get("role") or "model"),
            "in_plan": True,
        }
        for m in models
    }
    edges: set[tuple[str, str]] = set()

    def by_source(source: str) -> str:
        matches = [m for m in models if source in (m.get("source"), m.get("eval_model"))]
        matches.sort(key=lambda m: m.get("role") != "start")  # a training parent is the start model
        if matches:
            return matches[0]["id"]
        nodes.setdefault(source, {"id": source, "kind": "source", "in_plan": False})
        return source

    def walk(stage: str, child: str, seen: set[str]) -> None:
        manifest = inputs.manifests.get(stage)
        if manifest is None or stage in seen:
            return
        seen.add(stage)
        for parent in manifest.get("parents") or []:
            if parent.get("stage"):
                name = by_stage.get(parent["stage"], parent["stage"])
                if name not in nodes:
                    kind = (inputs.manifests.get(parent["stage"]) or {}).get("kind", "stage")
                    nodes[name] = {"id": name, "kind": kind, "in_plan": False}
                    walk(parent["stage"], name, seen)
                edges.add((name, child))
            elif parent.get("source") and not str(parent.get("role", "")).startswith(
                ("data", "benchmark")
            ):
                edges.add((by_source(str(parent["source"])), child))

    for model in models:
        if model.get("parents"):  # merges and the points of a curve name their parents
            for parent in model.get("parents") or []:
                edges.add((parent, model["id"]))
        elif model.get("stage"):
            walk(model["stage"], model["id"], set())
    return {"nodes": list(nodes.values()), "edges": sorted(edges)}


# --- strategies and verdicts -------------------------------------------------------------------------


def analyse_strategies(
    inputs: StudyInputs,
    rows: list[dict[str, Any]],
    key: str | None,
    *,
    resamples: int,
    seed: int,
    correction: str,
) -> list[dict[str, Any]]:
    """Strategy against strategy on the headline benchmark: one paired matrix per lineage and
    merge state (`verdicts.strategy_matrix`), each its own family, with a best-strategy verdict."""
    from alloylm.analysis.verdicts import strategy_matrix

    bench = next((r for r in rows if r["key"] == key), None)
    if bench is None:
        return []
    per_model = model_records(inputs)
    groups: dict[tuple[str, bool], dict[str, dict[str, bool]]] = {}
    for model in inputs.plan["models"]:
        if not model.get("strategy") or model.get("role") == "curve" or model.get("variant"):
            continue
        got = answers(bench, per_model.get(model["id"], {}))
        if got is None:
            continue
        group = (str(model.get("lineage") or ""), bool(model.get("merged")))
        groups.setdefault(group, {})[model["id"]] = got
    out = []
    for (lineage, merged), members in groups.items():
        if len(members) < 2:
            continue
        family = f"strategies of {lineage}{' merged' if merged else ''} on {key}"
        matrix = strategy_matrix(
            members, resamples=resamples, seed=seed, family=family, correction=correction
        )
        out.append({"lineage": lineage, "merged": merged, "family": family, **matrix})
    return out


def apply_verdicts(
    models: list[dict[str, Any]],
    merges: list[dict[str, Any]],
    curves: list[dict[str, Any]],
    strategies: list[dict[str, Any]],
    baseline: str | None,
    correction: str,
) -> list[dict[str, Any]]:
    """Group every verdict into its family, apply the correction, write its words; return one
    summary per family (`verdicts.family_sentence`)."""
    from alloylm.analysis import verdicts as v

    families: list[dict[str, Any]] = []

    def record(name: str, kind: str, members: list[dict[str, Any]]) -> None:
        size = len(members)
        significant = sum(1 for m in members if m.get("significant"))
        families.append(
            {
                "family": name,
                "kind": kind,
                "size": size,
                "correction": correction if size > 1 else "none",
                "significant": significant,
                "sentence": v.family_sentence(name, kind, size, correction, significant),
            }
        )

    keys = list(dict.fromkeys(k for m in models for k in m["vs_baseline"]))
    for key in keys:
        members = []
        for model in models:
            comparison = model["vs_baseline"].get(key)
            test = (comparison or {}).get("paired") or (comparison or {}).get("paired_ratio")
            if test is not None:
                members.append((comparison, test))
        if not members:
            continue
        name = f"vs {baseline} on {key}"
        v.correct_family([t for _, t in members], family=name, correction=correction)
        for comparison, test in members:
            comparison["verdict"] = (
                v.words_perplexity(test, baseline or "")
                if "ratio" in test
                else v.words_vs_baseline(test, baseline or "")
            )
            for name_ in ("family", "correction", "p_adjusted", "significant"):
                comparison[name_] = test[name_]
        record(name, "vs_baseline", [t for _, t in members])
    merge_keys = list(dict.fromkeys(k for m in merges for k in m["benchmarks"]))
    for key in merge_keys:
        results = [(m, m["benchmarks"][key]) for m in merges if key in m["benchmarks"]]
        tests = [t for _, r in results for t in (r["vs_expected"], r["vs_parents"])]
        name = f"merges on {key}"
        v.correct_family(tests, family=name, correction=correction)
        for merge, result in results:
            result["verdict_vs_expected"] = v.words_vs_expected(result["vs_expected"])
            result["verdict_vs_best_parent"] = v.words_vs_parents(
                result["vs_parents"], merge["parents"]
            )
            result["family"], result["correction"] = name, result["vs_parents"]["correction"]
        record(name, "merge", tests)
    tested = [c for c in curves if c.get("test")]
    if tested:
        name = f"curves on {tested[0].get('benchmark')}"
        v.correct_family([c["test"] for c in tested], family=name, correction=correction)
        for curve in tested:
            curve["verdict"] = v.words_curve(curve["test"], curve["inner_ts"])
        record(name, "curve", [c["test"] for c in tested])
    for matrix in strategies:
        if matrix.get("pairs"):
            record(matrix["family"], "strategies", matrix["pairs"])
    return families


def confirm_selection(
    inputs: StudyInputs,
    rows: list[dict[str, Any]],
    key: str | None,
    confirm_key: str | None,
    *,
    resamples: int,
    seed: int,
    correction: str,
) -> dict[str, Any] | None:
    """The confirmation split: the best strategy, the best merge and the best curve point are
    chosen on the selection benchmark `key`; each is tested once on `confirm_key`, questions no
    choice was made on (the best strategy against the baseline, the best merge against both
    parents, the best curve point against both ends), one family, Holm. Picking the best of many
    on the same questions inflates its estimate (the winner's curse); the confirmed verdicts are
    the study's headline, and the selection figures are only the reason for the choice."""
    from alloylm.analysis import verdicts as v

    if confirm_key is None:
        return None
    if key is None:
        return {"benchmark": confirm_key, "selected_on": None, "claims": [],
                "note": "no selection benchmark: nothing was chosen to confirm"}  # fmt: skip
    per_model = model_records(inputs)
    select = next(r for r in rows if r["key"] == key)
    check = next(r for r in rows if r["key"] == confirm_key)
    baseline = inputs.plan.get("baseline")
    plan_models = {m["id"]: m for m in inputs.plan["models"]}

    def scored(model_id: str, bench: dict[str, Any]) -> dict[str, bool] | None:
        return answers(bench, per_model.get(model_id, {}))

    def dev_score(model_id: str) -> float | None:
        got = scored(model_id, select)
        return sum(got.values()) / len(got) if got else None

    def best(ids: list[str]) -> str | None:
        ranked = [(dev_score(i), i) for i in ids]
        ranked = [(score, i) for score, i in ranked if score is not None]
        return max(ranked)[1] if ranked else None

    def values(*ids: str) -> list[list[float]] | None:
        got = [scored(i, check) for i in ids]
        if any(g is None for g in got):
            return None
        shared = [k for k in got[0] if all(k in g for g in got)]  # type: ignore[union-attr]
        return [[float(g[k]) for k in shared] for g in got]  # type: ignore[index]

    claims: list[dict[str, Any]] = []
    strategies = [m["id"] for m in inputs.plan["models"] if m.get("strategy")
                  and not m.get("merged") and m.get("role") != "curve" and m["id"] != baseline]  # fmt: skip
    chosen = best(strategies)
    if chosen and baseline and (got := values(chosen, baseline)) and got[0]:
        test = paired_bootstrap_test(got[0], got[1], resamples=resamples, seed=seed)
        claims.append({"claim": "best strategy vs the baseline", "model": chosen,
                       "compared_with": [baseline], "test": test, "kind": "vs_baseline"})  # fmt: skip
    merge_ids = [m["id"] for m in inputs.plan["models"]
                 if m.get("merged") and m.get("role") == "merge" and len(m.get("parents") or []) == 2]  # fmt: skip
    chosen = best(merge_ids)
    if chosen:
        parents = list(plan_models[chosen]["parents"])
        got = values(chosen, *parents)
        if got and got[0]:
            test = v.versus_both_parents(*got, resamples=resamples, seed=seed)
            claims.append({"claim": "best merge vs both parents", "model": chosen,
                           "compared_with": parents, "test": test, "kind": "vs_parents"})  # fmt: skip
    for curve in inputs.plan.get("curves") or []:
        ordered = sorted(curve.get("points") or [], key=lambda point: float(point["t"]))
        if len(ordered) < 3:
            continue
        inner = [p["model"] for p in ordered[1:-1]]
        chosen = best(inner)
        got = values(chosen, ordered[0]["model"], ordered[-1]["model"]) if chosen else None
        if chosen and got and got[0]:
            test = v.inner_point_test([got[0]], got[1], got[2], resamples=resamples, seed=seed)
            t = next(float(p["t"]) for p in ordered if p["model"] == chosen)
            claims.append({"claim": f"best inner point of the curve of {curve.get('merge')}",
                           "model": chosen, "t": t,
                           "compared_with": [ordered[0]["model"], ordered[-1]["model"]],
                           "test": test, "kind": "curve"})  # fmt: skip
    family = f"confirmed on {confirm_key}"
    if claims:
        v.correct_family([c["test"] for c in claims], family=family, correction=correction)
    for claim in claims:
        test = claim["test"]
        claim["selection_score"] = dev_score(claim["model"])
        if claim["kind"] == "vs_baseline":
            claim["verdict"] = v.words_vs_baseline(test, str(baseline))
        elif claim["kind"] == "vs_parents":
            claim["verdict"] = v.words_vs_parents(test, claim["compared_with"])
        else:
            claim["verdict"] = v.words_curve(test, [claim["t"]])
    return {
        "benchmark": confirm_key,
        "n": check["n"],
        "selected_on": key,
        "family": family,
        "claims": claims,
        "sentence": v.family_sentence(
            family,
            "confirmed",
            len(claims),
            correction,
            sum(1 for c in claims if c["test"].get("significant")),
        ),  # fmt: skip
    }


def paired_bootstrap_test(
    a: list[float], b: list[float], *, resamples: int, seed: int
) -> dict[str, Any]:
    from alloylm.evals.stats import paired_bootstrap

    return paired_bootstrap(a, b, resamples=resamples, seed=seed)


# --- everything ---------------------------------------------------------------------------------------


def analyse_study(inputs: StudyInputs, *, correction: str | None = None) -> dict[str, Any]:
    """study.json: every number of the report, with the uncertainty of each.

    `correction` ('holm', the default, or 'none'; else the plan's `correction`) is applied to
    every family of verdicts (`alloylm.analysis.verdicts`)."""
    from alloylm.analysis.verdicts import ALPHA, CORRECTIONS

    correction = correction or str(inputs.plan.get("correction") or "holm")
    if correction not in CORRECTIONS:
        raise AlloyError(
            f"unknown multiplicity correction {correction!r}",
            key="correction",
            hint=f"use one of {', '.join(CORRECTIONS)}",
        )
    resamples = int(inputs.eval_settings.get("resamples") or 1000)
    seed = int(inputs.eval_settings.get("seed") or 0)
    rows = benchmarks(inputs.records, inputs.plan.get("confirm_tasks") or ())
    key = headline_benchmark(rows)
    confirm_key = headline_benchmark(rows, confirm=True)
    models = score_models(inputs, rows, resamples=resamples, seed=seed)
    merges = analyse_merges(inputs, rows, resamples=resamples, seed=seed)
    curves = analyse_curves(inputs, rows, key, resamples=resamples, seed=seed)
    strategies = analyse_strategies(
        inputs, rows, key, resamples=resamples, seed=seed, correction=correction
    )
    families = apply_verdicts(
        models, merges, curves, strategies, inputs.plan.get("baseline"), correction
    )
    confirmed = confirm_selection(
        inputs, rows, key, confirm_key, resamples=resamples, seed=seed, correction=correction
    )
    if confirmed and confirmed.get("claims"):
        families.insert(
            0,
            {
                "family": confirmed["family"],
                "kind": "confirmed",
                "size": len(confirmed["claims"]),
                "correction": correction if len(confirmed["claims"]) > 1 else "none",
                "significant": sum(1 for c in confirmed["claims"] if c["test"]["significant"]),
                "sentence": confirmed["sentence"],
            },
        )
    notes = list(inputs.notes)
    not_scored = [m["id"] for m in models if not m["evaluated"]]
    if not_scored:
        notes.append(
            f"not evaluated (no eval record matches their eval_model): {', '.join(not_scored)}"
        )
    return {
        "version": 1,
        "study": inputs.plan.get("study"),
        "run_dir": str(inputs.run_dir),
        "pipeline_file": inputs.plan.get("pipeline_file"),
        "baseline": inputs.plan.get("baseline"),
        "eval": {
            "stage": inputs.plan["eval_stage"],
            "settings": inputs.eval_settings,
            "resamples": resamples,
            "seed": seed,
        },
        "verdicts": {"alpha": ALPHA, "correction": correction, "families": families},
        "benchmarks": rows,
        "headline": key,
        "confirm_headline": confirm_key,
        "confirmed": confirmed,
        "models": models,
        "merges": merges,
        "across": analyse_across(merges, key, seed=seed),
        "curves": curves,
        "strategies": strategies,
        "training": training_histories(inputs),
        "schedules": merge_schedules(inputs),
        "lineage": lineage_graph(inputs),
        "notes": notes,
    }
