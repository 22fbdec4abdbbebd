"""A memory plan before any work: the estimated peak memory per device of one training stage.

A pure function of the model's shape (its config.json), the stage (kind, batch, sequence length,
gradient checkpointing, LoRA / 4-bit, DPO's reference), the launch (one process, DDP, ZeRO-3 or
FSDP over N processes) and the precision. No torch: `alloy validate` and `alloy study plan` print
it before anything is loaded. The parts, in bytes per device:

- weights: fp32 (4 bytes a parameter) in one process or DDP, where bf16 autocast computes over
  fp32 weights (train/config.py); under ZeRO-3 / FSDP with bf16 or fp16 mixed precision the
  engine's working copy is 16-bit (2 bytes) and the fp32 master copy is counted in the optimizer
  state; sharded over the N processes.
- gathered (ZeRO-3 / FSDP): whole parameters held beside the shards. With DeepSpeed's defaults
  a parameter used again within 1e9 parameters stays gathered, up to 1e9 in all (so a small
  model stays whole); FSDP holds the unit computed and the one prefetched.
- gradients: as the trainable weights (sharded under ZeRO-3 / FSDP); ZeRO-3 adds its reduce
  bucket and the interleaved copy its reduce-scatter makes.
- optimizer state: AdamW's two fp32 moments (8 bytes a trainable parameter), plus the fp32
  master weights under 16-bit ZeRO-3 / FSDP (4 bytes).
- activations: what backward keeps of each decoder layer per token (counted tensor by tensor
  for a Llama-style layer, `layer_activation_bytes`), or with gradient checkpointing only each
  layer's input plus one layer recomputed; both figures are given.
- logits: the LM head's output and its fp32 loss copies; alloylm's chunked loss (one CPU
  process, cpt and sft) keeps one block of rows instead.
- reference: DPO's reference model (frozen weights, no gradients), none when its log-probs are
  precomputed, and none for cpt, sft or orpo.
- runtime: the process itself (interpreter and libraries), counted on CPU only, where the
  estimate is compared with a process's peak RSS; on a GPU the CUDA context lives outside
  `torch.cuda.max_memory_allocated` and is not counted.

LoRA: the frozen base counts as weights, the adapters (r x (in + out) per adapted linear layer)
carry gradients and optimizer state. 4-bit (QLoRA): the adapted linear layers' weights take half
a byte a parameter plus the double-quantized block constants; embeddings, norms and the head stay
in fp32 (peft's `prepare_model_for_kbit_training`).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any, Literal

LaunchKind = Literal["single", "ddp", "zero3", "fsdp"]
GB = 10**9

# What one process of the training stack holds before any model, on CPU: the peak RSS of
# `python -c "import torch, transformers, trl, datasets, peft, accelerate; import
# alloylm.stages.cpt, alloylm.train._trl"` was 509,268 KB (2026-12-08, torch 2.x CPU wheels).
CPU_RUNTIME_BYTES = 500 * 10**6
# DeepSpeed's import on top of that: 577,868 KB with `deepspeed` imported too (same day).
DS_RUNTIME_BYTES = 70 * 10**6
# DeepSpeed ZeRO-3 defaults (deepspeed/runtime/zero/config.py: stage3_max_live_parameters,
# stage3_max_reuse_distance, reduce_bucket_size), kept by the shipped deepspeed_zero3 config.
DS_MAX_LIVE_PARAMETERS = 10**9
DS_REDUCE_BUCKET = 5 * 10**8
# alloylm's chunked loss keeps 2**25 fp32 logits at a time (train/chunked_loss.py), and their
# gradient block.
CHUNKED_LOSS_BYTES = 2 * 4 * (1 << 25)
# bitsandbytes NF4 with double quantization: 4 bits a weight, an 8-bit constant per block of 64,
# and an fp32 constant per 256 of those (QLoRA paper, Dettmers et al. 2023, section 3).
NF4_BYTES_PER_PARAM = 0.5 + 1 / 64 + 4 / (64 * 256)

# Model shapes of the sources the shipped recipes name, for planning without the hub (their
# config.json values). A local folder or an artifact is read from its own config.json instead.
KNOWN_CONFIGS: dict[str, dict[str, Any]] = {
    "meta-llama/Llama-3.1-8B": {
        "vocab_size": 128256,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
    },
    "mistralai/Mistral-7B-v0.3": {
        "vocab_size": 32768,
        "hidden_size": 4096,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "tie_word_embeddings": False,
    },
    "HuggingFaceTB/SmolLM-1.7B": {
        "vocab_size": 49152,
        "hidden_size": 2048,
        "num_hidden_layers": 24,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 8192,
        "tie_word_embeddings": True,
    },
    "embedded:smollm2-135m-instruct": {
        "vocab_size": 49152,
        "hidden_size": 576,
        "num_hidden_layers": 30,
        "num_attention_heads": 9,
        "num_key_value_heads": 3,
        "intermediate_size": 1536,
        "tie_word_embeddings": True,
    },
    "tiny:llama": {
        "vocab_size": 49152,
        "hidden_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "intermediate_size": 128,
        "tie_word_embeddings": True,
    },
}
ALIASES = {
    "meta-llama/Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-8B": "meta-llama/Llama-3.1-8B",
    "meta-llama/Meta-Llama-3.1-8B-Instruct": "meta-llama/Llama-3.1-8B",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistralai/Mistral-7B-v0.3",
    "HuggingFaceTB/SmolLM-1.7B-Instruct": "HuggingFaceTB/SmolLM-1.7B",
    "embedded": "embedded:smollm2-135m-instruct",
}


def known_config(source: str) -> dict[str, Any] | None:
    """config.json values of a source the recipes name (tiny:llama:SEED is tiny:llama)."""
    if source.startswith("tiny:llama"):
        return KNOWN_CONFIGS["tiny:llama"]
    return KNOWN_CONFIGS.get(ALIASES.get(source, source))


@dataclass(frozen=True)
class ModelShape:
    """What the plan needs of a Llama-style decoder's config.json."""

    vocab: int
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    tied: bool

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> ModelShape:
        text = config.get("text_config") or config
        hidden = text["hidden_size"]
        heads = text.get("num_attention_heads", hidden // 64)
        return cls(
            vocab=text["vocab_size"],
            hidden=hidden,
            layers=text["num_hidden_layers"],
            heads=heads,
            kv_heads=text.get("num_key_value_heads") or heads,
            intermediate=text.get("intermediate_size") or 4 * hidden,
            tied=bool(config.get("tie_word_embeddings", text.get("tie_word_embeddings", False))),
        )

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def linear_shapes(self) -> list[tuple[int, int]]:
        """(in, out) of one decoder layer's linear layers: q, k, v, o, gate, up, down."""
        h, kv, i = self.hidden, self.kv_dim, self.intermediate
        return [(h, h), (h, kv), (h, kv), (h, h), (h, i), (h, i), (i, h)]

    @property
    def layer_linear_params(self) -> int:
        return sum(a * b for a, b in self.linear_shapes())

    @property
    def layer_params(self) -> int:
        return self.layer_linear_params + 2 * self.hidden  # two RMSNorm weights

    @property
    def embedding_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        head = 0 if self.tied else self.embedding_params
        return self.layers * self.layer_params + self.embedding_params + head + self.hidden

    def lora_params(self, r: int) -> int:
        """Adapter parameters with rank r on every linear layer of every decoder layer
        ('all-linear': peft leaves the LM head out)."""
        return self.layers * sum(r * (a + b) for a, b in self.linear_shapes())


@dataclass(frozen=True)
class Launch:
    """How a stage runs: `kind` over `processes` processes (one device each)."""

    kind: LaunchKind = "single"
    processes: int = 1

    @property
    def sharded(self) -> bool:
        return self.kind in ("zero3", "fsdp")

    def describe(self) -> str:
        names = {"single": "one process", "ddp": "DDP", "zero3": "ZeRO-3", "fsdp": "FSDP"}
        if self.kind == "single":
            return names["single"]
        return f"{names[self.kind]} x {self.processes}"


@dataclass(frozen=True)
class StageShape:
    """What the plan needs of a training stage's config."""

    kind: str  # cpt, sft, dpo, orpo
    batch: int  # rows (pairs for dpo and orpo) per device per micro-step
    seq_len: int
    precision: str = "bfloat16"  # float32, bfloat16, float16 (compute precision)
    gradient_checkpointing: bool = False
    gradient_accumulation: int = 1
    lora_r: int | None = None
    quantize: str | None = None  # "4bit", "8bit" (QLoRA)
    reference: bool = False  # DPO with a reference model in memory (not precomputed)
    chunked_loss: bool = False  # alloylm's chunked loss (one CPU process, cpt and sft)
    on_cpu: bool = False  # count the process's runtime (compared with peak RSS)

    @property
    def preference(self) -> bool:
        return self.kind in ("dpo", "orpo", "simpo")

    @property
    def rows(self) -> int:
        """Sequences in one forward pass: a preference pair is its chosen and rejected reply."""
        return self.batch * (2 if self.preference else 1)


@dataclass
class MemoryPlan:
    stage: StageShape
    launch: Launch
    parts: dict[str, int] = field(default_factory=dict)
    activations_without_checkpointing: int = 0
    activations_with_checkpointing: int = 0
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return sum(self.parts.values())

    def as_dict(self) -> dict[str, Any]:
        return {
            "launch": self.launch.describe(),
            "parts": dict(self.parts),
            "total": self.total,
            "activations_without_checkpointing": self.activations_without_checkpointing,
            "activations_with_checkpointing": self.activations_with_checkpointing,
            "notes": list(self.notes),
        }


def layer_activation_bytes(model: ModelShape, precision: str, sharded_16bit: bool) -> int:
    """Bytes one Llama decoder layer keeps for backward, per token (SDPA attention: no
    sequence-squared term). Counted tensor by tensor for transformers' LlamaDecoderLayer:

    - fp32 weights under bf16/fp16 autocast: the residual stream is fp32; each RMSNorm keeps its
      input and normalised output (4 + 4 bytes each, x2 norms = 16h); q, k, v and gate, up each
      cast the norm output to 16-bit again (5 x 2h); q and k before and after RoPE (2 x 2h,
      2 x 2kv), v (2kv), the attention output and its input to o_proj (2 x 2h); gate, up, SiLU's
      output and the product (4 x 2i): 36h + 6kv + 8i.
    - float32 throughout: no casts; norms 16h, q and k before and after RoPE (8h, 8kv), v (4kv),
      attention output (4h); gate, up, SiLU, product (16i): 28h + 12kv + 16i.
    - 16-bit weights (ZeRO-3 / FSDP mixed precision): each RMSNorm computes in fp32 from a
      16-bit input (2 + 4 + 4 + 2 bytes: 24h for two), q/k/v, attention output and o_proj's input as
      16-bit (8h + 6kv), the MLP (8i): 32h + 6kv + 8i.
    """
    h, kv, i = model.hidden, model.kv_dim, model.intermediate
    if precision == "float32":
        return 28 * h + 12 * kv + 16 * i
    if sharded_16bit:
        return 32 * h + 6 * kv + 8 * i
    return 36 * h + 6 * kv + 8 * i


def plan_memory(model: ModelShape, stage: StageShape, launch: Launch) -> MemoryPlan:
    """The estimated peak memory per device of one training stage (see the module docstring)."""
    n = launch.processes if launch.sharded else 1
    half = stage.precision in ("bfloat16", "float16")
    sharded_16bit = launch.sharded and half
    weight_bytes = 2 if sharded_16bit else 4
    plan = MemoryPlan(stage, launch)
    p = model.params
    if stage.lora_r:
        trainable = model.lora_params(stage.lora_r)
        if stage.quantize:
            quantized = model.layers * model.layer_linear_params
            bytes_per = NF4_BYTES_PER_PARAM if stage.quantize == "4bit" else 1.0
            frozen = int(quantized * bytes_per) + (p - quantized) * 4
            plan.notes.append(f"{stage.quantize} base (bitsandbytes), fp32 embeddings and norms")
        else:
            frozen = p * weight_bytes
        weights = frozen // n + trainable * 4 // n
        plan.notes.append(f"LoRA r={stage.lora_r}: {trainable / 1e6:.1f}M trainable parameters")
    else:
        trainable = p
        weights = p * weight_bytes // n
    plan.parts["weights"] = weights
    grad_bytes = 4 if stage.lora_r else weight_bytes
    plan.parts["gradients"] = trainable * grad_bytes // n
    if launch.kind == "zero3":
        # DeepSpeed's defaults (the shipped config sets none of them): a parameter used again
        # within stage3_max_reuse_distance (1e9) parameters stays gathered, up to
        # stage3_max_live_parameters (1e9) in all; and gradients are reduced through a bucket of
        # reduce_bucket_size (5e8) elements, filled before each reduction, which copies the
        # bucket once more to interleave the ranks' parts
        # (runtime/comm/coalesced_collectives.py:reduce_scatter_coalesced, torch.cat)
        plan.parts["gathered"] = weight_bytes * min(p, DS_MAX_LIVE_PARAMETERS)
        plan.parts["gradients"] += 2 * grad_bytes * min(trainable, DS_REDUCE_BUCKET)
    elif launch.kind == "fsdp":
        # one FSDP unit (a decoder layer) computed and one prefetched, or the embedding (and an
        # untied head) when it is larger
        plan.parts["gathered"] = weight_bytes * max(2 * model.layer_params, model.embedding_params)
    master = 4 if sharded_16bit and not stage.lora_r else 0
    plan.parts["optimizer"] = trainable * (8 + master) // n

    tokens = stage.rows * stage.seq_len
    act_bytes = 4 if not half else 2
    per_layer = layer_activation_bytes(model, stage.precision, sharded_16bit) * tokens
    residual = 2 if sharded_16bit else 4  # the residual stream's bytes per value
    full = model.layers * per_layer + tokens * model.hidden * residual
    checkpointed = model.layers * tokens * model.hidden * residual + per_layer
    plan.activations_without_checkpointing = full
    plan.activations_with_checkpointing = checkpointed
    plan.parts["activations"] = checkpointed if stage.gradient_checkpointing else full
    if stage.chunked_loss and not stage.preference:
        plan.parts["logits"] = CHUNKED_LOSS_BYTES
    else:
        # the head's output (16-bit under autocast), its fp32 copy and the log-softmax kept for
        # backward
        plan.parts["logits"] = tokens * model.vocab * (act_bytes + 8)
    if stage.kind == "dpo" and stage.reference:
        plan.parts["reference"] = p * weight_bytes // n
    if stage.on_cpu:
        plan.parts["runtime"] = CPU_RUNTIME_BYTES + (
            DS_RUNTIME_BYTES if launch.kind == "zero3" else 0
        )
    return plan


def fits(plan: MemoryPlan, device_bytes: int) -> bool:
    return plan.total <= device_bytes


def what_would_fit(
    model: ModelShape, stage: StageShape, launch: Launch, device_bytes: int
) -> list[str]:
    """For a stage that does not fit `device_bytes`: each change (alone) that would make it fit,
    with the total it gives, in the order ZeRO-3, more processes, gradient checkpointing, a
    smaller batch, LoRA, QLoRA. Empty when the stage fits, or when none of them alone does."""
    options: list[tuple[str, StageShape, Launch]] = []
    kind = launch.kind if launch.sharded else "zero3"
    for processes in (2, 4, 8, 16, 32, 64):
        if processes < launch.processes or (launch.sharded and processes == launch.processes):
            continue
        sharded = Launch(kind, processes)
        if fits(plan_memory(model, stage, sharded), device_bytes):
            text = (
                f"{processes} processes" if launch.sharded else f"ZeRO-3 over {processes} processes"
            )
            options.append((text, stage, sharded))
            break
    if not stage.gradient_checkpointing:
        options.append(
            ("gradient_checkpointing: true", replace(stage, gradient_checkpointing=True), launch)
        )
    batch = stage.batch // 2
    while batch >= 1:
        smaller = replace(stage, batch=batch)
        if fits(plan_memory(model, smaller, launch), device_bytes):
            accumulation = stage.gradient_accumulation * stage.batch // batch
            options.append(
                (
                    f"per_device_batch_size: {batch} (gradient_accumulation_steps: "
                    f"{accumulation} keeps the effective batch)",
                    smaller,
                    launch,
                )
            )
            break
        batch //= 2
    if not stage.lora_r:
        options.append(("LoRA (train.lora: {r: 16})", replace(stage, lora_r=16), launch))
    if not stage.quantize:
        options.append(
            (
                "QLoRA (train.lora: {r: 16, quantize: 4bit})",
                replace(stage, lora_r=stage.lora_r or 16, quantize="4bit"),
                launch,
            )
        )
    advice = []
    for text, new_stage, new_launch in options:
        total = plan_memory(model, new_stage, new_launch).total
        if total <= device_bytes:
            advice.append(f"{text}: {format_bytes(total)}")
    return advice


def effective_batch(per_device: int, accumulation: int, processes: int) -> int:
    """Rows (pairs for preference stages) per optimizer step, over all processes."""
    return per_device * accumulation * processes


def intended_processes(intended: int, per_device: int, accumulation: int) -> float:
    return intended / (per_device * accumulation)


def format_bytes(value: float) -> str:
    """10**9 bytes is 1 GB (as device memory is sold: 80 GB)."""
    if value >= GB:
        return f"{value / GB:.1f} GB"
    return f"{value / 10**6:.0f} MB"


MEMORY_UNITS = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "TIB": 1 << 40, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}  # fmt: skip


def parse_memory(text: str) -> int:
    """'80GB', '80 GB', '24GiB', '512MB' -> bytes (GB = 10**9, GiB = 2**30)."""
    clean = str(text).strip().upper().replace(" ", "")
    try:
        for unit, factor in MEMORY_UNITS.items():
            if clean.endswith(unit):
                value = int(float(clean[: -len(unit)]) * factor)
                break
        else:
            value = int(clean)
    except ValueError:
        raise ValueError(f"a memory size such as 80GB or 24GiB, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"a positive memory size, got {text!r}")
    return value
