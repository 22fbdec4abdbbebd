"""`alloy export MODEL --to gguf [--dtype f16] -o OUT.gguf`: one GGUF file for llama.cpp/Ollama.

Beside OUT.gguf, OUT.gguf.alloy.json records what was exported (the source, and its stage and
content hash when it is an alloylm artifact), the file's sha256 and the library versions; the
GGUF itself carries the same source facts as `alloylm.source.*` metadata.
"""

from __future__ import annotations

import argparse
from pathlib import Path

SIDECAR_SUFFIX = ".alloy.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model",
        help="model source: a model folder (e.g. runs/x/sft), tiny:llama, embedded:NAME, hub id",
    )
    parser.add_argument("--to", choices=["gguf"], default="gguf", help="format (only gguf)")
    parser.add_argument(
        "--dtype",
        choices=["f32", "f16", "bf16", "q8_0"],
        default="f16",
        help="weight type of 2-D tensors (norms stay f32); default f16",
    )
    parser.add_argument("-o", "--output", required=True, help="the .gguf file to write")


def run(args: argparse.Namespace) -> int:
    import time

    from alloylm.atomic import atomic_write_json
    from alloylm.lineage import hub_lineage, library_versions
    from alloylm.models.export_gguf import export_gguf, source_provenance
    from alloylm.models.sources import resolve_model

    out = Path(args.output)
    if out.suffix != ".gguf":
        from alloylm.errors import ConfigError

        raise ConfigError(f"output {str(out)!r} must end in .gguf", key="-o")
    started = time.time()
    folder = resolve_model(args.model)
    provenance = source_provenance(folder)
    base_models, license = hub_lineage(args.model, folder)
    result = export_gguf(
        folder,
        out,
        dtype=args.dtype,
        name=out.stem,
        provenance=provenance,
        base_models=base_models,
        license=license,
    )
    atomic_write_json(
        out.with_name(out.name + SIDECAR_SUFFIX),
        {
            "alloylm_export": 1,
            "format": "gguf",
            "source": args.model if ":" in args.model else Path(args.model).name,
            "source_lineage": provenance,
            "base_models": base_models,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "wall_time_s": round(time.time() - started, 2),
            **result.summary(),
            "versions": library_versions(),
        },
    )
    print(
        f"{out}: {result.dtype}, {result.size_bytes / 2**20:,.1f} MiB, "
        f"pre-tokenizer {result.pre_tokenizer}, sha256 {result.sha256[:12]}"
    )
    return 0
