"""Every name alloylm knows, in exactly one table each.

Entries are lazy ("module:attribute") so that importing this module, and `alloy --help`, stays
fast: the target is imported only when the name is used. Nothing registers itself by import side
effect; to add a stage kind, merge method, eval task type, teacher or model source, add one line
to the table below (and the file and test it points to). `alloy ls` prints these tables.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from alloylm.errors import AlloyError, did_you_mean


@dataclass(frozen=True)
class Entry:
    target: str  # "package.module:attribute" or "package.module"
    summary: str


class Registry:
    """A named table of lazily imported entries with 'did you mean' on unknown names."""

    def __init__(self, kind: str, entries: dict[str, Entry]) -> None:
        self.kind = kind
        self._entries = dict(entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def entry(self, name: str) -> Entry:
        try:
            return self._entries[name]
        except KeyError:
            known = ", ".join(sorted(self._entries))
            raise AlloyError(
                f"unknown {self.kind} {name!r}{did_you_mean(name, self._entries)}",
                hint=f"known {self.kind}s: {known} (see `alloy ls`)",
            ) from None

    def get(self, name: str) -> Any:
        """Import and return the object registered under `name`."""
        target = self.entry(name).target
        module_name, _, attribute = target.partition(":")
        module = importlib.import_module(module_name)
        return getattr(module, attribute) if attribute else module

    def items(self) -> list[tuple[str, Entry]]:
        return list(self._entries.items())


STAGE_KINDS = Registry(
    "stage kind",
    {
        "distill": Entry(
            "alloylm.stages.distill",
            "raw text -> CPT text, Q&A, summaries, facts, preference pairs",
        ),
        "cpt": Entry(
            "alloylm.stages.cpt", "continued pretraining on raw domain text (packed, BOS-separated)"
        ),
        "sft": Entry(
            "alloylm.stages.sft", "supervised fine-tuning on chat examples (assistant-only loss)"
        ),
        "dpo": Entry("alloylm.stages.dpo", "direct preference optimisation (TRL DPOTrainer)"),
        "orpo": Entry("alloylm.stages.orpo", "odds-ratio preference optimisation, reference-free"),
        "simpo": Entry(
            "alloylm.stages.simpo",
            "SimPO or CPO preference optimisation, reference-free (TRL CPOTrainer)",
        ),
        "merge": Entry(
            "alloylm.stages.merge", "merge models (SLERP, linear, TIES, DARE, ...) incl. sweeps"
        ),
        "eval": Entry("alloylm.stages.evaluate", "evaluate models on benchmarks with one protocol"),
        "export": Entry("alloylm.stages.export", "write a model as one GGUF file (f16, q8_0, ...)"),
        "converse": Entry(
            "alloylm.stages.converse", "a conversation script answered by every model (transcripts)"
        ),
        "judge": Entry(
            "alloylm.stages.judge",
            "an LLM judge grades or compares transcripts (Table 3, Bradley-Terry)",
        ),
    },
)

MODEL_SOURCES = Registry(
    "model source",
    {
        "embedded": Entry(
            "alloylm.models.embedded:prepare_embedded",
            "models shipped in PyPI packages (offline): embedded:smollm2-135m-instruct",
        ),
        "tiny": Entry(
            "alloylm.models.tiny:prepare_tiny", "tiny random models for tests: tiny:llama"
        ),
        "local": Entry(
            "alloylm.models.sources:resolve_local",
            "a folder in Hugging Face format, or a .gguf file",
        ),
        "hub": Entry("alloylm.models.sources:resolve_hub", "a Hugging Face hub id (needs network)"),
    },
)

MERGE_METHODS = Registry(
    "merge method",
    {
        "slerp": Entry(
            "alloylm.merge.methods.slerp:METHOD",
            "spherical interpolation of two models (Shoemake 1985; mergekit)",
        ),
        "linear": Entry(
            "alloylm.merge.methods.linear:METHOD",
            "weighted average (Wortsman et al. 2022, model soups)",
        ),
        "task_arithmetic": Entry(
            "alloylm.merge.methods.task_arithmetic:METHOD",
            "base + sum of weighted task vectors (Ilharco et al. 2023)",
        ),
        "ties": Entry(
            "alloylm.merge.methods.ties:METHOD",
            "trim, elect sign, disjoint merge (Yadav et al. 2023)",
        ),
        "dare_linear": Entry(
            "alloylm.merge.methods.dare:LINEAR",
            "drop and rescale task vectors, then add (Yu et al. 2024)",
        ),
        "dare_ties": Entry(
            "alloylm.merge.methods.dare:TIES", "DARE with TIES sign election (Yu et al. 2024)"
        ),
        "breadcrumbs": Entry(
            "alloylm.merge.methods.breadcrumbs:METHOD",
            "task vectors without their largest and smallest entries (Davari & Belilovsky 2024)",
        ),
        "model_stock": Entry(
            "alloylm.merge.methods.model_stock:METHOD",
            "move toward the models' average by an angle ratio (Jang et al. 2024)",
        ),
        "nuslerp": Entry(
            "alloylm.merge.methods.nuslerp:METHOD",
            "SLERP of two models (or task vectors) set by weights, whole or by row (mergekit)",
        ),
        "multislerp": Entry(
            "alloylm.merge.methods.multislerp:METHOD",
            "weighted spherical mean of any number of models (Goddard 2025; mergekit)",
        ),
        "karcher": Entry(
            "alloylm.merge.methods.karcher:METHOD",
            "Riemannian mean of the models' directions on the sphere (Karcher 1977; mergekit)",
        ),
        "breadcrumbs_ties": Entry(
            "alloylm.merge.methods.breadcrumbs_ties:METHOD",
            "breadcrumbs' magnitude band, then TIES sign election (Davari & Belilovsky 2024)",
        ),
        "della": Entry(
            "alloylm.merge.methods.della:DELLA",
            "magnitude-ranked random drops, then TIES sign election (Deep et al. 2024)",
        ),
        "della_linear": Entry(
            "alloylm.merge.methods.della:LINEAR",
            "magnitude-ranked random drops, then add (Deep et al. 2024)",
        ),
        "sce": Entry(
            "alloylm.merge.methods.sce:METHOD",
            "select high-variance entries, weight by energy, erase sign conflicts (Wan et al. 2024)",
        ),
        "arcee_fusion": Entry(
            "alloylm.merge.methods.arcee_fusion:METHOD",
            "take the other model's entries where an importance score is an outlier (Arcee)",
        ),
        "nearswap": Entry(
            "alloylm.merge.methods.nearswap:METHOD",
            "take the other model's value where the two are within t (alchemonaut; mergekit)",
        ),
        "passthrough": Entry(
            "alloylm.merge.methods.passthrough:METHOD",
            "copy one model's tensors; with slices, stack layer ranges (frankenmerge)",
        ),
    },
)

EVAL_TASK_TYPES = Registry(
    "eval task type",
    {
        "mcq": Entry("alloylm.evals.tasks:MultipleChoiceTask", "multiple choice, 2 to 10 options"),
        "true_false": Entry("alloylm.evals.tasks:TrueFalseTask", "true / false statements"),
        "numeric": Entry("alloylm.evals.tasks:NumericTask", "numeric answer with accepted ranges"),
        "perplexity": Entry("alloylm.evals.tasks:PerplexityTask", "perplexity on held-out text"),
        "extract": Entry(
            "alloylm.evals.extract:ExtractTask",
            "JSON extraction (materials, properties, methods): valid-JSON share, field P/R/F1",
        ),
    },
)

EVAL_PROTOCOLS = Registry(
    "eval protocol",
    {
        "paper": Entry(
            "alloylm.evals.protocol:PaperProtocol",
            "the study's: instruction, chat template, greedy answer, letter check",
        ),
        "loglik": Entry(
            "alloylm.evals.protocol:LoglikProtocol", "log-likelihood of each option letter"
        ),
        "cloze": Entry(
            "alloylm.evals.protocol:ClozeProtocol",
            "length-normalised log-likelihood of each option's text",
        ),
    },
)

TEACHERS = Registry(
    "teacher",
    {
        "openai": Entry(
            "alloylm.distill.teachers:OpenAITeacher", "any OpenAI-compatible chat endpoint"
        ),
        "local": Entry(
            "alloylm.distill.teachers:LocalTeacher",
            "a model source run in-process with transformers",
        ),
    },
)

ALL_TABLES: tuple[Registry, ...] = (
    STAGE_KINDS,
    MODEL_SOURCES,
    MERGE_METHODS,
    EVAL_TASK_TYPES,
    EVAL_PROTOCOLS,
    TEACHERS,
)
