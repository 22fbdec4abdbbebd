"""`alloy render PROMPT_OR_TRANSCRIPT --base MODEL [--lora LORA] -o OUT.png`: an image from a prompt.

PROMPT_OR_TRANSCRIPT is the prompt itself, a .txt file, or a transcript JSON from
`alloy converse` (the image_prompt script: its last turn's JSON "prompt"). Needs the `images`
extra (diffusers) and a CUDA GPU; both are checked before any model loads.
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "prompt",
        metavar="PROMPT_OR_TRANSCRIPT",
        help="the prompt text, a .txt file, or a transcript JSON written by `alloy converse`",
    )
    parser.add_argument(
        "--base", required=True, help="FLUX base model: a diffusers folder or hub id"
    )
    parser.add_argument(
        "--lora", default=None, help="LoRA: a folder, a .safetensors file or hub id"
    )
    parser.add_argument(
        "--lora-weight-name",
        default=None,
        help="the LoRA's weight file inside --lora (e.g. leaf-flux.safetensors)",
    )
    parser.add_argument("-o", "--out", required=True, help="the image file (.png, .jpg, .webp)")
    parser.add_argument(
        "--prefix",
        default="",
        help="text put before the prompt, e.g. a LoRA's trigger word ('<leaf microstructure>')",
    )
    parser.add_argument("--steps", type=int, default=25, help="denoising steps (the study: 25)")
    parser.add_argument("--guidance", type=float, default=3.5, help="guidance (the study: 3.5)")
    parser.add_argument("--dtype", default="bfloat16", help="bfloat16, float16 or float32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=None)
    parser.add_argument("--height", type=int, default=None)
    parser.add_argument(
        "--offload", action="store_true", help="CPU offload: less GPU memory, slower"
    )


def run(args: argparse.Namespace) -> int:
    from alloylm.chat.images import (
        RenderSettings,
        check_settings,
        prompt_from_argument,
        render_settings,
        require_diffusers_and_cuda,
    )

    prompt, where = prompt_from_argument(args.prompt)
    if args.prefix:
        prompt = f"{args.prefix.strip()} {prompt}"
    settings = RenderSettings(
        prompt=prompt,
        base_model=args.base,
        lora=args.lora,
        lora_weight_name=args.lora_weight_name,
        steps=args.steps,
        guidance=args.guidance,
        dtype=args.dtype,
        seed=args.seed,
        width=args.width,
        height=args.height,
        offload=args.offload,
    )
    check_settings(settings, args.out)  # before the message below and any model loads
    require_diffusers_and_cuda()
    print(f"prompt (from {where}): {prompt}", flush=True)
    path = render_settings(settings, args.out, extra={"prompt_from": where})
    print(f"wrote {path} (settings in {path.name}.json)")
    return 0
