"""`judge` stage: an LLM judge grades transcripts (the study's Table 3) and/or compares them in
pairs (both orders; Bradley-Terry ratings with bootstrap intervals, human votes included).

```yaml
judged:
  kind: judge
  paths: [${stages.transcripts.output}]          # converse artifacts, or transcript files
  judge: {type: openai, base_url: https://api.openai.com/v1, model: gpt-4o, api_key_env: OPENAI_API_KEY}
  mode: both                                      # single | pairwise | both
  samples: 3                                      # per transcript (per order), temperature > 0
  votes_file: votes.jsonl                         # optional: votes from `alloy serve --ui`
```
The call cache lives in the stage's state folder, so an interrupted or repeated run makes no call
twice. See docs/conversations.md.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from alloylm.config.strict import StageConfig, StrictModel
from alloylm.contract import InputSpec, StageContext, StageResult

PRODUCES = "data"


class JudgeSource(StrictModel):
    """`type: openai` (base_url, model, api_key_env) or `type: local` (model = a model source)."""

    type: Literal["openai", "local"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = None  # name of the variable holding the key; never the key
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)


class Config(StageConfig):
    paths: list[str] = Field(min_length=1, description="transcript files or folders of them")
    judge: JudgeSource
    mode: Literal["single", "pairwise", "both"] = "single"
    samples: int = Field(3, ge=1)
    temperature: float = Field(0.7, ge=0)
    max_tokens: int = Field(512, ge=1)
    parse_retries: int = Field(2, ge=0)
    criteria: list[str] | None = None  # default: the study's four
    resamples: int = Field(1000, ge=0)
    prior: float = Field(0.5, gt=0)  # virtual wins each way; 0 lets ratings run to infinity
    concurrency: int = Field(4, ge=1, le=64)
    prompts_dir: str | None = None  # rubric.j2 / judge_single.j2 / judge_pairwise.j2 of your own
    votes_file: str | None = None  # human votes JSONL ({"a", "b", "winner"})


def inputs(cfg: Config) -> list[InputSpec]:
    specs = [InputSpec(f"paths[{i}]", p, "file") for i, p in enumerate(cfg.paths)]
    if cfg.judge.type == "local":
        specs.append(InputSpec("judge.model", cfg.judge.model, "model"))
    if cfg.prompts_dir:
        specs.append(InputSpec("prompts_dir", cfg.prompts_dir, "file"))
    if cfg.votes_file:
        specs.append(InputSpec("votes_file", cfg.votes_file, "file"))
    return specs


def run(ctx: StageContext, cfg: Config) -> StageResult:
    from alloylm.chat.judge import (
        STUDY_CRITERIA,
        Judge,
        JudgeSettings,
        load_transcripts,
        load_votes,
        run_judge,
        vote_clusters,
    )
    from alloylm.distill.cache import CallCache
    from alloylm.distill.config import TeacherConfig
    from alloylm.distill.engine import make_teacher

    settings = JudgeSettings(
        mode=cfg.mode,
        samples=cfg.samples,
        temperature=cfg.temperature,
        max_tokens=cfg.max_tokens,
        parse_retries=cfg.parse_retries,
        seed=ctx.seed,
        criteria=tuple(cfg.criteria or STUDY_CRITERIA),
        resamples=cfg.resamples,
        prior=cfg.prior,
        concurrency=cfg.concurrency,
    )
    source = cfg.judge
    teacher_cfg = TeacherConfig(
        type=source.type,
        model=source.model,
        base_url=source.base_url,
        api_key_env=source.api_key_env,
        timeout_s=source.timeout_s,
        extra_body=source.extra_body,
    )
    transcripts = load_transcripts(cfg.paths)
    votes = load_votes(cfg.votes_file) if cfg.votes_file else []
    teacher = make_teacher(teacher_cfg, ctx.model_path)
    cache = CallCache(ctx.state_dir / "judge-cache.sqlite")
    try:
        judge = Judge(
            teacher,
            cache,
            settings,
            prompts_dir=cfg.prompts_dir,
            max_retries=source.max_retries,
            backoff_s=source.backoff_s,
            timeout_s=source.timeout_s,
        )
        results = run_judge(
            transcripts,
            judge,
            ctx.work_dir,
            votes=votes,
            vote_clusters=vote_clusters(cfg.votes_file) if cfg.votes_file else None,
            log=ctx.log,
        )
    finally:
        cache.close()
    metrics: dict[str, Any] = {
        "transcripts": len(transcripts),
        "judge_calls": results["calls"]["made"],
        "judge_cached": results["calls"]["cached"],
        "failed": sum(results["calls"]["failed"].values()),
    }
    if "pairwise" in results:
        metrics["inconsistent"] = results["pairwise"]["inconsistent"]
    for rows in (results.get("single") or {}).get("table3", {}).values():
        for row in rows:
            metrics[f"intelligence_score/{row['model']}"] = row["intelligence_score"]
    best = [rows[0] for rows in (results.get("single") or {}).get("table3", {}).values() if rows]
    scored = len(best) == 1 and best[0]["intelligence_score"] is not None
    lead = f"best {best[0]['model']} {best[0]['intelligence_score']}; " if scored else ""
    metrics["summary"] = f"{lead}{metrics['judge_calls']} calls, {metrics['judge_cached']} cached"
    kept = ("judge", "mode", "settings", "templates", "calls")  # the rest is in judge.json
    return StageResult(metrics=metrics, details={"judge": {k: results[k] for k in kept}})
