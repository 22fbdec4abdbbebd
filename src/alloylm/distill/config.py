"""Typed configuration of a distillation (the `distill` stage's keys), defaults from the study."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from alloylm.config.strict import StrictModel


class TeacherConfig(StrictModel):
    """`type: openai` (base_url, model, api_key_env) or `type: local` (model = a model source)."""

    type: Literal["openai", "local"]
    model: str
    base_url: str | None = None
    api_key_env: str | None = (
        None  # name of the variable holding the key; the key itself never appears
    )
    concurrency: int = Field(4, ge=1, le=256)
    timeout_s: float = Field(120.0, gt=0)
    max_retries: int = Field(5, ge=0)
    backoff_s: float = Field(1.0, ge=0)
    max_backoff_s: float = Field(30.0, ge=0)
    max_tokens: int = Field(512, ge=1)
    temperature: float = Field(0.0, ge=0)
    extra_body: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _openai_needs_url(self) -> TeacherConfig:
        if self.type == "openai" and not self.base_url:
            raise ValueError(
                "teacher.type openai needs base_url (e.g. https://api.openai.com/v1 or http://127.0.0.1:8000/v1)"
            )
        return self


class ChunkingConfig(StrictModel):
    max_tokens: int = Field(512, ge=16)
    overlap: int = Field(64, ge=0)
    tokenizer: str | None = None  # a model source whose tokenizer counts tokens; default: words

    @model_validator(mode="after")
    def _overlap_below_size(self) -> ChunkingConfig:
        if self.overlap >= self.max_tokens:
            raise ValueError("chunking.overlap must be smaller than chunking.max_tokens")
        return self


class DedupConfig(StrictModel):
    enabled: bool = True
    threshold: float = Field(0.8, gt=0, le=1)  # Jaccard of 5-word shingles
    shingle_size: int = Field(5, ge=1)


class DecontamConfig(StrictModel):
    files: list[str] = Field(
        default_factory=list
    )  # benchmark files (JSONL question/choices, MMLU CSV)
    ngram: int = Field(8, ge=3)


class BuilderConfig(StrictModel):
    kind: Literal["glossary_qa", "glossary_preference", "exercise_qa"]
    path: str
    limit: int | None = Field(None, ge=1)


class OutputNames(StrictModel):
    text: str = "cpt.jsonl"
    chat: str = "sft.jsonl"
    preference: str = "preference.jsonl"


class DistillConfig(StrictModel):
    """Everything a distillation needs; the `distill` stage Config adds `kind`/`description`."""

    paths: list[str] = Field(
        default_factory=list
    )  # documents: files or folders (.pdf .md .txt .jsonl)
    text_key: str = "text"  # field holding the text in .jsonl documents
    max_documents: int | None = Field(None, ge=1)
    max_chunks: int | None = Field(None, ge=1)
    raw_text: bool = True  # also write the cleaned documents as CPT text
    chunking: ChunkingConfig = ChunkingConfig()
    dedup: DedupConfig = DedupConfig()
    teacher: TeacherConfig | None = None
    generators: list[Literal["qa", "summary", "structured", "preference"]] = Field(
        default_factory=list
    )
    qa_pairs_per_chunk: int = Field(3, ge=1)
    parse_retries: int = Field(2, ge=0)  # invalid JSON / unparsable answers: retried, then counted
    token_budget: int | None = Field(None, ge=1)  # prompt + completion tokens this run may spend
    prompts_dir: str | None = None  # a folder of your own templates (same names as the built-ins)
    builders: list[BuilderConfig] = Field(default_factory=list)
    decontaminate: DecontamConfig = DecontamConfig()
    outputs: OutputNames = OutputNames()

    @model_validator(mode="after")
    def _generators_need_teacher(self) -> DistillConfig:
        if self.generators and self.teacher is None:
            raise ValueError(
                "generators need a teacher: add `teacher: {type: openai|local, ...}` or remove `generators`"
            )
        if self.generators and not self.paths:
            raise ValueError("generators need documents: add `paths: [...]`")
        if not self.generators and not self.builders and not self.paths:
            raise ValueError(
                "nothing to do: give `paths` (documents), `generators` (with a teacher) or `builders`"
            )
        return self
