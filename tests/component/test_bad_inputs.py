"""A corpus of bad inputs: each ends in an alloylm message, never a traceback.

Every case runs the real CLI (`alloylm.cli.main.main`, in-process) and checks the exit code, that
no "Traceback" is printed, that the message names the place (file, line or key) and that it says
what to do (a hint). Areas: pipeline YAML, data files, benchmark files, model folders and weight
files, merge configs, distill teacher replies and CLI misuse. (`alloy serve` requests are covered
with the server's own tests.)
"""

from __future__ import annotations

import json
import shutil
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from tests import faults

from alloylm.cli.main import main

TINY = "tiny:llama"


@dataclass
class Case:
    id: str
    setup: Callable[[Path], list[str]]  # writes the inputs under the folder, returns argv
    says: tuple[str, ...]  # substrings of the output ("{tmp}" = the case's folder)
    rc: int = 2
    hint: bool = True  # the message says what to do

    def __repr__(self) -> str:
        return self.id


# ------------------------------------------------------------------ builders of inputs
def write(folder: Path, name: str, content: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


def jsonl(rows: list) -> str:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows)


GOOD_TEXT = [{"text": "the heart pumps blood through the arteries and veins " * 3}] * 4
GOOD_CHAT = [
    {
        "messages": [
            {"role": "user", "content": "What is bone?"},
            {"role": "assistant", "content": "A hard tissue."},
        ]
    }
] * 4
GOOD_PAIR = [{"prompt": "What is bone?", "chosen": "A hard tissue.", "rejected": "A fish."}] * 4
GOOD_MCQ = [{"question": "Which is a bone?", "choices": ["femur", "heart", "lung"], "answer": "A"}]


def pipeline_yaml(folder: Path, text: str) -> list[str]:
    write(folder, "p.yaml", text)
    return ["validate", str(folder / "p.yaml")]


def run_yaml(folder: Path, text: str) -> list[str]:
    write(folder, "p.yaml", text)
    return ["run", str(folder / "p.yaml")]


def stage(kind_yaml: str) -> str:
    return f"run: {{name: bad, seed: 1, output: out}}\nstages:\n  s:\n{kind_yaml}"


TRAIN = "    train: {max_steps: 1, max_seq_length: 64, per_device_batch_size: 1}\n"


def cpt_on(path: str, extra: str = "") -> str:
    return stage(
        f"    kind: cpt\n    model: {TINY}\n    data:\n      - {{path: {path}{extra}}}\n{TRAIN}"
    )


def sft_on(path: str, extra: str = "") -> str:
    return stage(
        f"    kind: sft\n    model: {TINY}\n    data:\n      - {{path: {path}{extra}}}\n{TRAIN}"
    )


def dpo_on(path: str, extra: str = "") -> str:
    return stage(
        f"    kind: dpo\n    model: {TINY}\n    data:\n      - {{path: {path}{extra}}}\n{TRAIN}"
    )


def eval_on(path: str, extra: str = "") -> str:
    return stage(
        f"    kind: eval\n    models: [{TINY}]\n    protocols: [cloze]\n    resamples: 10\n"
        f"    tasks:\n      - {{path: {path}, type: mcq{extra}}}\n"
    )


def data_run(name: str, content: str | bytes, pipeline: Callable[..., str], extra: str = ""):
    def setup(folder: Path) -> list[str]:
        write(folder, name, content)
        return run_yaml(folder, pipeline(name, extra))

    return setup


def eval_cli(name: str, content: str | bytes, *more: str):
    def setup(folder: Path) -> list[str]:
        write(folder, name, content)
        return ["eval", TINY, "--tasks", str(folder / name), "--protocol", "cloze", "--no-save",
                "--resamples", "10", *more]  # fmt: skip

    return setup


# model folders: a copy of tiny:llama, then damaged
def tiny_copy(folder: Path) -> Path:
    from alloylm.models.sources import resolve_model

    target = folder / "model"
    shutil.copytree(resolve_model(TINY), target)
    return target


def model_case(damage: Callable[[Path], None], source: str = "model"):
    def setup(folder: Path) -> list[str]:
        damage(tiny_copy(folder))
        write(folder, "mcq.jsonl", jsonl(GOOD_MCQ))
        return ["eval", str(folder / source), "--tasks", str(folder / "mcq.jsonl"),
                "--protocol", "cloze", "--no-save", "--resamples", "10"]  # fmt: skip

    return setup


def drop(*names: str) -> Callable[[Path], None]:
    def damage(model: Path) -> None:
        for name in names:
            (model / name).unlink()

    return damage


def pickle_only(model: Path) -> None:
    (model / "model.safetensors").unlink()
    (model / "pytorch_model.bin").write_bytes(b"\x80\x04not really a pickle")


def safetensors_with(header: object, data: bytes = b"", length: int | None = None):
    raw = json.dumps(header).encode() if not isinstance(header, bytes) else header

    def damage(model: Path) -> None:
        size = len(raw) if length is None else length
        (model / "model.safetensors").write_bytes(struct.pack("<Q", size) + raw + data)

    return damage


F32_ENTRY = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}


def gguf_bytes(*, magic=b"GGUF", version=3, tensors=0, entries=0, tail=b"") -> bytes:
    return magic + struct.pack("<IQQ", version, tensors, entries) + tail


def gguf_case(content: bytes | Callable[[], bytes]):
    def setup(folder: Path) -> list[str]:
        data = content() if callable(content) else content
        write(folder, "model.gguf", data)
        write(folder, "mcq.jsonl", jsonl(GOOD_MCQ))
        return ["eval", str(folder / "model.gguf"), "--tasks", str(folder / "mcq.jsonl"),
                "--protocol", "cloze", "--no-save"]  # fmt: skip

    return setup


def truncated_embedded_gguf() -> bytes:
    from alloylm.models.embedded import embedded_gguf_path

    with open(embedded_gguf_path("smollm2-135m-instruct"), "rb") as handle:
        return handle.read(4096)  # cut inside the metadata (the vocabulary arrays)


def merge_case(
    yaml_text: str, output: str = "merged", prepare: Callable[[Path], None] | None = None
):
    def setup(folder: Path) -> list[str]:
        if prepare:
            prepare(folder)
        write(folder, "merge.yaml", yaml_text.replace("{tmp}", str(folder)))
        return ["merge", str(folder / "merge.yaml"), str(folder / output), "--quiet"]

    return setup


def other_shape(folder: Path) -> None:
    model = tiny_copy(folder)
    config = json.loads((model / "config.json").read_text())
    config["hidden_size"] = 128
    (model / "config.json").write_text(json.dumps(config))


def other_vocab(folder: Path) -> None:
    model = tiny_copy(folder)
    config = json.loads((model / "config.json").read_text())
    config["vocab_size"] += 7
    (model / "config.json").write_text(json.dumps(config))


def cli(*argv: str) -> Callable[[Path], list[str]]:
    return lambda folder: [a.replace("{tmp}", str(folder)) for a in argv]


def pipeline_merge(body: str) -> Callable[[Path], list[str]]:
    """A pipeline whose only stage is a merge (`alloy validate`)."""
    return lambda f: pipeline_yaml(f, stage("    kind: merge\n" + body))


_PAIR = f"base_model: {TINY}\nmodels: [tiny:llama:1]\n"
_TWO = f"base_model: {TINY}\nmodels: [tiny:llama:1, tiny:llama:2]\n"
# (method, merge body, what the message names): one missing required parameter or a wrong model
# count per method; the first ones through `alloy validate`, the rest through `alloy merge`
_METHOD_BAD = [
    ("linear", "models: [tiny:llama, tiny:llama:1]\n", ("weight", "tiny:llama")),
    ("slerp", _TWO + "parameters: {t: 0.5}\n", ("exactly 1",)),
    ("task_arithmetic", _PAIR, ("weight", "tiny:llama:1")),
    ("ties", _PAIR, ("weight",)),
    ("dare_linear", _PAIR, ("weight",)),
    ("dare_ties", _PAIR, ("weight",)),
    ("breadcrumbs", _PAIR, ("weight",)),
    ("model_stock", _PAIR, ("at least 2",)),
    ("nuslerp", _PAIR + "parameters: {weight: 0.5}\n", ("exactly 2",)),
    (
        "nuslerp",
        "models: [tiny:llama, {model: 'tiny:llama:1', parameters: {weight: 1}}]\n",
        ("weight", "tiny:llama"),
    ),
    ("multislerp", "models: [tiny:llama, tiny:llama:1, tiny:llama:2]\n", ("weight",)),
    ("karcher", "models: [tiny:llama]\n", ("at least 2",)),
    ("breadcrumbs_ties", _PAIR, ("weight",)),
    ("della", _PAIR, ("weight",)),
    ("della", _PAIR + "parameters: {weight: 1, density: 0.9, epsilon: 0.15}\n", ("epsilon",)),
    ("della_linear", _PAIR, ("weight",)),
    ("sce", f"base_model: {TINY}\nmodels: [{TINY}]\n", ("at least 1", "gives 0")),
    ("arcee_fusion", _TWO, ("exactly 1",)),
    ("nearswap", _PAIR, ("parameters.t",)),
    ("nearswap", _PAIR + "parameters: {t: -1}\n", ("t is a distance",)),
    ("passthrough", "models: [tiny:llama, tiny:llama:1]\n", ("exactly 1", "gives 2")),
]
METHOD_CASES = [
    Case(
        f"{'validate' if i % 2 == 0 else 'merge'}-{method}-{i}",
        pipeline_merge(
            f"    method: {method}\n" + "".join(f"    {line}\n" for line in body.splitlines())
        )
        if i % 2 == 0
        else merge_case(f"method: {method}\n" + body),
        (method, *says),
    )
    for i, (method, body, says) in enumerate(_METHOD_BAD)
]


# ------------------------------------------------------------------ the corpus
CASES = [
    # --- pipeline YAML (alloy validate)
    Case("yaml-syntax", lambda f: pipeline_yaml(f, "run: {name: x\nstages: [\n"), ("p.yaml:",), hint=False),
    Case("yaml-top-level-list", lambda f: pipeline_yaml(f, "- a\n- b\n"), ("p.yaml", "mapping")),
    Case("yaml-missing-run", lambda f: pipeline_yaml(f, "stages: {a: {kind: cpt}}\n"), ("p.yaml", "run:")),
    Case("yaml-unknown-top-key", lambda f: pipeline_yaml(f, "run: {name: x}\nstagess: {}\n"), ("stagess", "did you mean")),
    Case("yaml-empty-stages", lambda f: pipeline_yaml(f, "run: {name: x}\nstages: {}\n"), ("[stages]",), hint=False),
    Case("yaml-unknown-kind", lambda f: pipeline_yaml(f, stage("    kind: cptt\n")), ("stages.s.kind", "did you mean 'cpt'")),
    Case("yaml-missing-kind", lambda f: pipeline_yaml(f, stage("    model: tiny:llama\n")), ("stages.s", "kind")),
    Case("yaml-unknown-stage-key", lambda f: pipeline_yaml(f, stage(f"    kind: cpt\n    model: {TINY}\n    learning_rate: 1\n    data: [{{path: x.jsonl}}]\n")), ("learning_rate", "p.yaml:")),
    Case("yaml-wrong-type", lambda f: pipeline_yaml(f, stage(f"    kind: cpt\n    model: {TINY}\n    data: [{{path: x.jsonl}}]\n    train: {{max_steps: many}}\n")), ("max_steps",)),
    Case("yaml-out-of-range", lambda f: pipeline_yaml(f, stage(f"    kind: cpt\n    model: {TINY}\n    data: [{{path: x.jsonl}}]\n    train: {{max_seq_length: 2}}\n")), ("max_seq_length",)),
    Case("yaml-missing-data-file", lambda f: pipeline_yaml(f, cpt_on("missing.jsonl")), ("missing.jsonl",)),
    Case("yaml-unknown-stage-ref", lambda f: pipeline_yaml(f, stage("    kind: sft\n    model: ${stages.nope.output}\n    data: [{path: x.jsonl}]\n")), ("nope",)),
    Case("yaml-cycle", lambda f: pipeline_yaml(f, "run: {name: x}\nstages:\n  a: {kind: sft, model: '${stages.b.output}', data: [{path: x.jsonl}]}\n  b: {kind: sft, model: '${stages.a.output}', data: [{path: x.jsonl}]}\n"), ("cycle",), hint=False),
    Case("yaml-unknown-var", lambda f: pipeline_yaml(f, stage("    kind: cpt\n    model: ${vars.nope}\n    data: [{path: x.jsonl}]\n")), ("nope", "stages.s.model")),
    Case("yaml-bad-stage-name", lambda f: pipeline_yaml(f, "run: {name: x}\nstages:\n  'my stage': {kind: cpt}\n"), ("my stage",), hint=False),
    Case("yaml-run-seed-type", lambda f: pipeline_yaml(f, "run: {name: x, seed: lots}\nstages: {a: {kind: cpt}}\n"), ("run.seed",), hint=False),
    Case("yaml-run-unknown-key", lambda f: pipeline_yaml(f, "run: {nmae: x}\nstages: {a: {kind: cpt}}\n"), ("run.nmae",), hint=False),
    Case("yaml-file-missing", cli("validate", "{tmp}/nope.yaml"), ("nope.yaml",), hint=False),
    Case("yaml-eval-unknown-type", lambda f: pipeline_yaml(f, stage(f"    kind: eval\n    models: [{TINY}]\n    tasks: [{{path: x.jsonl, type: essay}}]\n")), ("type",)),
    Case("yaml-merge-unknown-method", lambda f: pipeline_yaml(f, stage(f"    kind: merge\n    method: slurp\n    base_model: {TINY}\n    models: [tiny:llama:1]\n")), ("slurp", "did you mean")),
    Case("yaml-dpo-unknown-loss", lambda f: pipeline_yaml(f, dpo_on("x.jsonl").replace("    data:", "    loss_type: sigmund\n    data:")), ("loss_type",)),
    Case("yaml-dpo-unknown-loss-in-list", lambda f: pipeline_yaml(f, dpo_on("x.jsonl").replace("    data:", "    loss_type: [sigmoid, hinj]\n    data:")), ("loss_type", "did you mean 'hinge'")),
    Case("yaml-simpo-unknown-loss", lambda f: pipeline_yaml(f, dpo_on("x.jsonl").replace("kind: dpo", "kind: simpo").replace("    data:", "    loss: simpoo\n    data:")), ("stages.s.loss", "simpo")),
    Case("yaml-simpo-negative-gamma", lambda f: pipeline_yaml(f, dpo_on("x.jsonl").replace("kind: dpo", "kind: simpo").replace("    data:", "    gamma: -1\n    data:")), ("gamma",)),
    Case("yaml-dpo-loss-weights-count", lambda f: pipeline_yaml(f, dpo_on("x.jsonl").replace("    data:", "    loss_type: [sigmoid, ipo]\n    loss_weights: [1.0]\n    data:")), ("loss_weights", "one weight per loss")),
    Case("override-without-equals", lambda f: pipeline_yaml(f, cpt_on("x.jsonl")) + ["run.seed"], ("run.seed", "KEY=VALUE")),
    Case("override-unknown-key", lambda f: pipeline_yaml(f, cpt_on("x.jsonl")) + ["stages.s.train.nope=1"], ("nope",)),
    Case("output-is-a-file", lambda f: (write(f, "out", "a file"), write(f, "x.jsonl", jsonl(GOOD_TEXT)), run_yaml(f, cpt_on("x.jsonl")))[-1], ("run.output", "is a file")),
    # --- data files (alloy run; the stage fails before training)
    Case("jsonl-invalid-line-strict", data_run("x.jsonl", jsonl([*GOOD_TEXT, "{not json", *GOOD_TEXT]), cpt_on, ", strict: true"), ("x.jsonl:5", "strict"), rc=1),
    Case("jsonl-no-text-field", data_run("x.jsonl", jsonl([{"body": "no text key"}] * 3), cpt_on), ("x.jsonl", "no usable records"), rc=1),
    Case("jsonl-wrong-text-field", data_run("x.jsonl", jsonl(GOOD_TEXT), cpt_on, ", text_field: body"), ("x.jsonl", "body"), rc=1),
    Case("csv-missing-column", data_run("x.csv", "title,body\na,b\nc,d\n", cpt_on), ("x.csv",), rc=1),
    Case("parquet-corrupt", data_run("x.parquet", b"PAR1 this is not parquet PAR1", cpt_on), ("x.parquet", "cannot read"), rc=2),
    Case("txt-empty", data_run("x.txt", "", cpt_on), ("x.txt",), rc=1),
    Case("unknown-extension", data_run("x.xml", "<a/>", cpt_on), ("x.xml", "format"), rc=2),
    Case("data-folder-empty", lambda f: ((f / "d").mkdir(), run_yaml(f, cpt_on("d")))[-1], ("no data files", ".jsonl"), rc=2),
    Case("chat-bad-role-strict", data_run("c.jsonl", jsonl([*GOOD_CHAT, {"messages": [{"role": "robot", "content": "x"}, {"role": "assistant", "content": "y"}]}]), sft_on, ", strict: true"), ("c.jsonl:5", "strict"), rc=1),
    Case("chat-no-assistant", data_run("c.jsonl", jsonl([{"messages": [{"role": "user", "content": "hi"}]}] * 3), sft_on), ("c.jsonl",), rc=1),
    Case("chat-messages-not-list", data_run("c.jsonl", jsonl([{"messages": "hello"}] * 3), sft_on), ("c.jsonl",), rc=1),
    Case("chat-too-long-for-rows", data_run("c.jsonl", jsonl([{"messages": [{"role": "user", "content": "bone " * 200}, {"role": "assistant", "content": "ok"}]}] * 2), sft_on), ("max_seq_length",), rc=1),
    Case("preference-missing-rejected-strict", data_run("p.jsonl", jsonl([*GOOD_PAIR, {"prompt": "a", "chosen": "b"}]), dpo_on, ", strict: true"), ("p.jsonl:5", "strict"), rc=1),
    Case("preference-all-bad", data_run("p.jsonl", jsonl([{"question": "a"}] * 3), dpo_on), ("p.jsonl", "prompt, chosen and rejected"), rc=2),
    Case("preference-gz-corrupt", data_run("p.jsonl.gz", b"\x1f\x8b not gzip at all", dpo_on), ("p.jsonl.gz", "cannot read"), rc=2),
    Case("preference-chosen-equals-rejected-strict", data_run("p.jsonl", jsonl([*GOOD_PAIR, {"prompt": "a", "chosen": "same", "rejected": "same"}]), dpo_on, ", strict: true"), ("p.jsonl:5",), rc=1),
    # --- benchmark files
    Case("mcq-missing-choices", eval_cli("b.jsonl", jsonl([{"question": "q?", "answer": "A"}] * 2)), ("b.jsonl",)),
    Case("mcq-answer-out-of-range-strict", data_run("b.jsonl", jsonl([*GOOD_MCQ, {"question": "q?", "choices": ["a", "b"], "answer": "F"}]), eval_on, ", strict: true"), ("b.jsonl:2", "strict"), rc=1),
    Case("mcq-empty-file", eval_cli("b.jsonl", ""), ("b.jsonl",)),
    Case("mcq-invalid-json", eval_cli("b.jsonl", "{oops\n"), ("b.jsonl",)),
    Case("csv-wrong-columns", eval_cli("b.csv", "q,a\n"), ("b.csv",)),
    Case("benchmark-unknown-extension", eval_cli("b.txt", "what"), ("b.txt", ".jsonl")),
    Case("benchmark-missing", cli("eval", TINY, "--tasks", "{tmp}/nope.jsonl", "--no-save"), ("nope.jsonl",)),
    Case("bigbench-json-wrong-layout", eval_cli("b.json", json.dumps({"examples": "no"})), ("b.json",)),
    Case("perplexity-no-text", eval_cli("t.jsonl", jsonl([{"body": "x"}] * 2), "--type", "perplexity"), ("t.jsonl",)),
    # --- model folders and weight files
    Case("model-missing", lambda f: (write(f, "mcq.jsonl", jsonl(GOOD_MCQ)), ["eval", str(f / "no-model"), "--tasks", str(f / "mcq.jsonl"), "--no-save"])[-1], ("no-model", "does not exist")),
    Case("model-no-config", model_case(drop("config.json")), ("config.json",)),
    Case("model-no-tokenizer", model_case(drop("tokenizer.json", "tokenizer_config.json")), ("tokenizer",)),
    Case("model-pickle-only", model_case(pickle_only), ("allow_pickle: true", "pytorch_model.bin")),
    Case("model-file-not-gguf", model_case(lambda m: None, "model/config.json"), (".gguf",)),
    Case("safetensors-header-too-long", model_case(safetensors_with({}, length=10**9)), ("model.safetensors", "header length")),
    Case("safetensors-header-not-json", model_case(safetensors_with(b"{not json")), ("model.safetensors", "not JSON")),
    Case("safetensors-unknown-dtype", model_case(safetensors_with({"w": {**F32_ENTRY, "dtype": "F31"}}, b"\0" * 8)), ("model.safetensors", "F31")),
    Case("safetensors-offsets-out-of-bounds", model_case(safetensors_with({"w": {**F32_ENTRY, "data_offsets": [0, 8000]}}, b"\0" * 8)), ("model.safetensors", "data_offsets")),
    Case("safetensors-size-mismatch", model_case(safetensors_with({"w": {**F32_ENTRY, "shape": [3]}}, b"\0" * 8)), ("model.safetensors", "bytes for shape")),
    Case("safetensors-too-short", model_case(safetensors_with(b"", length=0) if False else (lambda m: (m / "model.safetensors").write_bytes(b"\1\2"))), ("model.safetensors", "shorter")),
    Case("gguf-truncated", gguf_case(truncated_embedded_gguf), ("model.gguf", "corrupt")),
    Case("gguf-bad-magic", gguf_case(gguf_bytes(magic=b"GGML")), ("model.gguf", "not a GGUF")),
    Case("gguf-bad-version", gguf_case(gguf_bytes(version=99)), ("model.gguf", "version 99")),
    Case("gguf-huge-counts", gguf_case(gguf_bytes(tensors=2**40, entries=2**40)), ("model.gguf", "tensors")),
    Case("gguf-string-past-end", gguf_case(gguf_bytes(entries=1, tail=struct.pack("<Q", 2**50))), ("model.gguf", "past the end")),
    Case("gguf-empty", gguf_case(b""), ("model.gguf", "not a GGUF")),
    # --- merge configs (alloy merge)
    Case("merge-unknown-method", merge_case(f"method: slurp\nbase_model: {TINY}\nmodels: [tiny:llama:1]\n"), ("slurp",)),
    Case("merge-no-models", merge_case(f"method: slerp\nbase_model: {TINY}\n"), ("models",)),
    Case("merge-yaml-syntax", merge_case("method: [slerp\n"), ("merge.yaml",), hint=False),
    Case("merge-shape-mismatch", merge_case(f"method: linear\nbase_model: {TINY}\nmodels: ['{{tmp}}/model']\nparameters: {{weight: 0.5}}\n", prepare=other_shape), ("hidden_size",)),
    Case("merge-vocab-mismatch", merge_case(f"method: linear\nbase_model: {TINY}\nmodels: ['{{tmp}}/model']\nparameters: {{weight: 0.5}}\n", prepare=other_vocab), ("vocab",)),
    Case("merge-output-is-a-file", merge_case(f"method: slerp\nbase_model: {TINY}\nmodels: [tiny:llama:1]\n", output="taken", prepare=lambda f: write(f, "taken", "x")), ("taken", "a file is in the way")),
    Case("merge-mergekit-unknown-key", merge_case(f"merge_method: slerp\nbase_model: {TINY}\nslices: []\nwhatever: 1\n"), ("whatever",)),
    Case("merge-bad-shard-size", merge_case(f"method: slerp\nbase_model: {TINY}\nmodels: [tiny:llama:1]\nmax_shard_size: 5XB\n"), ("merge.yaml", "max_shard_size", "5XB")),
    Case("merge-bad-shard-size-flag", lambda f: merge_case(f"method: slerp\nbase_model: {TINY}\nmodels: [tiny:llama:1]\n")(f) + ["--max-shard-size", "0"], ("max_shard_size", "positive")),
    # every method's required parameters and model counts, refused by `alloy validate` (before
    # any stage runs) and by `alloy merge` before a tensor is read
    *METHOD_CASES,
    Case("merge-parent-missing", merge_case(f"method: slerp\nbase_model: {TINY}\nmodels: ['{{tmp}}/nowhere']\n"), ("nowhere",)),
    # --- CLI misuse
    Case("cli-unknown-command", cli("frobnicate"), ("frobnicate",), hint=False),
    Case("cli-run-without-file", cli("run"), ("pipeline",), hint=False),
    Case("cli-unknown-flag", cli("validate", "p.yaml", "--frob"), ("--frob",), hint=False),
    Case("cli-only-unknown-stage", lambda f: (write(f, "x.jsonl", jsonl(GOOD_TEXT)), run_yaml(f, cpt_on("x.jsonl")) + ["--only", "nope"])[-1], ("nope", "stages: s")),
    Case("cli-force-unknown-stage", lambda f: (write(f, "x.jsonl", jsonl(GOOD_TEXT)), run_yaml(f, cpt_on("x.jsonl")) + ["--force", "nope"])[-1], ("nope",)),
    Case("cli-lineage-not-an-artifact", cli("lineage", "{tmp}"), ("alloy.json",)),
    Case("cli-eval-no-tasks", cli("eval", TINY), ("--tasks",), hint=False),
    Case("cli-merge-config-missing", cli("merge", "{tmp}/nope.yaml", "{tmp}/out"), ("nope.yaml",)),
    Case("cli-num-processes-not-int", cli("run", "p.yaml", "--num-processes", "two"), ("two",), hint=False),
]  # fmt: skip


def run_cli(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse
        code = exit_.code if isinstance(exit_.code, int) else 2
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_the_corpus_is_large_enough():
    assert len(CASES) + len(TEACHER_ANSWERED_CASES) + len(TEACHER_FAILED_CASES) >= 60
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_gets_a_clear_message(case: Case, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = case.setup(tmp_path)
    code, output = run_cli(argv, capsys)
    assert "Traceback" not in output, output[-3000:]
    assert code == case.rc, output[-3000:]
    for needle in case.says:
        assert needle.replace("{tmp}", str(tmp_path)) in output, (needle, output[-3000:])
    if case.hint:
        assert "hint" in output, output[-3000:]


# ------------------------------------------------------------------ teacher replies (distill)
class BadTeacher(faults._Teacher):
    """Loopback teacher that answers every request the same bad way."""

    status = 200
    body = b""

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)


# name -> (HTTP status, body, the reason the chunk is counted under)
# A teacher that answered, with content we cannot use: the chunk is counted, the run finishes.
TEACHER_ANSWERED_CASES = {
    "teacher-unparsable-qa": (
        200,
        json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": "no pairs"}}]}
        ).encode(),
        "no_qa_pairs",
    ),
}
# name -> (HTTP status, body, what the error says): a teacher that never answered stops the run
# with an error naming it (issue 27), instead of finishing with nothing distilled
TEACHER_FAILED_CASES = {
    "teacher-not-json": (200, b"<html>gateway</html>", "not JSON"),
    "teacher-no-choices": (200, json.dumps({"choices": []}).encode(), "no choices[0]"),
    "teacher-http-500": (500, b'{"error": "boom"}', "HTTP 500: boom"),
    "teacher-http-401": (401, b'{"error": "bad key"}', "set teacher.api_key_env"),
}


def _distill_against(tmp_path, capsys, monkeypatch, status, body):
    import threading
    from http.server import ThreadingHTTPServer

    handler = type("T", (BadTeacher,), {"status": status, "body": body})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        write(tmp_path, "docs.jsonl", jsonl([{"text": "the heart pumps blood " * 20}]))
        write(
            tmp_path,
            "d.yaml",
            f"paths: [{tmp_path}/docs.jsonl]\ngenerators: [qa]\nmax_chunks: 2\n"
            f"teacher: {{type: openai, model: x, base_url: 'http://127.0.0.1:{server.server_address[1]}/v1', "
            "max_retries: 0, backoff_s: 0, concurrency: 1}\n",
        )
        monkeypatch.chdir(tmp_path)
        return run_cli(
            ["distill", "run", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "o")], capsys
        )
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(TEACHER_ANSWERED_CASES))
def test_bad_teacher_replies_are_counted_not_crashing(name, tmp_path, capsys, monkeypatch):
    status, body, reason = TEACHER_ANSWERED_CASES[name]
    code, output = _distill_against(tmp_path, capsys, monkeypatch, status, body)
    assert "Traceback" not in output, output[-3000:]
    # the run finishes; the chunk is counted as failed, under its reason
    assert code == 0, output[-3000:]
    assert f"rejected qa:{reason}: 1" in output, output[-3000:]


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(TEACHER_FAILED_CASES))
def test_teacher_that_never_answers_stops_with_its_name(name, tmp_path, capsys, monkeypatch):
    status, body, says = TEACHER_FAILED_CASES[name]
    code, output = _distill_against(tmp_path, capsys, monkeypatch, status, body)
    assert "Traceback" not in output, output[-3000:]
    assert code == 2, output[-3000:]
    assert "no teacher call succeeded" in output and "teacher openai:http://127.0.0.1:" in output
    assert says in output, output[-3000:]


def test_teacher_key_env_not_set(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("ALLOY_NO_SUCH_KEY", raising=False)
    write(tmp_path, "docs.jsonl", jsonl([{"text": "the heart pumps blood " * 20}]))
    write(
        tmp_path,
        "d.yaml",
        f"paths: [{tmp_path}/docs.jsonl]\ngenerators: [qa]\n"
        "teacher: {type: openai, model: x, base_url: 'http://127.0.0.1:9/v1', api_key_env: ALLOY_NO_SUCH_KEY}\n",
    )
    code, output = run_cli(
        ["distill", "run", str(tmp_path / "d.yaml"), "--out", str(tmp_path / "o")], capsys
    )
    assert code == 2 and "Traceback" not in output
    assert "ALLOY_NO_SUCH_KEY" in output and "teacher.api_key_env" in output and "hint" in output
