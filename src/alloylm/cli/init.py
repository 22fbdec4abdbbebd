"""`alloy init [FILE]`: write a commented starter pipeline, or (`--recipe NAME`) a shipped recipe."""

from __future__ import annotations

import argparse
import os
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
    from alloylm.resources import recipe_names

    parser.add_argument(
        "file",
        nargs="?",
        help="where to write (default pipeline.yaml; with --recipe, the recipe's file name)",
    )
    parser.add_argument(
        "--recipe",
        metavar="NAME",
        help=f"write a recipe that ships with alloylm: {', '.join(recipe_names())}",
    )
    parser.add_argument("--force", action="store_true", help="overwrite an existing file")


def run(args: argparse.Namespace) -> int:
    from alloylm.errors import AlloyError

    if args.recipe:
        from alloylm.resources import recipe_path

        source = recipe_path(args.recipe)
        path = Path(args.file or source.name)
        text = recipe_text(source)
    else:
        path = Path(args.file or "pipeline.yaml")
        text = STARTER.format(name=path.name, stem=path.stem)
    if path.exists() and not args.force:
        raise AlloyError(f"{path} exists", hint="choose another name or pass --force")
    path.write_text(text, encoding="utf-8")
    if args.recipe:
        print(
            f"wrote {path} (recipe {args.recipe}): `alloy validate {path}`, then `alloy run {path}`"
        )
    else:
        print(
            f"wrote {path}: edit the vars: paths, then `alloy validate {path}` and `alloy run {path}`"
        )
    return 0


def recipe_text(source: Path) -> str:
    """A shipped recipe as it reads in its own folder, with a relative `run.output` rebased.

    The recipes live in the repository's recipes/ folder, so `output: ../runs/quickstart` means
    <repo>/runs/quickstart. Written next to the user's file it becomes `runs/quickstart`: the
    folder the file is written to plays the repository root. Everything else is kept as written
    (data paths such as `${data}/...` do not depend on where the file is).
    """
    from alloylm.config.yaml_lines import line_of, load_yaml_with_lines
    from alloylm.resources import recipes_dir

    text = source.read_text(encoding="utf-8")
    data, lines = load_yaml_with_lines(source)
    output = (data.get("run") or {}).get("output") if isinstance(data, dict) else None
    line = line_of(lines, ("run", "output"))
    if not isinstance(output, str) or Path(output).is_absolute() or line is None:
        return text
    recipe_folder = Path("recipes") / source.parent.relative_to(recipes_dir())
    rebased = Path(os.path.normpath(recipe_folder / output)).as_posix()
    if rebased.startswith("..") or rebased == output:
        return text
    rows = text.splitlines(keepends=True)
    rows[line - 1] = rows[line - 1].replace(output, rebased, 1)
    return "".join(rows)
