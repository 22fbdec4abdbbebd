"""Calibration of every verdict the study report prints (issue 23): false-verdict rates under the
null, power at a stated effect, interval coverage, over simulated studies with seeded synthetic
per-item outcomes. Prints a table and writes benchmarks/results/calibration.json.

    python benchmarks/calibration.py                 # >= 500 studies per case (minutes, CPU)
    python benchmarks/calibration.py --studies 100   # quicker, coarser
    python benchmarks/calibration.py --check         # tiny sizes into a scratch folder

Every verdict is computed by the same functions the report uses (alloylm.analysis.verdicts,
alloylm.evals.stats, alloylm.chat.ratings). Rows marked "before issue 23" run the procedure the
report used before, for comparison; they are not bars.

Bars (issue 23): a false-verdict rate is at most its nominal level plus its Monte-Carlo error,
here nominal + 2 sqrt(nominal (1 - nominal) / studies); an interval claimed at 95% covers at least
93%, or the report marks it approximate (perplexity below 30 documents, Bradley-Terry below 30
scripts). Nominal levels: 5% for a two-sided verdict or a family (Holm); 2.5% for a one-sided
claim ("beats both parents", "falls short", "an inner point beats both ends").

Simulated data. Accuracy: each question has a difficulty p_i ~ U(0.15, 0.85); a model answers it
right with probability p_i + its effect (clipped), independently given p_i, so models are paired
through the questions. Perplexity: document i has a difficulty mu_i ~ logN(1, 0.5) nats/token and
t_i ~ U(50, 500) tokens; a model's NLL is t_i mu_i exp(e), e ~ N(0, 0.03) per model and document.
Bradley-Terry: 4 models of equal mean quality; each script draws a transcript quality q ~ N(0, 1)
per model (shared by every verdict on that script), and each verdict (3 samples x 2 orders per
pair) picks x over y with probability logistic(q_x - q_y). The true ratings are all 1000.

Error rates are counts, not timings: they do not depend on the machine's load, so this script
does not refuse a loaded machine (and benchmarks/summary.py lists it apart from the timings).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from _common import portable_command, results_dir  # noqa: E402

from alloylm.analysis.verdicts import (  # noqa: E402
    correct_family,
    inner_point_test,
    strategy_matrix,
    versus_both_parents,
)
from alloylm.chat.ratings import bradley_terry_ratings  # noqa: E402
from alloylm.evals.stats import (  # noqa: E402
    bootstrap_indices,
    paired_bootstrap,
    paired_ratio_bootstrap,
    percentile_interval,
    ratio_interval,
)

ALPHA = 0.05


@dataclass
class Row:
    verdict: str
    case: str
    measure: str  # "false verdict", "power", "coverage"
    rate: float
    studies: int
    nominal: float | None = None
    bar: str = ""
    passes: bool | None = None
    reference: bool = False  # a "before issue 23" row: shown, not a bar

    @property
    def mc_error(self) -> float:
        return math.sqrt(max(self.rate * (1 - self.rate), 1e-12) / self.studies)


def false_rate_row(verdict: str, case: str, hits: int, studies: int, nominal: float) -> Row:
    rate = hits / studies
    limit = nominal + 2 * math.sqrt(nominal * (1 - nominal) / studies)
    return Row(verdict, case, "false verdict", rate, studies, nominal,
               f"<= {limit:.1%} (nominal {nominal:.1%} + 2 MC s.e.)", rate <= limit)  # fmt: skip


def coverage_row(verdict: str, case: str, hits: int, studies: int, approximate: bool) -> Row:
    rate = hits / studies
    if approximate:
        return Row(verdict, case, "coverage", rate, studies, 0.95,
                   "marked approximate in the report", True)  # fmt: skip
    return Row(verdict, case, "coverage", rate, studies, 0.95, ">= 93%", rate >= 0.93)


def info_row(verdict: str, case: str, measure: str, hits: int, studies: int, **extra) -> Row:
    return Row(verdict, case, measure, hits / studies, studies, **extra)


# ------------------------------------------------------------------ data
def difficulty(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.uniform(0.15, 0.85, size=n)


def answers(rng: np.random.Generator, p: np.ndarray, effect: float = 0.0) -> np.ndarray:
    return (rng.random(p.size) < np.clip(p + effect, 0.0, 1.0)).astype(float)


# ------------------------------------------------------------------ before issue 23 (references)
def legacy_gap_to_max(m, a, b, resamples: int, seed: int) -> tuple[float, float]:
    """The percentile bootstrap of mean(m) - max(mean(a), mean(b)), max re-chosen per resample."""
    picks = bootstrap_indices(m.size, resamples, seed)
    diffs = m[picks].mean(axis=1) - np.maximum(a[picks].mean(axis=1), b[picks].mean(axis=1))
    return percentile_interval(diffs)


def legacy_overlap_apart(nll_a, tok_a, nll_b, tok_b, resamples: int, seed: int) -> bool:
    """Two per-model document-bootstrap intervals that do not overlap."""
    low_a, high_a = ratio_interval(nll_a, tok_a, resamples=resamples, seed=seed)["ci95"]
    low_b, high_b = ratio_interval(nll_b, tok_b, resamples=resamples, seed=seed)["ci95"]
    return high_a < low_b or high_b < low_a


# ------------------------------------------------------------------ the cases
def vs_baseline(
    studies: int, resamples: int, seed: int, n: int = 336, models: int = 11
) -> list[Row]:
    rng = np.random.default_rng(seed)
    hits = {"holm": 0, "none": 0}
    power = 0
    for study in range(studies):
        p = difficulty(rng, n)
        base = answers(rng, p)
        others = [answers(rng, p) for _ in range(models)]
        tests = [paired_bootstrap(o, base, resamples=resamples, seed=study) for o in others]
        for correction in hits:
            copies = [dict(t) for t in tests]
            correct_family(copies, family="vs baseline", correction=correction)
            hits[correction] += any(c["significant"] for c in copies)
        # alternative: the first model +8 pp, the others null
        better = answers(rng, p, 0.08)
        alt = [paired_bootstrap(better, base, resamples=resamples, seed=study)] + [dict(t) for t in tests[1:]]  # fmt: skip
        correct_family(alt, family="vs baseline", correction="holm")
        power += alt[0]["significant"] and alt[0]["difference"] > 0
    case = f"{models} models equal to the baseline, n = {n}"
    return [
        false_rate_row("vs baseline (family, Holm)", case, hits["holm"], studies, ALPHA),
        info_row(
            "vs baseline (family, no correction)",
            case,
            "false verdict",
            hits["none"],
            studies,
            reference=True,
            bar="what Holm prevents",
        ),  # fmt: skip
        info_row(
            "vs baseline (family, Holm)",
            f"one model +8 pp, {models - 1} null, n = {n}",
            "power",
            power,
            studies,
        ),  # fmt: skip
    ]


def strategies(studies: int, resamples: int, seed: int, n: int = 336, k: int = 4) -> list[Row]:
    rng = np.random.default_rng(seed)
    any_false = false_best = power = 0
    for study in range(studies):
        p = difficulty(rng, n)
        null = {f"s{i}": dict(enumerate(answers(rng, p).astype(bool))) for i in range(k)}
        matrix = strategy_matrix(null, resamples=resamples, seed=study)
        any_false += any(pair["significant"] for pair in matrix["pairs"])
        false_best += matrix["best"] is not None
        alt = dict(null)
        alt["s0"] = dict(enumerate(answers(rng, p, 0.10).astype(bool)))
        power += strategy_matrix(alt, resamples=resamples, seed=study)["best"] == "s0"
    case = f"{k} equal strategies, n = {n}"
    return [
        false_rate_row("strategy vs strategy (pairs, Holm)", case, any_false, studies, ALPHA),
        false_rate_row("best strategy", case, false_best, studies, ALPHA / 2),
        info_row(
            "best strategy",
            f"one strategy +10 pp over {k - 1} equal ones, n = {n}",
            "power",
            power,
            studies,
        ),  # fmt: skip
    ]


def merge_parents(studies: int, resamples: int, seed: int, n: int = 336) -> list[Row]:
    rng = np.random.default_rng(seed)
    tie_short = tie_beats = legacy_short = 0
    lfc_beats = equal_short = power = 0
    for study in range(studies):
        p = difficulty(rng, n)
        # tie on complementary questions (the worst case): a ~ p, b ~ 1 - p, m ~ 1/2
        a, b, m = answers(rng, p), answers(rng, 1 - p), answers(rng, np.full(n, 0.5))
        test = versus_both_parents(m, a, b, resamples=resamples, seed=study)
        correct_family([test], family="merge", correction="holm")
        tie_short += test["significant"] and test["direction"] == "down"
        tie_beats += test["significant"] and test["direction"] == "up"
        low, high = legacy_gap_to_max(m, a, b, resamples, study)
        legacy_short += high < 0
        # least favourable for "beats both": the merge equals one parent, the other far worse
        a2, m2, b2 = answers(rng, p), answers(rng, p), answers(rng, p, -0.25)
        test = versus_both_parents(m2, a2, b2, resamples=resamples, seed=study)
        correct_family([test], family="merge", correction="holm")
        lfc_beats += test["significant"] and test["direction"] == "up"
        # least favourable for "falls short": all three equal
        m3, a3, b3 = answers(rng, p), answers(rng, p), answers(rng, p)
        test = versus_both_parents(m3, a3, b3, resamples=resamples, seed=study)
        correct_family([test], family="merge", correction="holm")
        equal_short += test["significant"] and test["direction"] == "down"
        # alternative: the merge +8 pp over two equal parents
        m4 = answers(rng, p, 0.08)
        test = versus_both_parents(m4, a3, b3, resamples=resamples, seed=study)
        correct_family([test], family="merge", correction="holm")
        power += test["significant"] and test["direction"] == "up"
    return [
        false_rate_row(
            "merge falls short",
            f"tie on complementary questions, n = {n}",
            tie_short,
            studies,
            ALPHA / 2,
        ),  # fmt: skip
        info_row(
            "merge falls short (max bootstrap, before issue 23)",
            f"tie on complementary questions, n = {n}",
            "false verdict",
            legacy_short,
            studies,
            nominal=ALPHA / 2,
            reference=True,
        ),  # fmt: skip
        false_rate_row(
            "merge beats both parents",
            f"tie on complementary questions, n = {n}",
            tie_beats,
            studies,
            ALPHA / 2,
        ),  # fmt: skip
        false_rate_row(
            "merge beats both parents",
            f"equal to one parent, the other -25 pp, n = {n}",
            lfc_beats,
            studies,
            ALPHA / 2,
        ),  # fmt: skip
        false_rate_row(
            "merge falls short",
            f"merge and parents equal, n = {n}",
            equal_short,
            studies,
            ALPHA / 2,
        ),  # fmt: skip
        info_row(
            "merge beats both parents",
            f"+8 pp over two equal parents, n = {n}",
            "power",
            power,
            studies,
        ),  # fmt: skip
    ]


def merge_expected(
    studies: int, resamples: int, seed: int, n: int = 336, merges: int = 5
) -> list[Row]:
    rng = np.random.default_rng(seed)
    single = family = power = 0
    for study in range(studies):
        p = difficulty(rng, n)
        verdicts = []
        for j in range(merges):
            # every null true at once: parents equal, the merge equal to both (so to E)
            a, b, m = answers(rng, p), answers(rng, p), answers(rng, p)
            verdicts.append(paired_bootstrap(m, (a + b) / 2, resamples=resamples, seed=study * 7 + j))  # fmt: skip
            verdicts.append(versus_both_parents(m, a, b, resamples=resamples, seed=study * 7 + j))  # fmt: skip
        first = dict(verdicts[0])
        correct_family([first], family="one", correction="holm")
        single += first["significant"]
        correct_family(verdicts, family="merges", correction="holm")
        family += any(v["significant"] for v in verdicts)
        a, b = answers(rng, p), answers(rng, p, -0.10)
        m = answers(rng, p, -0.05 + 0.06)
        test = paired_bootstrap(m, (a + b) / 2, resamples=resamples, seed=study)
        correct_family([test], family="one", correction="holm")
        power += test["significant"] and test["difference"] > 0
    return [
        false_rate_row(
            "merge vs E", f"merge at its parents' mean, n = {n}", single, studies, ALPHA
        ),  # fmt: skip
        false_rate_row(
            "merge verdicts (family, Holm)",
            f"{merges} merges equal to both (equal) parents: 2 verdicts each, n = {n}",
            family,
            studies,
            ALPHA,
        ),  # fmt: skip
        info_row("merge vs E", f"+6 pp over E, n = {n}", "power", power, studies),
    ]


def curve(studies: int, resamples: int, seed: int, n: int = 336) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for k in (1, 3, 7):
        hits = legacy = lfc = legacy_lfc = power = 0
        for study in range(studies):
            p = difficulty(rng, n)
            low_end, high_end = answers(rng, p), answers(rng, p)
            inner = [answers(rng, p) for _ in range(k)]
            test = inner_point_test(inner, low_end, high_end, resamples=resamples, seed=study)
            correct_family([test], family="curve", correction="holm")
            hits += test["significant"]
            # before: the best inner point's unadjusted gap to the better end (max re-chosen)
            best = max(range(k), key=lambda i: inner[i].mean())
            legacy += legacy_gap_to_max(inner[best], low_end, high_end, resamples, study)[0] > 0
            # least favourable: the inner points equal the high end, the low end -25 pp
            worse = answers(rng, p, -0.25)
            same = [answers(rng, p) for _ in range(k)]
            test = inner_point_test(same, worse, high_end, resamples=resamples, seed=study)
            correct_family([test], family="curve", correction="holm")
            lfc += test["significant"]
            best = max(range(k), key=lambda i: same[i].mean())
            legacy_lfc += legacy_gap_to_max(same[best], worse, high_end, resamples, study)[0] > 0
            if k == 3:
                inner[1] = answers(rng, p, 0.08)
                test = inner_point_test(inner, low_end, high_end, resamples=resamples, seed=study)
                correct_family([test], family="curve", correction="holm")
                power += test["significant"]
        case = f"{k} inner point{'s' if k > 1 else ''} equal to both ends, n = {n}"
        rows.append(false_rate_row("curve: an inner point beats both ends", case, hits, studies, ALPHA / 2))  # fmt: skip
        rows.append(info_row("curve (best point, unadjusted, before issue 23)", case,
                             "false verdict", legacy, studies, nominal=ALPHA / 2, reference=True))  # fmt: skip
        case = f"{k} inner equal to the high end, low end -25 pp, n = {n}"
        rows.append(false_rate_row("curve: an inner point beats both ends", case, lfc, studies,
                                   ALPHA / 2))  # fmt: skip
        rows.append(info_row("curve (best point, unadjusted, before issue 23)", case,
                             "false verdict", legacy_lfc, studies, nominal=ALPHA / 2,
                             reference=True))  # fmt: skip
        if k == 3:
            rows.append(info_row("curve: an inner point beats both ends",
                                 f"one of 3 inner points +8 pp over both ends, n = {n}", "power",
                                 power, studies))  # fmt: skip
    return rows


def perplexity_docs(rng: np.random.Generator, n: int, better: float = 0.0):
    mu = rng.lognormal(1.0, 0.5, size=n)
    tokens = rng.integers(50, 501, size=n).astype(float)
    nll_a = tokens * mu * np.exp(rng.normal(0, 0.03, size=n))
    nll_b = tokens * mu * (1 - better) * np.exp(rng.normal(0, 0.03, size=n))
    return nll_a, tokens, nll_b, tokens


def perplexity(studies: int, resamples: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for n in (8, 30):
        false = covered = legacy_false = power = legacy_power = 0
        approximate = False
        for study in range(studies):
            docs = perplexity_docs(rng, n)
            test = paired_ratio_bootstrap(*docs, resamples=resamples, seed=study)
            approximate = bool(test["approximate"])
            correct_family([test], family="ppl", correction="holm")
            false += test["significant"]
            low, high = test["ci95"]
            covered += low <= 1.0 <= high
            legacy_false += legacy_overlap_apart(*docs, resamples, study)
            alt = perplexity_docs(rng, n, better=0.05)
            test = paired_ratio_bootstrap(*alt, resamples=resamples, seed=study)
            correct_family([test], family="ppl", correction="holm")
            power += test["significant"] and test["log_ratio"] > 0  # ppl_a / ppl_b > 1
            legacy_power += legacy_overlap_apart(*alt, resamples, study)
        case = f"two equal models, {n} documents"
        rows += [
            false_rate_row("perplexity ratio (paired)", case, false, studies, ALPHA),
            coverage_row("perplexity ratio (paired)", case, covered, studies, approximate),
            info_row(
                "perplexity: intervals apart (before issue 23)",
                case,
                "false verdict",
                legacy_false,
                studies,
                nominal=ALPHA,
                reference=True,
            ),  # fmt: skip
            info_row(
                "perplexity ratio (paired)",
                f"B 5% lower NLL on every document, {n} documents",
                "power",
                power,
                studies,
            ),  # fmt: skip
            info_row(
                "perplexity: intervals apart (before issue 23)",
                f"B 5% lower NLL on every document, {n} documents",
                "power",
                legacy_power,
                studies,
                reference=True,
            ),  # fmt: skip
        ]
    return rows


def judge_verdicts(rng: np.random.Generator, scripts: int, models: int = 4, samples: int = 3):
    names = [f"m{i}" for i in range(models)]
    comparisons, clusters = [], []
    for script in range(scripts):
        quality = rng.normal(0.0, 1.0, size=models)
        for i, j in itertools.combinations(range(models), 2):
            chance = 1 / (1 + math.exp(-(quality[i] - quality[j])))
            for _ in range(samples * 2):  # k samples x both orders
                winner = "a" if rng.random() < chance else "b"
                comparisons.append((names[i], names[j], winner))
                clusters.append(script)
    return names, comparisons, clusters


def bradley_terry(studies: int, resamples: int, seed: int) -> list[Row]:
    rng = np.random.default_rng(seed)
    rows = []
    for scripts in (20, 40):
        covered = legacy = 0
        approximate = False
        for study in range(studies):
            names, comparisons, clusters = judge_verdicts(rng, scripts)
            rated = bradley_terry_ratings(comparisons, names, resamples=resamples, seed=study,
                                          clusters=clusters)  # fmt: skip
            row = next(r for r in rated if r["model"] == "m0")
            approximate = bool(row.get("approximate"))
            covered += row["ci_low"] <= 1000 <= row["ci_high"]
            if scripts == 20:  # the case, for reference
                flat = bradley_terry_ratings(comparisons, names, resamples=resamples, seed=study)
                row = next(r for r in flat if r["model"] == "m0")
                legacy += row["ci_low"] <= 1000 <= row["ci_high"]
        case = f"4 equal models, {scripts} scripts x 6 pairs x 3 samples x 2 orders"
        rows.append(coverage_row("Bradley-Terry (cluster bootstrap)", case, covered, studies, approximate))  # fmt: skip
        if scripts == 20:
            rows.append(info_row("Bradley-Terry (verdicts resampled one by one, before issue 23)",
                                 case, "coverage", legacy, studies, nominal=0.95, reference=True))  # fmt: skip
    return rows


CASES: dict[str, Callable[..., list[Row]]] = {
    "vs_baseline": vs_baseline,
    "strategies": strategies,
    "merge_parents": merge_parents,
    "merge_expected": merge_expected,
    "curve": curve,
    "perplexity": perplexity,
    "bradley_terry": bradley_terry,
}


def table(rows: list[Row]) -> str:
    header = ["verdict", "case", "measure", "rate", "MC s.e.", "bar", "passes"]
    lines = [header]
    for row in rows:
        lines.append([row.verdict, row.case, row.measure, f"{row.rate:.1%}", f"{row.mc_error:.1%}",
                      row.bar or ("reference" if row.reference else "-"),
                      "-" if row.passes is None else ("yes" if row.passes else "NO")])  # fmt: skip
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    out = [
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    ]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def markdown(rows: list[Row]) -> str:
    lines = [
        "| verdict | case | measure | rate | MC s.e. | bar | passes |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        passes = "-" if row.passes is None else ("yes" if row.passes else "**no**")
        bar = row.bar or ("reference (before issue 23)" if row.reference else "-")
        lines.append(f"| {row.verdict} | {row.case} | {row.measure} | {row.rate:.1%} | "
                     f"{row.mc_error:.1%} | {bar} | {passes} |")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--studies", type=int, default=500, help="simulated studies per case")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--bt-resamples", type=int, default=1000,
                        help="bootstrap resamples of a Bradley-Terry fit (the slow case)")  # fmt: skip
    parser.add_argument("--seed", type=int, default=23)
    parser.add_argument("--only", nargs="*", choices=list(CASES))
    parser.add_argument("--check", action="store_true",
                        help="tiny sizes, results in a scratch folder: plumbing only")  # fmt: skip
    parser.add_argument("--force", action="store_true", help="accepted for run_all.py; ignored")
    args = parser.parse_args(argv)
    if args.check:
        args.studies, args.resamples, args.bt_resamples = 8, 50, 10
    rows: list[Row] = []
    started = time.time()
    for name, case in CASES.items():
        if args.only and name not in args.only:
            continue
        resamples = args.bt_resamples if name == "bradley_terry" else args.resamples
        rows += case(args.studies, resamples, args.seed)
        print(f"{name}: done ({time.time() - started:.0f} s)", file=sys.stderr, flush=True)
    print(table(rows))
    folder = Path(tempfile.mkdtemp(prefix="calibration-check-")) if args.check else results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "timing": False,  # error rates, not timings: benchmarks/summary.py lists it apart
        "benchmark": "calibration",
        "date": time.strftime("%Y-%m-%d", time.gmtime()),
        "command": portable_command(["python", *sys.argv]),
        "studies": args.studies,
        "resamples": args.resamples,
        "bt_resamples": args.bt_resamples,
        "seed": args.seed,
        "check": args.check,
        "rows": [{**asdict(r), "mc_error": r.mc_error} for r in rows],
        "markdown": markdown(rows),
    }
    path = folder / "calibration.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(f"written: {path}", file=sys.stderr)
    failed = [r for r in rows if r.passes is False]
    return 1 if failed and not args.check else 0


if __name__ == "__main__":
    raise SystemExit(main())
