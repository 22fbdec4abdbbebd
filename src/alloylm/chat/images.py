"""Render an image prompt with `diffusers`: a FLUX base model and, optionally, a LoRA.

The study's image-prompt workflow (recipes/conversations/image_prompt.yaml) ends with a short
prompt; the study rendered it with FLUX.1-dev and a LoRA trained on leaf microstructures
(lamm-mit/leaf-FLUX.1-dev, weight file leaf-flux.safetensors, trigger `<leaf microstructure>`)
at 25 steps, guidance 3.5, in bf16. Those are the defaults here.

Optional: `pip install 'alloylm[images]'` (diffusers) and a CUDA GPU (FLUX.1 in bf16 wants
~24 GB of GPU memory, less with `offload`). Both are checked before anything loads, with a
message saying what to do. Weights load from safetensors only (`use_safetensors=True`), like
every other model alloylm loads.

`final_prompt` picks the prompt out of a transcript JSON written by `alloy converse`
(chat/conversations.py): the last turn's JSON field "prompt" when it parsed, else the last
assistant message.
"""

from __future__ import annotations

import importlib.util
import json
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from alloylm.errors import ConfigError, DataError

DTYPES = ("bfloat16", "float16", "float32")
IMAGE_SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}
EXTRA_HINT = "pip install 'alloylm[images]'  (or pip install 'diffusers>=0.30')"


@dataclass(frozen=True)
class RenderSettings:
    """Everything that decides the image (written beside it as OUT.json)."""

    prompt: str
    base_model: str
    lora: str | None = None
    lora_weight_name: str | None = None
    steps: int = 25
    guidance: float = 3.5
    dtype: str = "bfloat16"
    seed: int = 0
    width: int | None = None  # None: the pipeline's default (1024 for FLUX.1)
    height: int | None = None
    offload: bool = False  # diffusers' model CPU offload: less GPU memory, slower


def check_settings(settings: RenderSettings, out: str | Path) -> Path:
    """The output path, or ConfigError naming the option that is wrong."""
    if not settings.prompt.strip():
        raise ConfigError("the prompt is empty", key="PROMPT", hint="give a prompt or a transcript")
    if not settings.base_model:
        raise ConfigError(
            "no base model", key="--base", hint="e.g. --base black-forest-labs/FLUX.1-dev"
        )
    if settings.steps < 1:
        raise ConfigError(
            f"steps must be at least 1, got {settings.steps}", key="--steps", hint="the study: 25"
        )
    if settings.guidance < 0:
        raise ConfigError(
            f"guidance must be >= 0, got {settings.guidance}",
            key="--guidance",
            hint="the study: 3.5",
        )
    if settings.dtype not in DTYPES:
        raise ConfigError(
            f"dtype {settings.dtype!r} is not one of {', '.join(DTYPES)}",
            key="--dtype",
            hint="bfloat16 (the study's) on a GPU that has it, else float16",
        )
    for name, value in (("--width", settings.width), ("--height", settings.height)):
        if value is not None and (value < 16 or value % 16):
            raise ConfigError(
                f"{name} must be a multiple of 16 (FLUX's latent patches), got {value}",
                key=name,
                hint="e.g. 1024 or 768",
            )
    if settings.lora_weight_name and not settings.lora:
        raise ConfigError("--lora-weight-name needs --lora", key="--lora-weight-name")
    path = Path(out)
    if path.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(
            f"the output {str(path)!r} has no image suffix",
            key="-o",
            hint=f"end it with one of {', '.join(IMAGE_SUFFIXES)}",
        )
    if path.is_dir():
        raise ConfigError(f"the output {str(path)!r} is a folder", key="-o", hint="name a file")
    return path


def diffusers_installed() -> bool:
    return importlib.util.find_spec("diffusers") is not None


def cuda_available() -> bool:
    import torch

    return bool(torch.cuda.is_available())


def require_diffusers_and_cuda() -> None:
    """ConfigError (with what to do) when diffusers is not installed or there is no CUDA GPU."""
    if not diffusers_installed():
        raise ConfigError(
            "rendering images needs the diffusers package, which is not installed",
            key="images",
            hint=EXTRA_HINT,
        )
    if not cuda_available():
        raise ConfigError(
            "rendering with FLUX needs a CUDA GPU; this machine has none "
            "(torch.cuda.is_available() is False)",
            key="images",
            hint="run `alloy render` on a machine with an NVIDIA GPU (FLUX.1 in bf16: ~24 GB; "
            "--offload needs less)",
        )


def final_prompt(transcript: Mapping[str, Any], *, source: str = "transcript") -> tuple[str, str]:
    """(prompt, where it came from) from a transcript's JSON form.

    The image_prompt script's last turn answers {"prompt": ...}: when that parsed, its string is
    the prompt. Otherwise (another script, or JSON the model broke) the last assistant message.
    """
    turns = transcript.get("turns")
    if isinstance(turns, list) and turns and isinstance(turns[-1], Mapping):
        last = turns[-1]
        value = (last.get("json") or {}).get("value")
        prompt = value.get("prompt") if isinstance(value, Mapping) else None
        if isinstance(prompt, str) and prompt.strip():
            name = last.get("name") or f"turn {last.get('index', len(turns) - 1)}"
            return prompt.strip(), f"the JSON field 'prompt' of turn {name!r}"
    messages = transcript.get("messages")
    if isinstance(messages, list):
        for message in reversed(messages):
            if not isinstance(message, Mapping) or message.get("role") != "assistant":
                continue
            content = message.get("content")
            if isinstance(content, str) and content.strip():
                return content.strip(), "the last assistant message"
    raise DataError(
        "the transcript has no prompt: no last turn with a JSON 'prompt' and no assistant message",
        file=source,
        hint="give a transcript JSON written by `alloy converse` (e.g. the image_prompt script)",
    )


def prompt_from_argument(argument: str) -> tuple[str, str]:
    """(prompt, where it came from): a transcript .json, a .txt file, or the prompt itself."""
    path = Path(argument)
    named_file = path.suffix.lower() in (".json", ".txt")
    if not named_file or (any(c.isspace() for c in argument) and not path.is_file()):
        return argument, "the command line"  # a prompt may end in ".txt"; a file name has no blanks
    if not path.is_file():
        raise DataError(
            "no such file",
            file=argument,
            hint="give a transcript JSON from `alloy converse`, a .txt file, or the prompt text",
        )
    if path.suffix.lower() == ".txt":
        return path.read_text(encoding="utf-8").strip(), str(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise DataError(
            f"not valid JSON ({error})",
            file=argument,
            hint="give a transcript JSON written by `alloy converse`",
        ) from None
    if not isinstance(data, Mapping):
        raise DataError(
            "a transcript is a JSON object, this is not",
            file=argument,
            hint="give a transcript JSON written by `alloy converse`",
        )
    prompt, where = final_prompt(data, source=argument)
    return prompt, f"{argument}: {where}"


def render(
    prompt: str,
    base_model: str,
    lora: str | None = None,
    *,
    steps: int = 25,
    guidance: float = 3.5,
    dtype: str = "bfloat16",
    seed: int = 0,
    out: str | Path,
    lora_weight_name: str | None = None,
    width: int | None = None,
    height: int | None = None,
    offload: bool = False,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Render `prompt` with the FLUX `base_model` (+ `lora`) to `out`; returns the image path."""
    settings = RenderSettings(
        prompt=prompt,
        base_model=base_model,
        lora=lora,
        lora_weight_name=lora_weight_name,
        steps=steps,
        guidance=guidance,
        dtype=dtype,
        seed=seed,
        width=width,
        height=height,
        offload=offload,
    )
    return render_settings(settings, out, extra=extra)


def render_settings(
    settings: RenderSettings, out: str | Path, *, extra: Mapping[str, Any] | None = None
) -> Path:
    """`render` for settings already gathered.

    Checks everything first (options, diffusers, CUDA), then writes the image through a
    temporary file and a rename, and OUT.json beside it with the settings (and `extra`, e.g.
    where the prompt came from).
    """
    path = check_settings(settings, out)
    require_diffusers_and_cuda()
    image = _generate(settings)
    from alloylm.atomic import atomic_write_json, temporary_sibling

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_sibling(path)
    try:
        image.save(tmp, format=IMAGE_SUFFIXES[path.suffix.lower()])
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    import diffusers

    record = {**asdict(settings), "diffusers": diffusers.__version__, **(extra or {})}
    atomic_write_json(path.with_name(path.name + ".json"), record)
    return path


def _generate(settings: RenderSettings) -> Any:
    """One image (a PIL image) from diffusers' pipeline for the base model."""
    import torch
    from diffusers import DiffusionPipeline

    pipeline = DiffusionPipeline.from_pretrained(
        settings.base_model, torch_dtype=getattr(torch, settings.dtype), use_safetensors=True
    )
    if settings.lora:
        lora, weight_name = settings.lora, settings.lora_weight_name
        if Path(lora).is_file():  # a .safetensors file: its folder and its name
            lora, weight_name = str(Path(lora).parent), Path(lora).name
        pipeline.load_lora_weights(lora, weight_name=weight_name, use_safetensors=True)
    if settings.offload:
        pipeline.enable_model_cpu_offload()
    else:
        pipeline = pipeline.to("cuda")
    size = {
        k: v for k, v in (("width", settings.width), ("height", settings.height)) if v is not None
    }
    result = pipeline(
        settings.prompt,
        num_inference_steps=settings.steps,
        guidance_scale=settings.guidance,
        # A CPU generator: the same seed gives the same starting noise on any GPU.
        generator=torch.Generator("cpu").manual_seed(settings.seed),
        **size,
    )
    return result.images[0]
