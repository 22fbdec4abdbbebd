"""llama.cpp opens what we export: llama-cpp-python, built from its PyPI sdist in a side venv
(.ci/side-venvs.sh; LLAMA_CPP_PYTHON, default .ci-venvs/llamacpp/bin/python), reads our GGUF files
through tests/llama_cpp_probe.py. Skipped when that venv is missing, failed instead under
ALLOY_REQUIRE_EQUIVALENCE=1 (CI sets it).

For every export dtype, the file loads and reports the architecture, context length, vocabulary
size and chat template of the model folder, and its greedy tokens (argmax of llama.cpp's logits,
on the same prompt ids) equal those of transformers running the same weights: the folder's for
f32, the folder's rounded to f16 / bf16 for those. A divergence is accepted only at a near-tie:
where transformers' own top-2 logit gap is under `NEAR_TIE[dtype]` (llama.cpp on a CPU also
rounds the activations to f16 / bf16 before the matrix products, transformers does not). For
q8_0 the reference is llama.cpp's own quantizer run on our f32 export: the same greedy tokens.

Models: a tiny pipeline's LoRA-trained and merged models (tiny:llama, every dtype, here), and the
embedded SmolLM2-135M-Instruct (slow tier), whose tokenizer is also checked on 50 domain sentences
and the issue's hard strings.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from alloylm.models.export_gguf import export_gguf

REPO = Path(__file__).resolve().parents[2]
PROBE = REPO / "tests" / "llama_cpp_probe.py"
LLAMA_CPP_PYTHON = os.environ.get(
    "LLAMA_CPP_PYTHON", str(REPO / ".ci-venvs" / "llamacpp" / "bin" / "python")
)
REQUIRED = os.environ.get("ALLOY_REQUIRE_EQUIVALENCE") == "1"
NEAR_TIE = {"f32": 1e-3, "f16": 0.05, "bf16": 0.5}

CHAT_PROMPTS = [
    "What is an osteon?",
    "Name the four chambers of the heart.",
    "Explain in one sentence what the mitochondria do.",
    "What does hemoglobin carry?",
    "List two functions of the skin.",
    "What is the normal pH of human blood?",
    "Which organ produces insulin?",
    "What connects muscle to bone?",
]


def llama_cpp_python() -> str:
    if not Path(LLAMA_CPP_PYTHON).exists():
        message = (
            f"llama-cpp-python's venv not found at {LLAMA_CPP_PYTHON} "
            "(run .ci/side-venvs.sh, or set LLAMA_CPP_PYTHON)"
        )
        if REQUIRED:
            pytest.fail(message)
        pytest.skip(message)
    return LLAMA_CPP_PYTHON


def probe(request: dict, timeout: int = 600) -> dict:
    run = subprocess.run(
        [llama_cpp_python(), str(PROBE)],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout)


def chat_prompt_ids(tokenizer, texts: list[str]) -> list[list[int]]:
    rendered = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=False
        )
        for text in texts
    ]
    return [tokenizer(text, add_special_tokens=False).input_ids for text in rendered]


def hf_greedy(folder: Path, prompts: list[list[int]], n: int, dtype: str = "f32"):
    """Greedy tokens and top-2 gaps of transformers on the folder's weights (rounded to `dtype`
    for f16 / bf16; computed in float32)."""
    import torch
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    if dtype in ("f16", "bf16"):
        rounded = torch.float16 if dtype == "f16" else torch.bfloat16
        with torch.no_grad():
            for param in model.parameters():
                if param.dim() == 2:  # the exporter keeps 1-D tensors (norms) in F32
                    param.copy_(param.to(rounded).float())
    sequences, gaps = [], []
    with torch.no_grad():
        for prompt in prompts:
            out = model(torch.tensor([prompt]), use_cache=True)
            tokens, margins = [], []
            for _ in range(n):
                logits = out.logits[0, -1].double()
                top = torch.topk(logits, 2)
                token = int(top.indices[0])
                tokens.append(token)
                margins.append(float(top.values[0] - top.values[1]))
                out = model(
                    torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True
                )
            sequences.append(tokens)
            gaps.append(margins)
    return sequences, gaps


def compare_greedy(ours, theirs, their_gaps, near_tie: float) -> list[str]:
    """Problems: a divergence where transformers' top-2 gap was not a near-tie."""
    problems = []
    for index, (a, b) in enumerate(zip(ours, theirs, strict=True)):
        for position, (x, y) in enumerate(zip(a, b, strict=True)):
            if x != y:
                gap = their_gaps[index][position]
                if gap >= near_tie:
                    problems.append(
                        f"prompt {index}: token {position} is {x} in llama.cpp, {y} in "
                        f"transformers (top-2 gap {gap:.4g} >= {near_tie})"
                    )
                break  # after a divergence the continuations are different texts
    return problems


def check_metadata(answer: dict, folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    assert answer["architecture"] == "llama"
    assert answer["n_ctx_train"] == config["max_position_embeddings"]
    assert answer["n_vocab"] == config["vocab_size"]
    assert answer["chat_template"] == tokenizer.chat_template
    assert answer["eos_id"] == tokenizer.eos_token_id


def check_export(folder: Path, tmp_path: Path, n_predict: int, prompts_text: list[str]) -> dict:
    """Export `folder` in every dtype, open each with llama.cpp, compare; return the findings."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    prompts = chat_prompt_ids(tokenizer, prompts_text)
    findings: dict = {}
    files = {}
    for dtype in ("f32", "f16", "bf16", "q8_0"):
        files[dtype] = tmp_path / f"{folder.name}-{dtype}.gguf"
        export_gguf(folder, files[dtype], dtype=dtype)
    for dtype in ("f32", "f16", "bf16"):
        answer = probe({"model": str(files[dtype]), "prompts": prompts, "n_predict": n_predict})
        check_metadata(answer, folder)
        reference, gaps = hf_greedy(folder, prompts, n_predict, dtype)
        problems = compare_greedy(answer["greedy"], reference, gaps, NEAR_TIE[dtype])
        assert not problems, f"{dtype}: " + "; ".join(problems)
        findings[dtype] = sum(a == b for a, b in zip(answer["greedy"], reference, strict=True))
    # q8_0: ours against llama.cpp's own quantization of our f32 export
    theirs = tmp_path / f"{folder.name}-q8_0-llama-cpp.gguf"
    quantized = probe(
        {
            "model": str(theirs),
            "quantize": {"from": str(files["f32"]), "to": str(theirs), "ftype": "q8_0"},
            "prompts": prompts,
            "n_predict": n_predict,
        }
    )
    assert quantized["quantize_status"] == 0
    ours = probe({"model": str(files["q8_0"]), "prompts": prompts, "n_predict": n_predict})
    check_metadata(ours, folder)
    findings["q8_0_same_tensors"] = same_tensors(files["q8_0"], theirs)
    assert ours["greedy"] == quantized["greedy"], findings
    findings["q8_0"] = len(prompts)
    return findings


def same_tensors(ours: Path, theirs: Path) -> tuple[int, int]:
    """(tensors with the same type and bytes, tensors) of two GGUF files."""
    import gguf

    a = {t.name: t for t in gguf.GGUFReader(ours).tensors}
    b = {t.name: t for t in gguf.GGUFReader(theirs).tensors}
    assert set(a) == set(b)
    same = sum(
        a[n].tensor_type == b[n].tensor_type and bytes(a[n].data) == bytes(b[n].data) for n in a
    )
    return same, len(a)


@pytest.fixture(scope="module")
def tiny_pipeline_models(tmp_path_factory) -> dict[str, Path]:
    """A LoRA-trained model (cpt, adapters merged) and a slerp merge of it with tiny:llama:1."""
    import yaml

    from alloylm.pipeline.load import load_pipeline
    from alloylm.pipeline.runner import PipelineRunner

    llama_cpp_python()
    root = tmp_path_factory.mktemp("pipeline")
    (root / "text.jsonl").write_text(
        "".join(json.dumps({"text": f"The {t} is an organ. " * 6}) + "\n" for t in "ab")
    )
    train = {"max_steps": 2, "max_seq_length": 64, "per_device_batch_size": 1,
             "learning_rate": 1e-2, "lora": {"r": 4, "alpha": 8}}  # fmt: skip
    stages = {
        "lora": {"kind": "cpt", "model": "tiny:llama", "data": [{"path": "text.jsonl"}],
                 "train": train},
        "merged": {"kind": "merge", "method": "slerp", "base_model": "${stages.lora.output}",
                   "models": ["tiny:llama:1"], "parameters": {"t": 0.5}},
    }  # fmt: skip
    (root / "p.yaml").write_text(
        yaml.safe_dump({"run": {"name": "g", "output": "out"}, "stages": stages})
    )
    outcomes = PipelineRunner(load_pipeline(root / "p.yaml")).run()
    assert [o.status for o in outcomes] == ["built", "built"], [o.error for o in outcomes]
    return {"lora": root / "out" / "lora", "merged": root / "out" / "merged"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("model", ["lora", "merged"])
def test_llama_cpp_opens_tiny_pipeline_exports(tiny_pipeline_models, model, tmp_path):
    findings = check_export(tiny_pipeline_models[model], tmp_path, 8, CHAT_PROMPTS[:4])
    assert findings["f32"] == 4, findings  # f32: exactly transformers' tokens, every prompt
    print(f"llama.cpp vs transformers, {model}:", findings, file=sys.stderr)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_llama_cpp_opens_the_embedded_model_in_every_dtype(embedded_model, tmp_path):
    findings = check_export(embedded_model, tmp_path, 24, CHAT_PROMPTS)
    assert findings["f32"] == len(CHAT_PROMPTS), findings
    print("llama.cpp vs transformers, embedded model:", findings, file=sys.stderr)


# 50 domain sentences: Greek letters, units, chemical formulas, numbers, code.
DOMAIN_SENTENCES = [
    "The α-helix and β-sheet are the two common secondary structures of proteins.",
    "Δ G = Δ H − T Δ S decides whether a reaction is spontaneous.",
    "The resting membrane potential is about −70 mV.",
    "Normal blood glucose is 70–99 mg/dL after an overnight fast.",
    "A red blood cell is about 7.5 µm across.",
    "Cardiac output = heart rate × stroke volume ≈ 5 L/min.",
    "C6H12O6 + 6 O2 → 6 CO2 + 6 H2O + ~30 ATP",
    "NaCl dissociates into Na⁺ and Cl⁻ ions in water.",
    "The pKa of acetic acid (CH3COOH) is 4.76 at 25 °C.",
    "Hemoglobin binds up to four O₂ molecules.",
    "Avogadro's number is 6.022×10²³ mol⁻¹, or 6.022e23.",
    "Boltzmann's constant k_B = 1.380649e-23 J/K.",
    "The speed of light is 299,792,458 m/s.",
    "Water boils at 100 °C (212 °F) at 1 atm = 101.325 kPa.",
    "A 3.14159 rad rotation is half a turn.",
    "Young's modulus of cortical bone is 15–20 GPa.",
    "The osteon's central canal is ~50 µm in diameter.",
    "Ca²⁺ and PO₄³⁻ form hydroxyapatite, Ca10(PO4)6(OH)2.",
    "σ = F / A, and ε = ΔL / L₀.",
    "The Hill coefficient n ≈ 2.8 for hemoglobin.",
    "λ = 532 nm is green light; ν = c / λ.",
    "Ω, μ, π, θ, φ, ψ and ω are common symbols in physics.",
    "Tensile strength: 1,000,000 Pa = 1 MPa.",
    "The sample weighed 0.00045 kg, i.e. 450 mg.",
    "Version 2.0.1-rc3 was released on 2024-03-15T12:30:00Z.",
    "def f(x): return x**2 + 3*x - 1",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "import numpy as np; np.linalg.norm(v, ord=2)",
    "SELECT name, COUNT(*) FROM cells GROUP BY name;",
    "x = [1, 2, 3]; y = {'a': 1, \"b\": 2.5}",
    "    indented code with\ttabs and  double  spaces",
    "The gene TP53 encodes p53, a tumour suppressor.",
    "DNA → mRNA → protein: the central dogma.",
    "ATP + H₂O → ADP + Pᵢ + energy (ΔG°' ≈ −30.5 kJ/mol)",
    "Graphene has a Young's modulus near 1 TPa and is 0.335 nm thick.",
    "Fe₂O₃ + 3 CO → 2 Fe + 3 CO₂",
    "The ratio was 3:1, p < 0.05, n = 1,024.",
    "Temperature rose from −40 °C to +85 °C in 12.5 s.",
    "HbA1c of 6.5 % or more indicates diabetes.",
    "The femur is the longest bone; the stapes (≈3 mm) the shortest.",
    "E = mc², F = ma, PV = nRT.",
    "An enzyme's Km was 2.3 × 10⁻⁴ M and Vmax 120 µmol·min⁻¹.",
    "Silk fibroin's β-sheet crystals give a toughness of ~150 MJ/m³.",
    "The code 0x1F600 is 😀; U+00E9 is é.",
    "Naïve café owners in Zürich measured 3½ cups.",
    "Pressure: 120/80 mmHg is a normal blood pressure.",
    "The cell cycle: G1 → S → G2 → M (mitosis).",
    "CRISPR-Cas9 cuts 3 bp upstream of the PAM (5′-NGG-3′).",
    "Multiply 12345679 × 9 = 111111111.",
    "1st, 2nd, 3rd and 4th-order reactions; k = 0.693 / t½.",
]
# from the issue: the numbers line and text with special tokens
HARD = [
    "3.14159, 6.022e23, 1,000,000, 0.001, -42, 1e-5, 2^10 = 1024",
    "<|im_start|>user\nHello<|im_end|>",
]


@pytest.fixture(scope="module")
def tokenizer_gguf(tmp_path_factory) -> tuple[Path, Path]:
    """tiny:llama (the embedded model's tokenizer) as a small f32 GGUF."""
    from alloylm.models.sources import resolve_model

    llama_cpp_python()
    folder = resolve_model("tiny:llama")
    out = tmp_path_factory.mktemp("tok") / "tiny-f32.gguf"
    export_gguf(folder, out, dtype="f32")
    return folder, out


@pytest.mark.timeout(300)
def test_tokenization_matches_on_domain_sentences(tokenizer_gguf):
    from transformers import AutoTokenizer

    folder, gguf_file = tokenizer_gguf
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    texts = DOMAIN_SENTENCES + HARD
    assert len(DOMAIN_SENTENCES) == 50
    answer = probe({"model": str(gguf_file), "tokenize": texts})
    assert answer["pre_tokenizer"] == "smollm"
    mismatches = [
        (text, ours, theirs)
        for text, ours, theirs in zip(
            texts,
            [tokenizer(t, add_special_tokens=False).input_ids for t in texts],
            answer["tokens_special"],
            strict=True,
        )
        if ours != theirs
    ]
    assert not mismatches, mismatches


# Whitespace before a digit: llama.cpp's `smollm` pre-tokenizer isolates every digit first (as
# SmolLM2's own tokenizer.json does: Digits(individual_digits) then ByteLevel), so "  3" is
# ["ĠĠ", "3"]. The tokenizer transformers builds from the embedded GGUF kept only ByteLevel and
# gave ["Ġ", "Ġ", "3"], until models/gguf.py's restore_pre_tokenizer put the Digits step back.
WHITESPACE_DIGITS = ["  3 apples", "x\n\n3", "a  33", "   42   ", "٣ ٤ arabic digits"]


def _ids(tokenizer, texts):
    return [tokenizer(t, add_special_tokens=False).input_ids for t in texts]


@pytest.mark.timeout(300)
def test_whitespace_before_digits_tokenizes_as_llama_cpp(tokenizer_gguf):
    from transformers import AutoTokenizer

    folder, gguf_file = tokenizer_gguf
    answer = probe({"model": str(gguf_file), "tokenize": WHITESPACE_DIGITS})
    assert _ids(AutoTokenizer.from_pretrained(str(folder)), WHITESPACE_DIGITS) == answer["tokens"]


def test_the_converted_tokenizer_has_smollm2s_digit_step(tokenizer_gguf):
    from alloylm.models.embedded import embedded_gguf_path
    from alloylm.models.gguf import gguf_pre_tokenizer

    folder, _ = tokenizer_gguf
    state = json.loads((folder / "tokenizer.json").read_text())["pre_tokenizer"]
    assert state["type"] == "Sequence"
    assert state["pretokenizers"][0] == {"type": "Digits", "individual_digits": True}
    assert gguf_pre_tokenizer(embedded_gguf_path("smollm2-135m-instruct")) == "smollm"
