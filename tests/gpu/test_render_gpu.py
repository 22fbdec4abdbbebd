"""`alloy render` on a CUDA GPU: a tiny random FLUX pipeline (diffusers' own test sizes) and a
LoRA on its transformer, both built here and saved as safetensors folders, rendered through the
same code as FLUX.1-dev with the study's LoRA, in bf16. Checks: an image of the asked size is
written with its settings beside it, the same seed gives the same image, and the LoRA changes it.

With ALLOY_FLUX_BASE (a FLUX.1 folder or hub id in the local cache) and optionally ALLOY_FLUX_LORA
(and ALLOY_FLUX_LORA_WEIGHT, e.g. lamm-mit/leaf-FLUX.1-dev + leaf-flux.safetensors), a second
test renders the image_prompt workflow's kind of prompt with the real models at 25 steps.
Skipped without CUDA or without diffusers (`pip install 'alloylm[images]'`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


def _word_tokenizer(max_length: int):
    """A word-level fast tokenizer (FLUX's pipeline only pads, truncates and returns ids)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    words = ["<pad>", "<unk>", "</s>", "a", "leaf", "vein", "lattice", "of", "green", "resin"]
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="</s>",
        model_max_length=max_length,
    )


def tiny_flux(folder: Path) -> Path:
    """A random FLUX pipeline of diffusers' test sizes, saved as a diffusers folder."""
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        FluxPipeline,
        FluxTransformer2DModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    torch.manual_seed(0)
    transformer = FluxTransformer2DModel(
        patch_size=1,
        in_channels=4,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=16,
        num_attention_heads=2,
        joint_attention_dim=32,
        pooled_projection_dim=32,
        axes_dims_rope=[4, 4, 8],
    )
    clip = CLIPTextModel(
        CLIPTextConfig(
            bos_token_id=0,
            eos_token_id=2,
            pad_token_id=0,
            hidden_size=32,
            intermediate_size=37,
            num_attention_heads=4,
            num_hidden_layers=2,
            vocab_size=16,
            projection_dim=32,
        )
    )
    t5 = T5EncoderModel(
        T5Config(vocab_size=16, d_model=32, d_kv=8, d_ff=37, num_layers=2, num_heads=4)
    )
    vae = AutoencoderKL(
        sample_size=32,
        in_channels=3,
        out_channels=3,
        block_out_channels=(4,),
        layers_per_block=1,
        latent_channels=1,
        norm_num_groups=1,
        use_quant_conv=False,
        use_post_quant_conv=False,
        shift_factor=0.0609,
        scaling_factor=1.5035,
    )
    pipeline = FluxPipeline(
        scheduler=FlowMatchEulerDiscreteScheduler(),
        vae=vae,
        text_encoder=clip,
        tokenizer=_word_tokenizer(77),
        text_encoder_2=t5,
        tokenizer_2=_word_tokenizer(32),
        transformer=transformer,
    )
    pipeline.save_pretrained(folder, safe_serialization=True)
    return folder


def tiny_lora(base: Path, folder: Path) -> Path:
    """A LoRA (rank 4) on the tiny transformer's attention, non-zero so that it changes images."""
    from diffusers import FluxPipeline, FluxTransformer2DModel
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    transformer = FluxTransformer2DModel.from_pretrained(base / "transformer")
    transformer.add_adapter(
        LoraConfig(
            r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v"], init_lora_weights=False
        )
    )
    FluxPipeline.save_lora_weights(
        folder, transformer_lora_layers=get_peft_model_state_dict(transformer)
    )
    return folder


@pytest.mark.timeout(900)
def test_render_a_tiny_flux_with_and_without_a_lora(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from PIL import Image

    from alloylm.chat.images import render
    from alloylm.cli.main import main

    base = tiny_flux(tmp_path / "flux")
    lora = tiny_lora(base, tmp_path / "lora")
    lora_file = next(lora.glob("*.safetensors"))
    common = {
        "steps": 3,
        "guidance": 3.5,
        "dtype": "bfloat16",
        "seed": 7,
        "width": 64,
        "height": 64,
    }
    plain = render("a leaf vein lattice", str(base), out=tmp_path / "plain.png", **common)
    again = render("a leaf vein lattice", str(base), out=tmp_path / "again.png", **common)
    with_lora = render(
        "a leaf vein lattice", str(base), str(lora_file), out=tmp_path / "lora.png", **common
    )
    images = {name: Image.open(path) for name, path in
              (("plain", plain), ("again", again), ("lora", with_lora))}  # fmt: skip
    assert all(image.size == (64, 64) for image in images.values())
    assert images["plain"].tobytes() == images["again"].tobytes()  # same seed, same image
    assert images["plain"].tobytes() != images["lora"].tobytes()  # the LoRA is applied
    settings = json.loads((tmp_path / "lora.png.json").read_text())
    assert settings["lora"] == str(lora_file) and settings["steps"] == 3
    assert settings["dtype"] == "bfloat16" and settings["diffusers"]
    # the command line, from a transcript of the image_prompt script
    transcript = tmp_path / "t.json"
    transcript.write_text(
        json.dumps(
            {
                "messages": [{"role": "assistant", "content": "x"}],
                "turns": [{"name": "short_prompt", "json": {"value": {"prompt": "green resin"}}}],
            }
        )
    )
    out = tmp_path / "cli.png"
    args = ["render", str(transcript), "--base", str(base), "--lora", str(lora), "-o", str(out)]
    args += [
        "--lora-weight-name",
        lora_file.name,
        "--steps",
        "2",
        "--width",
        "64",
        "--height",
        "64",
    ]
    assert main(args) == 0
    assert Image.open(out).size == (64, 64)
    assert json.loads((tmp_path / "cli.png.json").read_text())["prompt"] == "green resin"


@pytest.mark.timeout(1800)
@pytest.mark.skipif(not os.environ.get("ALLOY_FLUX_BASE"), reason="set ALLOY_FLUX_BASE")
def test_render_with_the_real_flux_and_lora(tmp_path: Path) -> None:
    pytest.importorskip("diffusers")
    from PIL import Image

    from alloylm.chat.images import render

    prompt = "<leaf microstructure> an architected lattice of green veins in translucent resin"
    path = render(
        prompt,
        os.environ["ALLOY_FLUX_BASE"],
        os.environ.get("ALLOY_FLUX_LORA"),
        lora_weight_name=os.environ.get("ALLOY_FLUX_LORA_WEIGHT"),
        out=tmp_path / "leaf.png",
    )  # the study's settings: 25 steps, guidance 3.5, bf16
    assert Image.open(path).size[0] >= 256
