"""Fault injection: real `alloy run` subprocesses killed with SIGKILL while a stage runs.

Shared by the fast trials (tests/component/test_fault_injection.py) and the slow tier
(tests/integration/test_fault_injection_many.py). Everything runs on tiny:llama with a few steps,
offline; the distill teacher is a loopback OpenAI-compatible server in the test process whose
replies depend only on the prompt, so a resumed distillation must equal an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
API_KEY_ENV = "ALLOY_FAULT_TEACHER_KEY"
API_KEY = "sk-fault-injection-" + "7f3a9c" * 4  # a value that must never be written anywhere

WORDS = [
    "cell",
    "membrane",
    "protein",
    "nucleus",
    "tissue",
    "organ",
    "muscle",
    "bone",
    "nerve",
    "blood",
    "heart",
    "lung",
    "kidney",
    "liver",
    "enzyme",
    "hormone",
    "receptor",
    "neuron",
    "synapse",
    "artery",
    "vein",
    "plasma",
    "collagen",
    "cartilage",
    "tendon",
]


# --------------------------------------------------------------------------- loopback teacher
class _Teacher(BaseHTTPRequestHandler):
    delay_s = 0.0
    seen_keys: list[str] = []

    def log_message(self, *args):  # noqa: ANN002 - silence the default stderr log
        pass

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
        type(self).seen_keys.append(self.headers.get("Authorization", ""))
        time.sleep(self.delay_s)
        prompt = json.dumps(body.get("messages", []), sort_keys=True)
        digest = hashlib.sha256(prompt.encode()).hexdigest()
        words = [WORDS[int(digest[i : i + 2], 16) % len(WORDS)] for i in range(0, 12, 2)]
        text = "\n".join(
            f"Q: What links the {words[i]} and the {words[i + 1]} ({digest[:6]}-{i})?\n"
            f"A: The {words[i]} acts on the {words[i + 1]} through the {words[(i + 2) % 6]}."
            for i in range(3)
        )
        reply = {
            "id": "x",
            "object": "chat.completion",
            "model": body.get("model", "t"),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text}}],
            "usage": {"prompt_tokens": len(prompt) // 4, "completion_tokens": len(text) // 4},
        }
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextmanager
def loopback_teacher(delay_s: float = 0.0) -> Iterator[tuple[str, list[str]]]:
    """An OpenAI-compatible chat server on 127.0.0.1 answering deterministically.

    Yields (base_url, the Authorization headers it received)."""
    seen: list[str] = []
    handler = type("Teacher", (_Teacher,), {"delay_s": delay_s, "seen_keys": seen})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1", seen
    finally:
        server.shutdown()
        server.server_close()


# --------------------------------------------------------------------------- data and pipeline
def write_data(folder: Path) -> dict[str, str]:
    """Small text, chat, preference, benchmark and document files; returns their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(0)

    def sentence(n: int = 12) -> str:
        return " ".join(rng.choice(WORDS) for _ in range(n)) + "."

    def jsonl(name: str, rows: list[dict]) -> str:
        path = folder / name
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return str(path)

    return {
        "text": jsonl("text.jsonl", [{"text": sentence(30)} for _ in range(12)]),
        "docs": jsonl(
            "docs.jsonl", [{"text": " ".join(sentence() for _ in range(8))} for _ in range(2)]
        ),
        "chat": jsonl(
            "chat.jsonl",
            [
                {
                    "messages": [
                        {"role": "user", "content": sentence(6)},
                        {"role": "assistant", "content": sentence(8)},
                    ]
                }
                for _ in range(8)
            ],
        ),
        "pref": jsonl(
            "pref.jsonl",
            [
                {"prompt": sentence(6), "chosen": sentence(5), "rejected": sentence(5)}
                for _ in range(8)
            ],
        ),
        "mcq": jsonl(
            "mcq.jsonl",
            [
                {
                    "id": f"q{i}",
                    "question": sentence(8)[:-1] + "?",
                    "choices": [rng.choice(WORDS) for _ in range(4)],
                    "answer": "ABCD"[i % 4],
                }
                for i in range(6)
            ],
        ),
    }


def _train(steps: int, **extra) -> dict:
    return {
        "max_steps": steps,
        "max_seq_length": 32,
        "per_device_batch_size": 2,
        "learning_rate": 1e-3,
        "lr_scheduler": "constant",
        "save_steps": 1,
        "optimizer": "adamw_torch",
        **extra,
    }


def stage_configs(data: dict[str, str], teacher_url: str | None, steps: int = 3) -> dict:
    """Every stage kind, each as independent of the others as it can be (trials kill one)."""
    stages: dict[str, dict] = {
        "cpt": {"kind": "cpt", "model": "tiny:llama", "data": [{"path": data["text"]}],
                "train": _train(steps)},
        "sft": {"kind": "sft", "model": "tiny:llama", "data": [{"path": data["chat"]}],
                "train": _train(steps, max_seq_length=96)},
        "dpo": {"kind": "dpo", "model": "tiny:llama", "data": [{"path": data["pref"]}],
                "max_prompt_length": 48, "train": _train(steps, max_seq_length=80)},
        "orpo": {"kind": "orpo", "model": "tiny:llama", "data": [{"path": data["pref"]}],
                 "max_prompt_length": 48, "train": _train(steps, max_seq_length=80)},
        "simpo": {"kind": "simpo", "model": "tiny:llama", "data": [{"path": data["pref"]}],
                  "max_prompt_length": 48, "train": _train(steps, max_seq_length=80)},
        "merge": {"kind": "merge", "method": "slerp", "base_model": "tiny:llama",
                  "models": ["tiny:llama:1"], "parameters": {"t": 0.3}},
        "eval": {"kind": "eval", "models": ["tiny:llama", "${stages.merge.output}"],
                 "protocols": ["cloze"], "resamples": 10, "workers": 1, "cache": False,
                 "tasks": [{"path": data["mcq"], "type": "mcq", "name": "mcq"},
                           {"path": data["text"], "type": "perplexity", "name": "ppl",
                            "limit": 4, "max_length": 32}]},
    }  # fmt: skip
    if teacher_url:
        stages["distill"] = {
            "kind": "distill",
            "paths": [data["docs"]],
            "chunking": {"max_tokens": 24, "overlap": 4},
            "max_chunks": 6,
            "generators": ["qa"],
            "teacher": {
                "type": "openai",
                "base_url": teacher_url,
                "model": "fake",
                "api_key_env": API_KEY_ENV,
                "concurrency": 1,
                "max_retries": 0,
            },
        }
    return stages


def write_pipeline(folder: Path, stages: dict, *, output: str = "out", seed: int = 7) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "pipeline.yaml"
    doc = {"run": {"name": "faults", "seed": seed, "output": output}, "stages": stages}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# --------------------------------------------------------------------------- running and killing
def alloy_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            API_KEY_ENV: API_KEY,
            "OMP_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
            "TOKENIZERS_PARALLELISM": "false",
            "PYTHONUNBUFFERED": "1",
            "COLUMNS": "200",
        }
    )
    return env


def alloy_command(pipeline: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "alloylm.cli.main", "run", str(pipeline), *args]


@dataclass
class Completed:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        """Everything it printed (the console writes to stderr)."""
        return self.stdout + self.stderr


def run_alloy(pipeline: Path, *args: str, timeout: float = 400) -> Completed:
    done = subprocess.run(
        alloy_command(pipeline, *args),
        cwd=pipeline.parent,
        env=alloy_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return Completed(done.returncode, done.stdout, done.stderr)


@dataclass
class Kill:
    stage: str
    killed: bool  # False: the stage (or the run) finished before the kill came
    delay_s: float
    log: str = ""
    # the kill found the stage still building (kill_during's still_building), not exiting after it
    inside_build: bool = False


def stage_running(output: Path, stage: str) -> bool:
    """A stage is inside its build: its temporary folder exists beside the artifact."""
    return any(output.glob(f".{stage}.tmp-*"))


def kill_during(
    pipeline: Path, output: Path, stage: str, rng: random.Random, max_delay_s: float,
    *args: str, deadline_s: float = 300, still_building: Callable[[], bool] | None = None,
) -> Kill:  # fmt: skip
    """Start `alloy run`, wait until `stage` is building, sleep a seeded random delay, SIGKILL.

    The process group is stopped before the kill, and `still_building` (default: the stage's
    temporary folder exists) is asked then, so `Kill.inside_build` says what the kill found."""
    log_path = pipeline.parent / f"kill-{stage}-{time.time_ns()}.log"
    delay = rng.uniform(0, max_delay_s)
    with open(log_path, "w") as log:
        process = subprocess.Popen(
            alloy_command(pipeline, *args),
            cwd=pipeline.parent,
            env=alloy_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        started = time.monotonic()
        try:
            while not stage_running(output, stage):
                if process.poll() is not None or time.monotonic() - started > deadline_s:
                    return Kill(stage, False, delay, log_path.read_text())
                time.sleep(0.02)
            time.sleep(delay)
            # freeze first: what is on disk cannot change between the look and the kill
            _signal_group(process.pid, signal.SIGSTOP)
            killed = process.poll() is None
            inside_build = killed and (still_building or partial(stage_running, output, stage))()
            _kill_group(process.pid)
        finally:
            if process.poll() is None:
                _kill_group(process.pid)
            process.wait(timeout=60)
    return Kill(stage, killed, delay, log_path.read_text(), inside_build)


def _signal_group(pid: int, signum: int) -> None:
    with suppress(ProcessLookupError):  # it ended on its own just now
        os.killpg(pid, signum)


def _kill_group(pid: int) -> None:
    _signal_group(pid, signal.SIGKILL)


# --------------------------------------------------------------------------- checks
def leftover_temporaries(output: Path) -> list[Path]:
    return [p for p in output.rglob("*") if ".tmp-" in p.name]


def check_artifacts_whole(output: Path) -> list[str]:
    """Every `<output>/<stage>` folder is complete: alloy.json parses and its files read."""
    problems = []
    if not output.is_dir():
        return problems
    for folder in sorted(p for p in output.iterdir() if p.is_dir() and not p.name.startswith(".")):
        manifest = folder / "alloy.json"
        try:
            meta = json.loads(manifest.read_text())
        except (OSError, ValueError) as error:
            problems.append(f"{folder.name}: alloy.json unreadable ({error})")
            continue
        for file in folder.rglob("*"):
            try:
                if file.suffix == ".json":
                    json.loads(file.read_text())
                elif file.suffix == ".jsonl":
                    for line in file.read_text().splitlines():
                        json.loads(line)
                elif file.suffix == ".safetensors":
                    from safetensors import safe_open

                    with safe_open(str(file), "pt") as handle:
                        for name in handle.keys():  # noqa: SIM118 - safe_open, not a dict
                            handle.get_tensor(name)
            except Exception as error:  # noqa: BLE001 - any failure to read is the finding
                problems.append(f"{folder.name}/{file.relative_to(folder)}: {error}")
        if meta.get("produces") == "model" and not (folder / "config.json").is_file():
            problems.append(f"{folder.name}: model without config.json")
    return problems


def manifest(output: Path, stage: str) -> dict:
    return json.loads((output / stage / "alloy.json").read_text())


def loss_curve(output: Path, stage: str) -> list[float]:
    return [loss for _, loss in manifest(output, stage)["metrics"]["loss_history"]]


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    out = {}
    for file in sorted(folder.glob("*.safetensors")):
        out.update(load_file(str(file)))
    return out


def file_bytes(folder: Path, suffixes: tuple[str, ...] = (".jsonl",)) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.suffix in suffixes
    }


def eval_scores(output: Path, stage: str = "eval") -> dict:
    """The scores of an eval artifact, without timings."""
    text = json.dumps(manifest(output, stage)["metrics"]).replace(str(output.resolve()), "<out>")
    return _strip_timings(json.loads(text))


def _strip_timings(value):
    if isinstance(value, dict):
        return {
            k: _strip_timings(v)
            for k, v in value.items()
            if not any(word in k for word in ("time", "wall", "second", "_s", "per_s"))
        }
    if isinstance(value, list):
        return [_strip_timings(v) for v in value]
    return value


@dataclass
class Trial:
    stage: str
    seed: int
    kills: list[Kill] = field(default_factory=list)


# --------------------------------------------------------------------------- one trial
# Seconds a kill may wait once the stage's build has begun (about its length on tiny:llama).
KILL_WINDOW_S = {
    "cpt": 6.0, "sft": 6.0, "dpo": 6.0, "orpo": 6.0, "simpo": 6.0, "merge": 0.4, "eval": 2.0,
    "distill": 2.0,
}  # fmt: skip
# A killed rebuild must land inside the build. A tiny merge builds in ~0.2 s on an idle CPU and
# its process lives ~0.5 s after the commit, so a late kill still finds it alive (seen in CI).
REBUILD_KILL_WINDOW_S = {"cpt": 3.0, "merge": 0.05, "eval": 1.0, "distill": 1.0}
TRAINING = ("cpt", "sft", "dpo", "orpo", "simpo")


def pipeline_for(kind: str, data: dict[str, str], teacher_url: str | None, **changes) -> dict:
    """The stages a trial of `kind` needs: the stage itself (eval also needs merge)."""
    every = stage_configs(data, teacher_url)
    names = ["merge", "eval"] if kind == "eval" else [kind]
    stages = {name: every[name] for name in names}
    for key, value in changes.items():
        stages[kind][key] = value
    return stages


def outcome_of(output: Path, kind: str) -> dict:
    """What must equal between an interrupted-then-resumed run and an uninterrupted one."""
    folder = output / kind
    if kind in TRAINING:
        return {
            "loss": loss_curve(output, kind),
            "steps": manifest(output, kind)["metrics"]["steps"],
        }
    if kind == "merge":
        return {"tensors": tensors(folder)}
    if kind == "eval":
        return {"scores": eval_scores(output)}
    return {"files": file_bytes(folder)}


def assert_same_outcome(kind: str, resumed: dict, baseline: dict) -> None:
    import pytest
    import torch

    if kind in TRAINING:
        assert resumed["steps"] == baseline["steps"]
        # the curve continues where it stopped: every step is there once, values as uninterrupted
        assert resumed["loss"] == pytest.approx(baseline["loss"], rel=1e-4, abs=1e-5)
    elif kind == "merge":
        assert resumed["tensors"].keys() == baseline["tensors"].keys()
        for name, tensor in baseline["tensors"].items():
            assert torch.equal(resumed["tensors"][name], tensor), name
    else:
        assert resumed == baseline


def run_trial(
    root: Path, kind: str, seed: int, baseline: dict, teacher_url: str | None, data: dict
) -> Kill:
    """Kill `alloy run` while `kind` builds, check what is on disk, rerun, compare with baseline."""
    rng = random.Random(f"{kind}-{seed}")
    pipeline = write_pipeline(root, pipeline_for(kind, data, teacher_url))
    output = root / "out"
    kill = kill_during(pipeline, output, kind, rng, KILL_WINDOW_S[kind])
    assert "Traceback" not in kill.log, kill.log[-3000:]
    assert check_artifacts_whole(output) == [], f"half-written artifact after kill ({kill})"
    state = output / ".alloy" / "state" / kind / "checkpoints"
    from alloylm.train.checkpoints import latest_checkpoint

    resume_from = latest_checkpoint(state) if kind in TRAINING else None

    rerun = run_alloy(pipeline)
    assert rerun.returncode == 0, rerun.output[-3000:]
    assert "Traceback" not in rerun.output
    assert leftover_temporaries(output) == [], "temporaries were not cleaned"
    assert check_artifacts_whole(output) == []
    if resume_from is not None and kill.killed:
        assert f"resuming from {resume_from.name}" in rerun.output, rerun.output[-2000:]
        assert manifest(output, kind)["metrics"]["resumed_from_step"] == int(
            resume_from.name.split("-")[1]
        )
    assert_same_outcome(kind, outcome_of(output, kind), baseline)
    assert files_holding(root, API_KEY) == [] and API_KEY not in kill.log + rerun.output
    return kill


def files_holding(root: Path, secret: str) -> list[Path]:
    """Every file under `root` whose bytes contain `secret`."""
    needle = secret.encode()
    return [p for p in root.rglob("*") if p.is_file() and needle in p.read_bytes()]


def baseline_outcome(root: Path, kind: str, teacher_url: str | None, data: dict) -> dict:
    pipeline = write_pipeline(root, pipeline_for(kind, data, teacher_url))
    done = run_alloy(pipeline)
    assert done.returncode == 0, done.output[-3000:]
    return outcome_of(root / "out", kind)


def _same_hash(output: Path, kind: str, content_hash: str) -> bool:
    return manifest(output, kind)["content_hash"] == content_hash


def killed_rebuild_keeps_the_good_artifact(
    root: Path, kind: str, changes: dict, teacher_url: str | None, data: dict, seed: int = 0
) -> None:
    """Change the config of a built `kind` in `root`, kill the rebuild: the old artifact stays
    whole and usable (the old configuration still finds it built)."""
    output = root / "out"
    rng = random.Random(seed)
    window = REBUILD_KILL_WINDOW_S[kind]
    for attempt in range(4):
        pipeline = write_pipeline(root, pipeline_for(kind, data, teacher_url))
        if attempt or not (output / kind / "alloy.json").is_file():
            assert run_alloy(pipeline).returncode == 0
        before = manifest(output, kind)
        before_outcome = outcome_of(output, kind)
        changed = write_pipeline(root, pipeline_for(kind, data, teacher_url, **changes))
        kill = kill_during(
            changed, output, kind, rng, window,
            still_building=partial(_same_hash, output, kind, before["content_hash"]),
        )  # fmt: skip
        if kill.inside_build:
            break
        # The rebuild committed before the kill came (a tiny merge builds in ~0.2 s): that tests
        # nothing, so put the old artifact back and try again with a shorter wait.
        window /= 4
    assert kill.inside_build, f"every rebuild committed before its kill ({kill})"
    assert manifest(output, kind)["content_hash"] == before["content_hash"]
    assert check_artifacts_whole(output) == []
    assert_same_outcome(kind, outcome_of(output, kind), before_outcome)
    again = run_alloy(write_pipeline(root, pipeline_for(kind, data, teacher_url)))
    assert again.returncode == 0, again.output[-3000:]
    assert f"skip  {kind} ({kind})" in again.output, again.output[-2000:]
