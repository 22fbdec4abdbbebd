#!/usr/bin/env bash
# The reference tools of the equivalence tests (issue 11), installed after `make setup`:
# - mergekit, in a virtualenv of its own (.ci-venvs/mergekit; its pins must not move ours), CPU
#   torch first as always; tests/component/test_merge_mergekit.py runs its `mergekit-yaml`
#   (MERGEKIT_YAML, default .ci-venvs/mergekit/bin/mergekit-yaml);
# - lm-evaluation-harness, into the project's .venv through the `lm-eval` extra: it installs
#   alongside our torch / transformers / trl (checked below: nothing of ours changes version), so
#   tests/integration/test_eval_lm_eval_end_to_end.py imports it directly.
# Re-running is cheap: an existing mergekit venv is kept.
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

started=$SECONDS
ours() { "$VENV/bin/pip" list --format=freeze 2>/dev/null | grep -iE '^(torch|transformers|trl|peft|accelerate|datasets)=='; }
before="$(ours)"
"$VENV/bin/pip" install --quiet -e ".[lm-eval]"
after="$(ours)"
if [ "$before" != "$after" ]; then
  echo "side-venvs: installing the lm-eval extra changed our pinned packages:" >&2
  diff <(echo "$before") <(echo "$after") >&2 || true
  exit 1
fi
echo "side-venvs: lm-eval $("$VENV/bin/pip" show lm_eval | sed -n 's/^Version: //p') in $VENV ($((SECONDS - started)) s)"
