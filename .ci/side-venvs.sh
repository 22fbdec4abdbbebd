#!/usr/bin/env bash
# The reference tools of the equivalence tests (issue 11) and the transformers 4.x venv of the
# portability test (issue 12), installed after `make setup`:
# - mergekit, in a virtualenv of its own (.ci-venvs/mergekit; its pins must not move ours), CPU
#   torch first as always; tests/component/test_merge_mergekit.py runs its `mergekit-yaml`
#   (MERGEKIT_YAML, default .ci-venvs/mergekit/bin/mergekit-yaml);
# - lm-evaluation-harness, into the project's .venv through the `lm-eval` extra: it installs
#   alongside our torch / transformers / trl (checked below: nothing of ours changes version), so
#   tests/integration/test_eval_lm_eval_end_to_end.py imports it directly; the `tracking` extra
#   (tensorboard, mlflow-skinny) the same way, for tests/component/test_tracking.py.
# - llama-cpp-python with its server extra, built from the PyPI sdist (cmake and a C++ compiler,
#   which .ci/run installs from Debian when missing), in a venv of its own (.ci-venvs/llamacpp):
#   tests/component/test_gguf_llama_cpp.py opens our GGUF exports with it (LLAMA_CPP_PYTHON) and
#   the slow tier serves them as an OpenAI-compatible teacher and judge.
# Re-running is cheap: an existing venv is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-.venv}"
SIDE="${ALLOY_SIDE_VENVS:-$PWD/.ci-venvs}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"
MERGEKIT_SPEC="${MERGEKIT_SPEC:-mergekit==0.1.5}"

started=$SECONDS
mergekit="$SIDE/mergekit"
if [ ! -x "$mergekit/bin/mergekit-yaml" ]; then
  rm -rf "$mergekit"
  "$PYTHON" -m venv "$mergekit"
  "$mergekit/bin/pip" install --quiet "$TORCH_SPEC"
  "$mergekit/bin/pip" install --quiet "$MERGEKIT_SPEC"
fi
"$mergekit/bin/mergekit-yaml" --help >/dev/null
echo "side-venvs: mergekit $("$mergekit/bin/pip" show mergekit | sed -n 's/^Version: //p') in $mergekit ($((SECONDS - started)) s)"

# transformers 4.x (issue 12): tests/component/test_artifacts_portable.py loads our model folders
# there (ALLOY_TF4_PYTHON, default .ci-venvs/tf4/bin/python); vLLM, TGI and llama.cpp's converter
# still pin 4.x. CPU torch first, as above.
started=$SECONDS
tf4="$SIDE/tf4"
if [ ! -x "$tf4/bin/python" ] || ! "$tf4/bin/python" -c "import torch, transformers" 2>/dev/null; then
  rm -rf "$tf4"
  "$PYTHON" -m venv "$tf4"
  "$tf4/bin/pip" install --quiet "$TORCH_SPEC"
  "$tf4/bin/pip" install --quiet "${TF4_SPEC:-transformers<5}" tokenizers jinja2
fi
echo "side-venvs: transformers $("$tf4/bin/python" -c 'import transformers; print(transformers.__version__)') in $tf4 ($((SECONDS - started)) s)"

started=$SECONDS
llamacpp="$SIDE/llamacpp"
if ! "$llamacpp/bin/python" -c "import llama_cpp, llama_cpp.server" 2>/dev/null; then
  rm -rf "$llamacpp"
  "$PYTHON" -m venv "$llamacpp"
  CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    "$llamacpp/bin/pip" install --quiet --no-binary llama-cpp-python "${LLAMA_CPP_SPEC:-llama-cpp-python[server]==0.3.36}"
fi
echo "side-venvs: llama-cpp-python $("$llamacpp/bin/python" -c 'import llama_cpp; print(llama_cpp.__version__)') in $llamacpp ($((SECONDS - started)) s)"

started=$SECONDS
ours() { "$VENV/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|trl|peft|accelerate|datasets)=='; }
before="$(ours)"
"$VENV/bin/pip" install --quiet -e ".[lm-eval,tracking]"
after="$(ours)"
if [ "$before" != "$after" ]; then
  echo "side-venvs: installing the lm-eval extra changed our pinned packages:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "side-venvs: lm-eval $("$VENV/bin/pip" show lm_eval | sed -n 's/^Version: //p'), tensorboard, mlflow-skinny in $VENV ($((SECONDS - started)) s)"

# DeepSpeed (issue 28), into the project's .venv through the `deepspeed` extra:
# tests/component/test_zero3_torchrun.py trains every stage kind under ZeRO-3 on 2 CPU ranks.
# --no-build-isolation: its setup.py imports the installed (CPU) torch; no op is compiled (the
# CPU shared-memory all-reduce op that it would JIT-build is skipped, train/distributed.py).
# About 18 s here (2026-12-08, wheels downloaded). Our pinned packages must not move.
started=$SECONDS
before="$(ours)"
"$VENV/bin/pip" install --quiet --no-build-isolation "deepspeed>=0.14"  # = the extra in pyproject.toml
after="$(ours)"
if [ "$before" != "$after" ]; then
  echo "side-venvs: installing the deepspeed extra changed our pinned packages:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "side-venvs: deepspeed $("$VENV/bin/pip" show deepspeed | sed -n 's/^Version: //p') in $VENV ($((SECONDS - started)) s)"
