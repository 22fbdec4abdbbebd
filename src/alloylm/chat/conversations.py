"""Conversation scripts: the same system prompt and user turns for every model, one transcript each.

A script is a YAML file (docs/conversations.md):

```yaml
name: collagen_leaves
system: You are a materials scientist ...
generation: {preset: study, seed: 42}      # a sampling preset of alloylm.generation.sampling, plus overrides
turns:
  - {name: relationship, user: "How are collagen and leaves related ...?"}
  - {name: design, user: "Design a material drawn from both ..."}
  - name: summary
    user: "Summarise the design as one JSON object ..."
    json: true                               # the reply is parsed and checked
    schema: {type: object, required: [name, components]}
```

Every model answers every turn through the one generation loop (`ModelGenerator.complete`), its
own answers kept in its history. A `json: true` turn's reply is parsed (`chat/jsonreply.py`) and
checked against the turn's schema; a reply that is not JSON is reported in the transcript and in
the summary, never raised. Transcripts are JSON (everything: settings, the model's lineage,
timings, per-turn token counts) and Markdown (for reading).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from alloylm.atomic import atomic_write_json, atomic_write_text
from alloylm.chat.jsonreply import parse_json_reply, unsupported_keywords
from alloylm.errors import ConfigError
from alloylm.generation.sampling import SamplingParams, preset
from alloylm.hashing import sha256_file

TRANSCRIPT_VERSION = 1
SCRIPTS_FOLDER = "conversations"  # under the shipped recipes: `alloy converse collagen_leaves`


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GenerationSettings(_Strict):
    """A named preset (alloylm.generation.sampling.PRESETS) with fields replaced."""

    preset: str = "study"
    seed: int | None = 42  # turn i uses seed + i: a rerun gives the same transcript
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)

    def merged(self, overrides: dict[str, Any]) -> GenerationSettings:
        """These settings with `overrides` (keys of this class; None values ignored) applied."""
        values = {**self.model_dump(), **{k: v for k, v in overrides.items() if v is not None}}
        return GenerationSettings.model_validate(values)

    def params(self, turn_index: int = 0) -> SamplingParams:
        fields = {
            name: value
            for name, value in self.model_dump().items()
            if name not in ("preset", "seed") and value is not None
        }
        seed = None if self.seed is None else self.seed + turn_index
        return preset(self.preset, seed=seed, **fields)


class GenerationOverrides(_Strict):
    """Fields of GenerationSettings to replace (a stage's or the command line's); None keeps."""

    preset: str | None = None
    seed: int | None = None
    max_new_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    repetition_penalty: float | None = Field(None, gt=0)


class Turn(_Strict):
    user: str = Field(min_length=1)
    name: str | None = None
    json_reply: bool = Field(False, alias="json")
    json_schema: dict[str, Any] | None = Field(None, alias="schema")

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class Script(_Strict):
    name: str
    description: str | None = None
    system: str | None = None
    generation: GenerationSettings = GenerationSettings()
    turns: list[Turn] = Field(min_length=1)


@dataclass(frozen=True)
class LoadedScript:
    script: Script
    path: Path
    sha256: str


def find_script(name_or_path: str | Path) -> Path:
    """A script file, or the name of a shipped one (recipes/conversations/NAME.yaml)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    from alloylm.resources import recipes_dir

    shipped = recipes_dir() / SCRIPTS_FOLDER
    stem = str(name_or_path).removesuffix(".yaml").removesuffix(".yml")
    candidate = shipped / f"{stem}.yaml"
    if candidate.is_file():
        return candidate
    known = sorted(p.stem for p in shipped.glob("*.yaml"))
    raise ConfigError(
        "conversation script not found",
        file=str(name_or_path),
        hint=f"give a YAML file, or a shipped script: {', '.join(known) or 'none'}",
    )


def load_script(name_or_path: str | Path) -> LoadedScript:
    """The script in a YAML file (or a shipped one by name), validated; ConfigError naming the key."""
    path = find_script(name_or_path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as error:
        raise ConfigError(f"not valid YAML: {error}", file=str(path)) from None
    if not isinstance(data, dict):
        raise ConfigError(
            "a conversation script is a mapping", file=str(path), hint="see docs/conversations.md"
        )
    try:
        script = Script.model_validate(data)
        script.generation.params()  # an unknown preset or an out-of-range value fails here
    except ValidationError as error:
        first = error.errors()[0]
        key = ".".join(str(part) for part in first["loc"])
        raise ConfigError(
            first["msg"], file=str(path), key=key, hint="see docs/conversations.md"
        ) from None
    except ValueError as error:
        raise ConfigError(str(error), file=str(path), key="generation") from None
    for index, turn in enumerate(script.turns):
        if turn.json_schema is not None and not turn.json_reply:
            raise ConfigError(
                "a schema needs `json: true`", file=str(path), key=f"turns.{index}.schema"
            )
    return LoadedScript(script, path.resolve(), sha256_file(path))


# ---------------------------------------------------------------- models
@dataclass(frozen=True)
class ModelInfo:
    """What a transcript says about the model: its source, a display name and its lineage."""

    source: str
    name: str
    folder: str
    lineage: str | None = None  # `<stage>@<content hash[:12]>` from alloy.json, when present
    content_hash: str | None = None  # the artifact's content hash (alloy.json)
    model_hash: str | None = None  # sha256 of the model's own files (when no alloy.json)


def describe_model(source: str, folder: Path, name: str | None = None) -> ModelInfo:
    manifest_path = folder / "alloy.json"
    manifest: dict[str, Any] = {}
    if manifest_path.is_file():
        try:
            manifest = json.loads(manifest_path.read_text())
        except ValueError:
            manifest = {}
    content_hash = manifest.get("content_hash")
    lineage = (
        f"{manifest.get('stage')}@{str(content_hash)[:12]}"
        if content_hash and manifest.get("stage")
        else None
    )
    model_hash = None
    if lineage is None:
        from alloylm.models.identity import model_files_hash

        model_hash = model_files_hash(folder)
    default = manifest.get("stage") or (
        folder.name if Path(source).exists() else source.replace(":", "_")
    )
    return ModelInfo(source, name or str(default), str(folder), lineage, content_hash, model_hash)


def unique_names(names: Sequence[str]) -> list[str]:
    """Names safe as file names and distinct (a repeated name gets -2, -3 ...)."""
    seen: dict[str, int] = {}
    result = []
    for name in names:
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "model"
        seen[safe] = seen.get(safe, 0) + 1
        result.append(safe if seen[safe] == 1 else f"{safe}-{seen[safe]}")
    return result


# ---------------------------------------------------------------- running
@dataclass
class TurnResult:
    index: int
    name: str | None
    user: str
    assistant: str
    seconds: float
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    seed: int | None
    json: dict[str, Any] | None = None  # JsonReply.as_dict() for a json turn

    @property
    def tokens_per_s(self) -> float | None:
        return round(self.completion_tokens / self.seconds, 2) if self.seconds > 0 else None


@dataclass
class Transcript:
    script: dict[str, Any]
    model: ModelInfo
    settings: dict[str, Any]
    system: str | None
    turns: list[TurnResult] = field(default_factory=list)
    load_s: float = 0.0
    created: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    def messages(self) -> list[dict[str, str]]:
        history = [{"role": "system", "content": self.system}] if self.system else []
        for turn in self.turns:
            history += [
                {"role": "user", "content": turn.user},
                {"role": "assistant", "content": turn.assistant},
            ]
        return history

    def json_turns(self) -> list[dict[str, Any]]:
        return [
            {"turn": t.index, "name": t.name, **(t.json or {})}
            for t in self.turns
            if t.json is not None
        ]

    def as_dict(self) -> dict[str, Any]:
        generate_s = sum(t.seconds for t in self.turns)
        return {
            "alloylm_transcript": TRANSCRIPT_VERSION,
            "created": self.created,
            "script": self.script,
            "model": asdict(self.model),
            "settings": self.settings,
            "system": self.system,
            "messages": self.messages(),
            "turns": [{**asdict(t), "tokens_per_s": t.tokens_per_s} for t in self.turns],
            "json_turns": self.json_turns(),
            "timings": {
                "load_s": round(self.load_s, 3),
                "generate_s": round(generate_s, 3),
                "completion_tokens": sum(t.completion_tokens for t in self.turns),
            },
        }


def run_script(
    loaded: LoadedScript,
    generator: Any,
    model: ModelInfo,
    settings: GenerationSettings,
    *,
    load_s: float = 0.0,
    on_turn: Callable[[TurnResult], None] | None = None,
) -> Transcript:
    """Every turn of the script answered by one model (`generator`: a ModelGenerator)."""
    script = loaded.script
    transcript = Transcript(
        script={"name": script.name, "path": str(loaded.path), "sha256": loaded.sha256},
        model=model,
        settings={**settings.model_dump(), "params": _params_dict(settings.params())},
        system=script.system,
        load_s=load_s,
    )
    for index, turn in enumerate(script.turns):
        params = settings.params(index)
        messages = [*transcript.messages(), {"role": "user", "content": turn.user}]
        started = time.perf_counter()
        generation = generator.complete(messages, params)
        seconds = time.perf_counter() - started
        result = TurnResult(
            index=index,
            name=turn.name,
            user=turn.user,
            assistant=generation.text,
            seconds=round(seconds, 3),
            prompt_tokens=generation.prompt_tokens,
            completion_tokens=generation.completion_tokens,
            finish_reason=generation.finish_reason,
            seed=params.seed,
        )
        if turn.json_reply:
            result.json = parse_json_reply(generation.text, turn.json_schema).as_dict()
        transcript.turns.append(result)
        if on_turn is not None:
            on_turn(result)
    return transcript


def _params_dict(params: SamplingParams) -> dict[str, Any]:
    keep = ("max_new_tokens", "temperature", "top_p", "top_k", "repetition_penalty", "seed")
    return {name: getattr(params, name) for name in keep}


@dataclass
class ConverseResult:
    transcripts: list[Transcript]
    files: list[dict[str, str]]  # per transcript, in order: {"json": file, "markdown": file}
    summary: dict[str, Any]


def converse(
    loaded: LoadedScript,
    models: Sequence[tuple[str, Path]],
    out_dir: Path,
    *,
    settings: GenerationSettings | None = None,
    names: Sequence[str] | None = None,
    dtype: str | None = None,
    threads: int | None = None,
    log: Callable[[str], None] = print,
) -> ConverseResult:
    """Run the script against each (source, folder); write one transcript per model and summary.json.

    Models run one after another (each is loaded, answers every turn, and is released), so only
    one model is in memory at a time.
    """
    from alloylm.generation.batching import ModelGenerator

    settings = settings or loaded.script.generation
    out_dir.mkdir(parents=True, exist_ok=True)
    infos = [
        describe_model(source, Path(folder), None if names is None else names[i])
        for i, (source, folder) in enumerate(models)
    ]
    stems = unique_names([info.name for info in infos])
    transcripts: list[Transcript] = []
    files: list[dict[str, str]] = []
    for info, stem in zip(infos, stems, strict=True):
        started = time.perf_counter()
        generator = ModelGenerator(info.folder, dtype=dtype, threads=threads, max_batch=1)
        load_s = time.perf_counter() - started
        try:
            transcript = run_script(
                loaded,
                generator,
                info,
                settings,
                load_s=load_s,
                on_turn=lambda t, name=info.name: log(
                    f"{name}: turn {t.index + 1}/{len(loaded.script.turns)} "
                    f"{t.completion_tokens} tokens in {t.seconds:.1f}s"
                    + (
                        ""
                        if t.json is None
                        else f", JSON {'valid' if t.json['valid'] else 'INVALID'}"
                    )
                ),
            )
        finally:
            generator.close()
        atomic_write_json(out_dir / f"{stem}.json", transcript.as_dict())
        atomic_write_text(out_dir / f"{stem}.md", transcript_markdown(transcript.as_dict()))
        transcripts.append(transcript)
        files.append({"json": f"{stem}.json", "markdown": f"{stem}.md"})
    summary = summarise(loaded, transcripts, files)
    atomic_write_json(out_dir / "summary.json", summary)
    return ConverseResult(transcripts, files, summary)


def summarise(
    loaded: LoadedScript, transcripts: Sequence[Transcript], files: Sequence[dict[str, str]]
) -> dict[str, Any]:
    """Per model: JSON turns valid or not (and why), tokens, seconds; schema keywords not checked."""
    unchecked = sorted(
        {
            keyword
            for turn in loaded.script.turns
            if turn.json_schema
            for keyword in unsupported_keywords(turn.json_schema)
        }
    )
    models = []
    for index, transcript in enumerate(transcripts):
        data = transcript.as_dict()
        json_turns = data["json_turns"]
        models.append(
            {
                "model": transcript.model.name,
                "source": transcript.model.source,
                "lineage": transcript.model.lineage or transcript.model.model_hash,
                "files": files[index] if index < len(files) else {},
                "json_valid": sum(1 for t in json_turns if t["valid"]),
                "json_turns": len(json_turns),
                "json_problems": [
                    {"turn": t["turn"], "error": t["error"], "schema_errors": t["schema_errors"]}
                    for t in json_turns
                    if not t["valid"]
                ],
                **data["timings"],
            }
        )
    return {
        "script": {"name": loaded.script.name, "path": str(loaded.path), "sha256": loaded.sha256},
        "schema_checker": "alloylm subset (type, required, properties, items, enum, minItems, "
        "additionalProperties)",
        "schema_keywords_not_checked": unchecked,
        "models": models,
    }


# ---------------------------------------------------------------- Markdown
def transcript_markdown(data: dict[str, Any]) -> str:
    """A transcript (its JSON form) as Markdown: header with settings and lineage, then the turns."""
    model = data.get("model") or {}
    params = (data.get("settings") or {}).get("params") or {}
    lines = [
        f"# {data['script']['name']}: {model.get('name')}",
        "",
        f"- model: `{model.get('source')}`"
        + (f" (lineage `{model['lineage']}`)" if model.get("lineage") else "")
        + (
            f" (model files sha256 `{model['model_hash'][:16]}`)" if model.get("model_hash") else ""
        ),
        f"- script: `{data['script']['path']}` (sha256 `{data['script']['sha256'][:16]}`)",
        f"- preset: `{data['settings'].get('preset')}`; "
        + ", ".join(f"{key} {value}" for key, value in params.items()),
        f"- created {data.get('created')}; load {data['timings']['load_s']} s, "
        f"generation {data['timings']['generate_s']} s, "
        f"{data['timings']['completion_tokens']} tokens",
        "",
    ]
    if data.get("system"):
        lines += ["## System", "", data["system"].strip(), ""]
    for turn in data["turns"]:
        title = f"Turn {turn['index'] + 1}" + (f": {turn['name']}" if turn.get("name") else "")
        lines += [f"## {title}", "", "**User**", "", turn["user"].strip(), ""]
        lines += [
            f"**{model.get('name')}**",
            "",
            turn["assistant"].strip() or "*(empty reply)*",
            "",
        ]
        lines.append(
            f"*{turn['completion_tokens']} tokens in {turn['seconds']} s, "
            f"finish: {turn['finish_reason']}*"
        )
        lines.append("")
        check = turn.get("json")
        if check is not None:
            if check["valid"]:
                lines.append("JSON: valid")
            elif not check["parsed"]:
                lines.append(f"JSON: **invalid** ({check['error']})")
            else:
                lines.append(
                    "JSON: parsed, **schema problems**: " + "; ".join(check["schema_errors"])
                )
            lines.append("")
    return "\n".join(lines)
