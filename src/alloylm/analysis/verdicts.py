"""Every verdict a study prints: its test, its family, its multiplicity correction and its words.

The report, the terminal tables, the CSV files and `benchmarks/calibration.py` all read verdicts
from here, so a verdict means the same thing wherever it appears (docs/study.md explains each).

Tests (pure functions of per-item outcomes; bootstrap p-values from `alloylm.evals.stats`):

- **vs baseline, strategy vs strategy, merge vs E**: the paired bootstrap of a difference of
  means over the same questions (Koehn 2004); two-sided p = twice the smaller tail.
- **merge vs its parents**: an intersection-union test (Berger 1982, Technometrics 24:295).
  "Beats both parents" needs *both* paired differences m - a and m - b to be above 0 at the
  one-sided 2.5% level (p = the larger of the two one-sided p-values); "falls short" needs *one*
  of them below 0, Bonferroni over the two (p = 2 x the smaller one-sided p). The interval of a
  maximum of two noisy parents, re-chosen per resample, is biased toward "falls short" and
  unreliable when the parents tie (Andrews 2000, Econometrica 68:399): it is not used.
- **the curve's inner points**: each inner point against both ends by the same intersection-union
  test, Bonferroni over the k inner points (p = k x the smallest one).
- **perplexity**: a paired document bootstrap of the perplexity ratio (`paired_ratio_bootstrap`),
  never an overlap of two per-model intervals (Schenker & Gentleman 2001).

Families and correction: every verdict belongs to one family (all models vs the baseline on one
benchmark; all merge verdicts on one benchmark; all curves on one benchmark; all pairs of
strategies of one lineage and merge state on one benchmark). Within a family the p-values are
adjusted by Holm's step-down (Holm 1979), which holds the chance of any false verdict in the
family at 5%; `correction="none"` reports the unadjusted per-verdict tests instead. A verdict is
"significant" when its adjusted p is below ALPHA; its words say so, and name its correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from alloylm.evals.stats import holm_adjust, paired_bootstrap

ALPHA = 0.05
CORRECTIONS = ("holm", "none")
FAMILIES = {
    "vs_baseline": "every model against the baseline",
    "merge": "every merge verdict: each merge against its parents' mean and against both parents",
    "curve": "every interpolation curve: does an inner point beat both ends",
    "strategies": "every pair of strategies of one lineage, merged or not",
    "confirmed": "the choices made on the selection questions, each tested once on the "
    "confirmation questions",
}


# --- tests -----------------------------------------------------------------------------------------


def versus_both_parents(
    merged: Sequence[float],
    parent_a: Sequence[float],
    parent_b: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Intersection-union test of a merge against both parents (Berger 1982).

    Returns both paired differences (`vs_a`, `vs_b`, each a `paired_bootstrap`), the p-value of
    "beats both" (the larger one-sided p), of "falls short" (Bonferroni: 2 x the smaller one-sided
    p the other way), and the verdict's two-sided p = min(1, 2 min of the two): p < 0.05 exactly
    when both 95% lower bounds are above 0, or one 97.5% upper bound is below 0.
    """
    vs_a = paired_bootstrap(merged, parent_a, resamples=resamples, seed=seed)
    vs_b = paired_bootstrap(merged, parent_b, resamples=resamples, seed=seed)
    p_beats = max(vs_a["p_greater"], vs_b["p_greater"])
    p_short = min(1.0, 2 * min(vs_a["p_less"], vs_b["p_less"]))
    direction = "up" if p_beats <= p_short else "down"
    return {
        "test": "intersection-union (Berger 1982); Bonferroni over 2 for 'falls short'",
        "vs_a": vs_a,
        "vs_b": vs_b,
        "p_beats_both": p_beats,
        "p_falls_short": p_short,
        "p": min(1.0, 2 * min(p_beats, p_short)),
        "direction": direction,
        "n": vs_a["n"],
    }


def inner_point_test(
    inner: Sequence[Sequence[float]],
    low_end: Sequence[float],
    high_end: Sequence[float],
    *,
    resamples: int = 1000,
    seed: int = 0,
) -> dict[str, Any]:
    """Does any of k inner points of a curve beat both ends? Each inner point against both ends by
    the intersection-union test (one-sided p = the larger of its two), Bonferroni over the k inner
    points: p = min(1, 2 k min_i p_i) (two-sided scale, as every verdict here). Picking the best
    inner point and reporting its unadjusted interval, as before, is a false verdict 6% of the time
    with 3 inner points and 14.5% with 7 (issue 23)."""
    k = len(inner)
    if k == 0:
        raise ValueError("the curve has no inner point")
    rows = []
    for values in inner:
        vs_low = paired_bootstrap(values, low_end, resamples=resamples, seed=seed)
        vs_high = paired_bootstrap(values, high_end, resamples=resamples, seed=seed)
        rows.append(
            {
                "vs_low_end": vs_low,
                "vs_high_end": vs_high,
                "p_beats_both": max(vs_low["p_greater"], vs_high["p_greater"]),
                "gap_to_better_end": min(vs_low["difference"], vs_high["difference"]),
            }
        )
    best = min(range(k), key=lambda i: (rows[i]["p_beats_both"], -rows[i]["gap_to_better_end"]))
    return {
        "test": f"intersection-union against both ends, Bonferroni over {k} inner points",
        "inner": rows,
        "best": best,
        "p": min(1.0, 2 * k * rows[best]["p_beats_both"]),
        "direction": "up",
        "k": k,
    }


# --- families --------------------------------------------------------------------------------------


def correct_family(
    verdicts: Sequence[dict[str, Any]], *, family: str, correction: str = "holm"
) -> None:
    """Adjust the `p` of every verdict of one family in place: p_adjusted, significant, family,
    family_size, correction (what was applied: 'Holm over m' or 'none')."""
    if correction not in CORRECTIONS:
        raise ValueError(f"unknown correction {correction!r}; expected one of {CORRECTIONS}")
    raw = [float(v["p"]) for v in verdicts]
    adjusted = holm_adjust(raw) if correction == "holm" else raw
    for verdict, p_adjusted in zip(verdicts, adjusted, strict=True):
        verdict["p_adjusted"] = p_adjusted
        verdict["significant"] = p_adjusted < ALPHA
        verdict["family"] = family
        verdict["family_size"] = len(verdicts)
        verdict["correction"] = (
            f"Holm over {len(verdicts)}" if correction == "holm" and len(verdicts) > 1 else "none"
        )


def family_sentence(family: str, kind: str, size: int, correction: str, significant: int) -> str:
    """One sentence per family for the report and the terminal."""
    what = FAMILIES.get(kind, kind)
    if correction == "holm" and size > 1:
        how = (
            f"Holm's step-down correction over its {size} verdicts keeps the chance of any "
            f"false verdict in this family at {ALPHA:.0%}"
        )
    elif size > 1:
        how = (
            f"no multiplicity correction (turned off): each of its {size} verdicts is tested "
            f"at {ALPHA:.0%} alone, so the chance of some false verdict is higher"
        )
    else:
        how = f"one verdict, tested at {ALPHA:.0%}"
    return f"Family '{family}' ({what}): {how}; {significant} of {size} significant."


# --- words -----------------------------------------------------------------------------------------


def format_pp(value: float, ci95: Sequence[float]) -> str:
    """'+2.1 pp [0.4, 3.9]' for a difference of two accuracies (fractions)."""
    low, high = ci95
    return f"{value * 100:+.1f} pp [{low * 100:.1f}, {high * 100:.1f}]"


def _tag(verdict: dict[str, Any]) -> str:
    correction = verdict.get("correction") or "none"
    return "" if correction == "none" else f" ({correction})"


def words_vs_baseline(verdict: dict[str, Any], baseline: str) -> str:
    amount = format_pp(verdict["difference"], verdict["ci95"])
    if verdict.get("significant") and verdict["difference"] > 0:
        return f"better than {baseline} by {amount}{_tag(verdict)}"
    if verdict.get("significant") and verdict["difference"] < 0:
        return f"worse than {baseline}: {amount}{_tag(verdict)}"
    return f"no evidence of a difference from {baseline}: {amount}{_tag(verdict)}"


def words_vs_expected(verdict: dict[str, Any]) -> str:
    amount = format_pp(verdict["difference"], verdict["ci95"])
    if verdict.get("significant") and verdict["difference"] > 0:
        return f"beats its parents' mean by {amount}{_tag(verdict)}"
    if verdict.get("significant") and verdict["difference"] < 0:
        return f"falls below its parents' mean: {amount}{_tag(verdict)}"
    return f"no evidence it differs from its parents' mean: {amount}{_tag(verdict)}"


def words_vs_parents(verdict: dict[str, Any], names: Sequence[str] = ("P1", "P2")) -> str:
    """Both paired differences, and 'beats both parents' / 'falls short of X' / 'no evidence'."""
    first, second = names
    both = (
        f"vs {first} {format_pp(verdict['vs_a']['difference'], verdict['vs_a']['ci95'])}, "
        f"vs {second} {format_pp(verdict['vs_b']['difference'], verdict['vs_b']['ci95'])}"
    )
    if verdict.get("significant") and verdict["direction"] == "up":
        return f"beats both parents: {both}{_tag(verdict)}"
    if verdict.get("significant"):
        short = first if verdict["vs_a"]["p_less"] <= verdict["vs_b"]["p_less"] else second
        return f"falls short of {short}: {both}{_tag(verdict)}"
    return f"no evidence of synergy: {both}{_tag(verdict)}"


def words_perplexity(verdict: dict[str, Any], baseline: str) -> str:
    """Lower is better: 'lower than base: ratio x0.95 [0.91, 0.99]'."""
    low, high = verdict["ci95"]
    if low is None:
        return f"no interval: {verdict.get('ci_note') or 'too few documents'}"
    amount = f"ratio x{verdict['ratio']:.3f} [{low:.3f}, {high:.3f}]"
    if verdict.get("approximate"):
        amount += " (approximate: few documents)"
    if verdict.get("significant") and verdict["log_ratio"] < 0:
        return f"lower than {baseline}'s: {amount}{_tag(verdict)}"
    if verdict.get("significant") and verdict["log_ratio"] > 0:
        return f"higher than {baseline}'s: {amount}{_tag(verdict)}"
    return f"no evidence of a difference from {baseline}'s: {amount}{_tag(verdict)}"


def words_curve(verdict: dict[str, Any], ts: Sequence[float]) -> str:
    row = verdict["inner"][verdict["best"]]
    t = ts[verdict["best"]]
    gap = row["gap_to_better_end"]
    if verdict.get("significant"):
        return (
            f"t = {t:g} beats both ends (by {gap * 100:+.1f} pp over the better end; "
            f"{verdict['test']}){_tag(verdict)}"
        )
    return (
        f"no evidence that any inner point beats both ends: the best, t = {t:g}, is "
        f"{gap * 100:+.1f} pp from the better end ({verdict['test']}){_tag(verdict)}"
    )


def words_pair(verdict: dict[str, Any], first: str, second: str) -> str:
    amount = format_pp(verdict["difference"], verdict["ci95"])
    if verdict.get("significant"):
        winner, loser = (first, second) if verdict["difference"] > 0 else (second, first)
        return f"{winner} better than {loser}: {first} - {second} = {amount}{_tag(verdict)}"
    return f"not separated: {first} - {second} = {amount}{_tag(verdict)}"


# --- strategy against strategy ---------------------------------------------------------------------


def strategy_matrix(
    answers: dict[str, dict[str, bool]],
    *,
    resamples: int = 1000,
    seed: int = 0,
    family: str = "strategies",
    correction: str = "holm",
) -> dict[str, Any]:
    """Paired differences between every pair of strategies (ids -> {question id: correct}) over
    the questions all answered, Holm over the pairs; and the best-strategy verdict: the best
    (highest score) is 'best' only when its difference to every other survives the correction
    (an intersection-union claim), else the strategies are 'not separated'."""
    names = list(answers)
    shared = [k for k in answers[names[0]] if all(k in answers[n] for n in names)] if names else []
    scores = {n: sum(answers[n][k] for k in shared) / len(shared) for n in names} if shared else {}
    pairs = []
    for i, first in enumerate(names):
        for second in names[i + 1 :]:
            test = paired_bootstrap(
                [float(answers[first][k]) for k in shared],
                [float(answers[second][k]) for k in shared],
                resamples=resamples,
                seed=seed,
            )
            pairs.append({"a": first, "b": second, **test})
    if len(names) < 2 or not shared:
        return {"strategies": names, "n": len(shared), "pairs": [], "best": None,
                "verdict": "fewer than two strategies scored on the same questions"}  # fmt: skip
    correct_family(pairs, family=family, correction=correction)
    for pair in pairs:
        pair["verdict"] = words_pair(pair, pair["a"], pair["b"])
    best = max(names, key=lambda n: scores[n])
    against = [p for p in pairs if best in (p["a"], p["b"])]
    separated = all(p["significant"] and (p["difference"] > 0) == (p["a"] == best) for p in against)
    tag = _tag(pairs[0])
    verdict = (
        f"{best} is best: better than each of the {len(names) - 1} others{tag}"
        if separated
        else f"not separated: the best score, {best}'s, is not better than every other{tag}"
    )
    return {
        "strategies": names,
        "scores": scores,
        "n": len(shared),
        "pairs": pairs,
        "best": best if separated else None,
        "leader": best,
        "verdict": verdict,
    }
