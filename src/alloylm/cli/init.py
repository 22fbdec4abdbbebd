"""`alloy init [FILE]`: write a commented starter pipeline."""

from __future__ import annotations

import argparse
from pathlib import Path

STARTER = """\
# alloylm pipeline: continued pretraining -> supervised fine-tuning -> merge -> evaluation.
# Run:       alloy run {name}
# Validate:  alloy validate {name}
# Paths are relative to this file. ${{stages.NAME.output}} is another stage's artifact folder.
run:
  name: {stem}
  seed: 42
  output: runs/{stem}

vars:
  corpus: data/corpus.jsonl        # one document per line: {{"text": "..."}}  (also .txt/.md/.csv/.parquet)
  sft_data: data/sft.jsonl         # {{"messages": [...]}} or question/answer or prompt/completion
  benchmark: data/benchmark.jsonl  # {{"question", "choices", "answer": "B"}}

stages:
  cpt:
    kind: cpt
    model: embedded:smollm2-135m-instruct   # or a local folder, a .gguf file, a hub id
    data:
      - path: ${{vars.corpus}}
        holdout: {{fraction: 0.1, seed: 42, key: text}}   # unseen text for perplexity
    train: {{max_steps: 50, learning_rate: 5.0e-5, max_seq_length: 512}}

  sft:
    kind: sft
    model: ${{stages.cpt.output}}
    data:
      - path: ${{vars.sft_data}}
    train: {{max_steps: 50, learning_rate: 2.0e-5, max_seq_length: 512}}

  merge:
    kind: merge
    method: slerp                          # the study's per-layer schedule is the default
    base_model: embedded:smollm2-135m-instruct
    models: ["${{stages.sft.output}}"]

  eval:
    kind: eval
    models: [embedded:smollm2-135m-instruct, "${{stages.sft.output}}", "${{stages.merge.output}}"]
    tasks:
      - {{path: "${{vars.benchmark}}", type: mcq, protocols: [cloze]}}
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file", nargs="?", default="pipeline.yaml", help="where to write (default pipeline.yaml)"
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    from alloylm.errors import AlloyError

    path = Path(args.file)
    if path.exists() and not args.force:
        raise AlloyError(f"{path} exists", hint="choose another name or pass --force")
    path.write_text(STARTER.format(name=path.name, stem=path.stem))
    print(
        f"wrote {path}: edit the vars: paths, then `alloy validate {path}` and `alloy run {path}`"
    )
    return 0
