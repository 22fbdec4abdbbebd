"""An LLM judge for transcripts: the study's single-answer grading (Table 3) and pairwise comparison.

The judge is a distillation teacher (distill/teachers.py: an OpenAI-compatible endpoint or a local
model) called through distillation's `TeacherClient`, so every call goes through the same SQLite
cache (distill/cache.py), retries and accounting: an unchanged rerun makes zero calls.

- single: each transcript is graded `samples` times (sample s uses its own seed; temperature > 0
  when samples > 1) on the criteria (default: the study's four, 1-10 each); `chat/ratings.table3`
  gives total, average, intelligence score and the spread over samples.
- pairwise: every pair of models that answered the same script is judged in both orders (A/B
  swapped), so position bias shows as inconsistent verdicts, which are counted. Verdicts, plus
  human votes from a JSONL file ({"a", "b", "winner": a|b|tie|both_bad}), become Bradley-Terry
  ratings with bootstrap intervals (`chat/ratings.bradley_terry_ratings`).

Replies that do not parse are asked again (a new attempt: new cache key, sampled), up to
`parse_retries` times, then counted as unparsable; a teacher error after its retries is counted
too. Nothing is dropped silently. Prompts are Jinja templates (chat/judge_prompts/*.j2), replaced
by a file of the same name in `prompts_dir`.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alloylm.atomic import atomic_write_json, atomic_write_text
from alloylm.chat.jsonreply import extract_json_object
from alloylm.chat.ratings import OUTCOMES, Comparison, bradley_terry_ratings, grade, table3
from alloylm.data.jsonl import iter_jsonl
from alloylm.errors import ConfigError, DataError
from alloylm.hashing import hash_text

BUILTIN_PROMPTS = Path(__file__).with_name("judge_prompts")
TEMPLATE_NAMES = ("rubric", "judge_single", "judge_pairwise")
_VERSION = re.compile(r"\{#\s*version:\s*(\w+)")

# The study's criteria (Table 3), as keys the judge answers with.
STUDY_CRITERIA: dict[str, tuple[str, str]] = {
    "depth_of_reasoning": (
        "Depth of reasoning",
        "does the assistant explain mechanisms and causes, connect ideas across scales and "
        "follow an argument through, rather than list facts?",
    ),
    "creativity": (
        "Creativity",
        "are the connections and the design original and non-obvious, yet plausible?",
    ),
    "clarity": (
        "Clarity",
        "is the answer well organised, precise and easy to follow, and does it do what each "
        "user turn asked (including valid JSON when JSON was asked for)?",
    ),
    "quantitative_predictions": (
        "Quantitative predictions",
        "does the assistant give concrete numbers with units (properties, sizes, estimates) and "
        "say how it arrived at them?",
    ),
}
MODES = ("single", "pairwise", "both")


@dataclass(frozen=True)
class JudgeSettings:
    mode: str = "single"
    samples: int = 3  # judge samples per transcript (single) or per order (pairwise)
    temperature: float = 0.7
    max_tokens: int = 512
    parse_retries: int = 2
    seed: int = 0
    criteria: tuple[str, ...] = tuple(STUDY_CRITERIA)
    criteria_descriptions: dict[str, str] = field(default_factory=dict)  # for criteria of your own
    resamples: int = 1000  # bootstrap resamples for the Bradley-Terry intervals
    prior: float = 0.5  # virtual wins each way per compared pair (keeps ratings finite)
    concurrency: int = 4

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ConfigError(
                f"unknown judge mode {self.mode!r}", key="mode", hint="single, pairwise or both"
            )
        if self.samples < 1:
            raise ConfigError("samples must be at least 1", key="samples")
        if self.samples > 1 and self.temperature <= 0:
            raise ConfigError(
                f"{self.samples} samples at temperature 0 would all be the same answer",
                key="temperature",
                hint="set a temperature > 0 (e.g. 0.7), or samples: 1",
            )
        if not self.criteria:
            raise ConfigError("no criteria", key="criteria")
        if not self.prior > 0:
            raise ConfigError(
                f"prior must be > 0, got {self.prior}",
                key="prior",
                hint="the virtual wins each way per compared pair keep ratings finite; the "
                "default is 0.5 (with 0 a model that never wins is rated at -infinity)",
            )
        if self.resamples < 0:
            raise ConfigError("resamples must be 0 or more", key="resamples")


# ---------------------------------------------------------------- templates
def load_judge_template(name: str, prompts_dir: str | Path | None = None) -> Any:
    """`name`.j2 from `prompts_dir` when it has one, else the built-in (a distill PromptTemplate:
    version `name:vN:<hash of the file>`, so an edit never reuses the old wording's answers)."""
    from alloylm.distill.prompts import PromptTemplate

    for folder in ([Path(prompts_dir)] if prompts_dir else []) + [BUILTIN_PROMPTS]:
        path = folder / f"{name}.j2"
        if path.is_file():
            source = path.read_text(encoding="utf-8")
            match = _VERSION.search(source)
            version = f"{name}:v{match.group(1) if match else '0'}:{hash_text(source)[:8]}"
            return PromptTemplate(name, version, source, path)
    raise ConfigError(
        f"no judge template {name!r}", key="prompts_dir", hint=f"built-ins: {BUILTIN_PROMPTS}"
    )


def criteria_table(settings: JudgeSettings) -> list[dict[str, str]]:
    rows = []
    for key in settings.criteria:
        label, description = STUDY_CRITERIA.get(key, (key.replace("_", " ").capitalize(), ""))
        rows.append(
            {
                "key": key,
                "label": label,
                "description": settings.criteria_descriptions.get(key, description),
            }
        )
    return rows


# ---------------------------------------------------------------- transcripts
@dataclass(frozen=True)
class TranscriptRef:
    label: str  # model name, unique within its script group
    script: str  # script name (+ hash): transcripts of one script are compared with each other
    messages: list[dict[str, str]]
    path: str
    lineage: str | None = None


def load_transcripts(paths: Sequence[str | Path]) -> list[TranscriptRef]:
    """Transcript JSON files (alloy converse / alloy chat), given as files or folders of them."""
    files: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            files += sorted(
                p for p in path.glob("*.json") if p.name not in ("summary.json", "alloy.json")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise DataError("transcript file or folder not found", file=str(path))
    refs: list[TranscriptRef] = []
    seen: Counter = Counter()
    for path in files:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise DataError(f"not a readable JSON transcript: {error}", file=str(path)) from None
        if isinstance(data, dict) and isinstance(data.get("models"), list):
            # `alloy chat` /save: one conversation answered by several models side by side;
            # its models are compared with each other
            entries = [(m, f"chat:{path.stem}") for m in data["models"] if isinstance(m, dict)]
        else:
            script = data.get("script") if isinstance(data, dict) else None
            group = (
                f"{script.get('name', '')}@{str(script.get('sha256', ''))[:12]}"
                if isinstance(script, dict)
                else str(script)
            )
            entries = [(data, group)]
        for entry, group in entries:
            messages = entry.get("messages") if isinstance(entry, dict) else None
            if not isinstance(messages, list) or not any(
                isinstance(m, dict) and m.get("role") == "assistant" for m in messages
            ):
                raise DataError(
                    "no conversation in this file (expected a 'messages' list with assistant turns)",
                    file=str(path),
                    hint="give transcripts written by `alloy converse` or `alloy chat` (/save)",
                )
            model = entry.get("model")
            name = (model.get("name") or model.get("source")) if isinstance(model, dict) else model
            name = str(name or path.stem)
            seen[(group, name)] += 1
            label = name if seen[(group, name)] == 1 else f"{name}-{seen[(group, name)]}"
            lineage = (
                (model.get("lineage") or model.get("model_hash"))
                if isinstance(model, dict)
                else None
            )
            refs.append(TranscriptRef(label, group, messages, str(path), lineage))
    if not refs:
        raise DataError("no transcripts found", file=", ".join(str(p) for p in paths))
    return refs


def conversation_text(messages: Sequence[dict[str, str]], assistant: str = "Assistant") -> str:
    """The conversation as the judge reads it (roles in brackets; no model names: blind)."""
    names = {"system": "System", "user": "User", "assistant": assistant}
    return "\n\n".join(
        f"[{names.get(m.get('role', ''), m.get('role', ''))}]\n{str(m.get('content', '')).strip()}"
        for m in messages
    )


# ---------------------------------------------------------------- parsing replies
def _normal_key(key: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", key.lower()).strip("_")


def parse_grades(
    text: str, criteria: Sequence[str], max_score: int = 10
) -> dict[str, float] | None:
    """{criterion: score} from a judge's reply, or None when a criterion is missing or off-scale.

    Keys may be written as labels ("Depth of reasoning"); scores as 8, 8.5, "8" or "8/10".
    """
    value, _ = extract_json_object(text)
    if value is None:
        return None
    if isinstance(value.get("scores"), dict):
        value = value["scores"]
    found = {_normal_key(k): v for k, v in value.items()}
    scores: dict[str, float] = {}
    for criterion in criteria:
        raw = found.get(_normal_key(criterion))
        if isinstance(raw, dict):
            raw = raw.get("score")
        if isinstance(raw, str):
            match = re.match(r"\s*(\d+(?:\.\d+)?)", raw)
            raw = float(match.group(1)) if match else None
        if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not 1 <= raw <= max_score:
            return None
        scores[criterion] = float(raw)
    return scores


_VERDICT_WORDS = {
    "a": "a",
    "b": "b",
    "tie": "tie",
    "both_bad": "both_bad",
    "c": "tie",
    "neither": "both_bad",
}


def parse_verdict(text: str) -> str | None:
    """'a', 'b', 'tie' or 'both_bad' from a pairwise reply (JSON, or MT-Bench's [[A]]), else None."""
    value, _ = extract_json_object(text)
    if value is not None and value.get("winner") is not None:
        return _VERDICT_WORDS.get(_normal_key(str(value["winner"])).removeprefix("assistant_"))
    match = re.search(r"\[\[(A|B|C|tie)\]\]", text)
    return _VERDICT_WORDS.get(match.group(1).lower()) if match else None


# ---------------------------------------------------------------- the judge
class Unparsable(Exception):
    pass


@dataclass
class Outcomes:
    """Calls that ended without a usable answer, by reason."""

    failures: Counter = field(default_factory=Counter)
    parse_retries: int = 0


class Judge:
    """Grades and comparisons through one teacher, its cache and its retry rules."""

    def __init__(
        self,
        teacher: Any,
        cache: Any,
        settings: JudgeSettings,
        *,
        prompts_dir: str | Path | None = None,
        max_retries: int = 5,
        backoff_s: float = 1.0,
        timeout_s: float = 120.0,
    ) -> None:
        from alloylm.distill.config import TeacherConfig
        from alloylm.distill.engine import Tally, TeacherClient

        self.settings = settings
        self.templates = {name: load_judge_template(name, prompts_dir) for name in TEMPLATE_NAMES}
        self.criteria = criteria_table(settings)
        self.rubric = self.templates["rubric"].render(criteria=self.criteria)[0]["content"]
        config = TeacherConfig(
            type="local",  # only the call settings below are read by the client
            model=getattr(teacher, "identity", "judge"),
            max_tokens=settings.max_tokens,
            temperature=settings.temperature,
            max_retries=max_retries,
            backoff_s=backoff_s,
            timeout_s=timeout_s,
        )
        self.tally = Tally()
        self.identity = teacher.identity
        # One client per sample: the client's seed is part of every cache key, so sample s is
        # its own cached call (seed + 1000 s leaves room for parse retries, which add 1 each).
        self._clients = [
            TeacherClient(
                teacher, config, cache, self.tally, None, self.templates, settings.seed + 1000 * s
            )
            for s in range(settings.samples)
        ]
        self.outcomes = Outcomes()

    def _ask(
        self, template: str, variables: dict[str, Any], sample: int, parse: Callable[[str], Any]
    ) -> Any:
        """The parsed answer, or None after the retries (counted by reason)."""
        from alloylm.distill.teachers import TeacherError

        client = self._clients[sample]
        for attempt in range(self.settings.parse_retries + 1):
            try:
                text = client.ask(template, variables, attempt)
            except TeacherError as error:
                with self.tally.lock:
                    self.outcomes.failures[f"teacher_{error.reason}"] += 1
                return None
            parsed = parse(text)
            if parsed is not None:
                return parsed
            if attempt < self.settings.parse_retries:
                with self.tally.lock:
                    self.outcomes.parse_retries += 1
        with self.tally.lock:
            self.outcomes.failures[f"unparsable_{template}"] += 1
        return None

    def grade(self, transcript: TranscriptRef, sample: int) -> dict[str, float] | None:
        variables = {
            "rubric": self.rubric,
            "criteria": self.criteria,
            "conversation": conversation_text(transcript.messages),
        }
        return self._ask(
            "judge_single",
            variables,
            sample,
            lambda text: parse_grades(text, self.settings.criteria),
        )

    def compare(self, first: TranscriptRef, second: TranscriptRef, sample: int) -> str | None:
        """Verdict with `first` shown as A: 'a', 'b', 'tie' or 'both_bad'."""
        variables = {
            "rubric": self.rubric,
            "criteria": self.criteria,
            "conversation_a": conversation_text(first.messages, "Assistant A"),
            "conversation_b": conversation_text(second.messages, "Assistant B"),
        }
        return self._ask("judge_pairwise", variables, sample, parse_verdict)


# ---------------------------------------------------------------- votes
def vote_clusters(path: str | Path) -> list[str]:
    """The cluster of each vote of `load_votes(path)`, in its order: the record's
    "conversation", else its "vote" id (one vote on several columns gives several records), else
    its line. Votes of one conversation share its answers, so they are resampled together."""
    keys = []
    for number, record in iter_jsonl(Path(path), objects=True):
        for key in ("conversation", "vote"):
            if isinstance(record.get(key), (str, int)):
                keys.append(f"{key}:{record[key]}")
                break
        else:
            keys.append(f"line:{number}")
    return keys


def load_votes(path: str | Path) -> list[Comparison]:
    """Human votes, one JSON object a line: {"a": model, "b": model, "winner": a|b|tie|both_bad}."""
    path = Path(path)
    if not path.is_file():
        raise DataError("votes file not found", file=str(path))
    votes: list[Comparison] = []
    for number, record in iter_jsonl(path, objects=True):
        if not all(isinstance(record.get(k), str) for k in ("a", "b", "winner")):
            raise DataError(
                'expected {"a": model, "b": model, "winner": ...}', file=f"{path}:{number}"
            )
        winner = record["winner"].lower().replace(" ", "_")
        if winner not in OUTCOMES:
            raise DataError(
                f"winner {record['winner']!r} is not one of {', '.join(OUTCOMES)}",
                file=f"{path}:{number}",
            )
        votes.append((record["a"], record["b"], winner))
    return votes


# ---------------------------------------------------------------- a whole run
def _same_winner(first_order: str, second_order: str) -> bool:
    """The two orders agree: A-then-B's winner is B-then-A's winner (ties agree with ties)."""
    swapped = {"a": "b", "b": "a"}.get(second_order, second_order)
    return first_order == swapped


def run_judge(
    transcripts: Sequence[TranscriptRef],
    judge: Judge,
    out_dir: Path,
    *,
    votes: Sequence[Comparison] = (),
    vote_clusters: Sequence[str] | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Grade and/or compare; write judge.json and judge.md into `out_dir`; return the results."""
    settings = judge.settings
    started = time.monotonic()
    out_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "alloylm_judge": 1,
        "judge": judge.identity,
        "mode": settings.mode,
        "settings": {
            "samples": settings.samples,
            "temperature": settings.temperature,
            "max_tokens": settings.max_tokens,
            "parse_retries": settings.parse_retries,
            "seed": settings.seed,
            "criteria": list(settings.criteria),
            # every setting that changes a number of judge.json (issue 23)
            "resamples": settings.resamples,
            "prior": settings.prior,
            "confidence": 0.95,
            "interval": "cluster bootstrap: scripts for the judge's verdicts, conversations "
            "(else votes) for human votes; conditional on the transcripts",
        },
        "templates": {name: t.version for name, t in judge.templates.items()},
        "transcripts": [
            {"model": t.label, "script": t.script, "path": t.path, "lineage": t.lineage}
            for t in transcripts
        ],
    }
    with ThreadPoolExecutor(max_workers=max(1, settings.concurrency)) as pool:
        if settings.mode in ("single", "both"):
            jobs = [(t, s) for t in transcripts for s in range(settings.samples)]
            answers = list(pool.map(lambda job: judge.grade(*job), jobs))
            results["single"] = _single_results(transcripts, jobs, answers, settings)
            log(f"graded {len(transcripts)} transcripts x {settings.samples} samples")
        if settings.mode in ("pairwise", "both") or votes:
            groups: dict[str, list[TranscriptRef]] = {}
            for t in transcripts:
                groups.setdefault(t.script, []).append(t)
            pairs = (
                [pair for group in groups.values() for pair in itertools.combinations(group, 2)]
                if settings.mode in ("pairwise", "both")
                else []
            )
            jobs2 = [(x, y, s) for x, y in pairs for s in range(settings.samples)]
            forward = list(pool.map(lambda job: judge.compare(job[0], job[1], job[2]), jobs2))
            backward = list(pool.map(lambda job: judge.compare(job[1], job[0], job[2]), jobs2))
            results["pairwise"] = _pairwise_results(
                jobs2, forward, backward, votes, settings, vote_clusters
            )
            log(f"compared {len(pairs)} pairs x {settings.samples} samples, both orders")
    results["calls"] = {
        "made": judge.tally.calls_made,
        "cached": judge.tally.cache_hits,
        "prompt_tokens": judge.tally.prompt_tokens,
        "completion_tokens": judge.tally.completion_tokens,
        "transport_retries": dict(judge.tally.retries),
        "parse_retries": judge.outcomes.parse_retries,
        "failed": dict(judge.outcomes.failures),
    }
    results["seconds"] = round(time.monotonic() - started, 3)
    atomic_write_json(out_dir / "judge.json", results)
    atomic_write_text(out_dir / "judge.md", judge_markdown(results))
    log(f"judge: {judge.tally.calls_made} calls, {judge.tally.cache_hits} cached")
    return results


def _single_results(
    transcripts: Sequence[TranscriptRef],
    jobs: Sequence[tuple[TranscriptRef, int]],
    answers: Sequence[dict[str, float] | None],
    settings: JudgeSettings,
) -> dict[str, Any]:
    per: dict[str, list[dict[str, float]]] = {t.label + "\x00" + t.script: [] for t in transcripts}
    raw = []
    for (t, sample), answer in zip(jobs, answers, strict=True):
        raw.append({"model": t.label, "script": t.script, "sample": sample, "scores": answer})
        if answer is not None:
            per[t.label + "\x00" + t.script].append(answer)
    tables: dict[str, list[dict[str, Any]]] = {}
    for script in dict.fromkeys(t.script for t in transcripts):
        grades = [
            grade(t.label, per[t.label + "\x00" + script], settings.criteria)
            for t in transcripts
            if t.script == script
        ]
        tables[script] = table3(grades)
    return {"table3": tables, "samples": raw, "unparsed": sum(a is None for a in answers)}


def _pairwise_results(
    jobs: Sequence[tuple[TranscriptRef, TranscriptRef, int]],
    forward: Sequence[str | None],
    backward: Sequence[str | None],
    votes: Sequence[Comparison],
    settings: JudgeSettings,
    vote_clusters: Sequence[str] | None = None,
) -> dict[str, Any]:
    verdicts = []
    comparisons: list[Comparison] = []
    scripts: list[str] = []  # the cluster of each comparison: its script
    inconsistent = 0
    judged_both = 0
    for (x, y, sample), first, second in zip(jobs, forward, backward, strict=True):
        consistent = None
        if first is not None and second is not None:
            judged_both += 1
            consistent = _same_winner(first, second)
            inconsistent += not consistent
        verdicts.append(
            {
                "a": x.label,
                "b": y.label,
                "script": x.script,
                "sample": sample,
                "a_first": first,
                "b_first": second,
                "consistent": consistent,
            }  # fmt: skip
        )
        if first is not None:
            comparisons.append((x.label, y.label, first))
            scripts.append(f"script:{x.script}")
        if second is not None:
            comparisons.append((y.label, x.label, second))
            scripts.append(f"script:{x.script}")
    section: dict[str, Any] = {
        "verdicts": verdicts,
        "judged_both_orders": judged_both,
        "inconsistent": inconsistent,
        "inconsistent_share": round(inconsistent / judged_both, 4) if judged_both else None,
    }
    options = {"resamples": settings.resamples, "seed": settings.seed, "prior": settings.prior}
    section["ratings"] = {}
    human = list(vote_clusters) if vote_clusters else [f"vote:{i}" for i in range(len(votes))]
    if comparisons:
        section["ratings"]["judge"] = bradley_terry_ratings(
            comparisons, clusters=scripts, **options
        )
    if votes:
        section["ratings"]["human"] = bradley_terry_ratings(list(votes), clusters=human, **options)
        if comparisons:
            section["ratings"]["combined"] = bradley_terry_ratings(
                [*comparisons, *votes], clusters=[*scripts, *human], **options
            )
        section["human_votes"] = len(votes)
    return section


# ---------------------------------------------------------------- Markdown
def judge_markdown(results: dict[str, Any]) -> str:
    criteria = results["settings"]["criteria"]
    labels = [STUDY_CRITERIA.get(c, (c,))[0] for c in criteria]
    lines = [f"# Judge: {results['judge']}", ""]
    lines.append(
        f"{results['settings']['samples']} sample(s) at temperature {results['settings']['temperature']}; "
        f"{results['calls']['made']} calls made, {results['calls']['cached']} from the cache; "
        f"failed: {results['calls']['failed'] or 'none'}"
    )
    lines.append("")
    for script, rows in (results.get("single") or {}).get("table3", {}).items():
        lines += [f"## Table 3 form: {script}", ""]
        head = ["Model", *labels, "Total", "Average", "Intelligence score", "Total sd (samples)"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for row in rows:
            cells = [row["model"], *(str(row.get(c, "")) for c in criteria)]
            cells += [f"{row['total']}/{row['out_of']}", str(row["average"]), str(row["intelligence_score"]),
                      f"{row['total_sd']} (n={row['samples']})"]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    pairwise = results.get("pairwise")
    if pairwise:
        lines += ["## Pairwise", ""]
        lines.append(
            f"{pairwise['judged_both_orders']} comparisons judged in both orders, "
            f"{pairwise['inconsistent']} inconsistent (the verdict changed with the order)."
        )
        lines.append("")
        lines.append(
            f"Bradley-Terry intervals: 95% cluster bootstrap ({results['settings'].get('resamples')} "
            f"resamples over scripts, prior {results['settings'].get('prior')}); they are "
            "conditional on these transcripts."
        )
        lines.append("")
        for source, rows in pairwise["ratings"].items():
            lines += [
                f"### Bradley-Terry ({source})",
                "",
                "| Model | Rating | 95% interval | W-L-T |",
                "|---|---|---|---|",
            ]
            for row in rows:
                lines.append(
                    f"| {row['model']} | {row['rating']} | {row['ci_low']} to {row['ci_high']} | "
                    f"{row['wins']}-{row['losses']}-{row['ties']} |"
                )
            if any(row.get("approximate") for row in rows):
                lines.append(
                    f"\nApproximate: only {rows[0].get('clusters')} scripts; with fewer than 30 "
                    "the intervals cover less than 95%."
                )
            for note in dict.fromkeys(row["note"] for row in rows if row.get("note")):
                lines.append(f"\nNote: {note}.")
            lines.append("")
    return "\n".join(lines)


def judge_teacher_config(
    source: str,
    *,
    model: str | None = None,
    api_key_env: str | None = None,
    timeout_s: float = 120.0,
    max_retries: int = 5,
    backoff_s: float = 1.0,
    extra_body: dict[str, Any] | None = None,
) -> Any:
    """A distill TeacherConfig for SOURCE: an http(s) URL is an OpenAI-compatible endpoint (its
    model name `model`), anything else a local model source."""
    from pydantic import ValidationError

    from alloylm.distill.config import TeacherConfig

    remote = source.startswith(("http://", "https://"))
    if remote and not model:
        raise ConfigError(
            "an endpoint judge needs the model name to ask for",
            key="--judge-model",
            hint="e.g. --judge-model gpt-4o (the study's judge), or the name `alloy serve` reports",
        )
    try:
        return TeacherConfig(
            type="openai" if remote else "local",
            model=model if remote else source,
            base_url=source if remote else None,
            api_key_env=api_key_env,
            timeout_s=timeout_s,
            max_retries=max_retries,
            backoff_s=backoff_s,
            extra_body=extra_body or {},
        )
    except ValidationError as error:
        raise ConfigError(str(error.errors()[0]["msg"]), key="judge") from None
