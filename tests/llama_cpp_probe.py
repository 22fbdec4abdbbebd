"""Run inside the llama.cpp side venv (.ci-venvs/llamacpp, llama-cpp-python): read a JSON request on
stdin, open a GGUF file with llama.cpp, answer on stdout. No alloylm import: the side venv has
only llama-cpp-python. Used by tests/component/test_gguf_llama_cpp.py.

Request keys: model (path); tokenize (strings: ids with special=False and special=True);
prompts (lists of token ids) and n_predict (greedy continuation, argmax of llama.cpp's logits);
quantize ({"from": f32 gguf, "to": path, "ftype": "q8_0"}: llama.cpp's own quantizer, run first).
"""

from __future__ import annotations

import json
import sys

FTYPES = {"q8_0": 7, "f16": 1, "bf16": 32}


def main() -> None:
    import llama_cpp
    import numpy as np

    request = json.load(sys.stdin)
    answer: dict = {"llama_cpp_version": llama_cpp.__version__}
    if request.get("quantize"):
        q = request["quantize"]
        params = llama_cpp.llama_model_quantize_default_params()
        params.ftype = FTYPES[q["ftype"]]
        params.nthread = 2
        code = llama_cpp.llama_model_quantize(q["from"].encode(), q["to"].encode(), params)
        answer["quantize_status"] = int(code)
    llm = llama_cpp.Llama(
        model_path=request["model"],
        n_ctx=int(request.get("n_ctx", 512)),
        n_threads=int(request.get("threads", 2)),
        n_batch=512,
        logits_all=True,  # llama-cpp-python 0.3.36 keeps `scores` only with it
        verbose=False,
    )
    meta = dict(llm.metadata)
    answer.update(
        architecture=meta.get("general.architecture"),
        n_ctx_train=llm._model.n_ctx_train(),
        n_vocab=llm.n_vocab(),
        chat_template=meta.get("tokenizer.chat_template"),
        pre_tokenizer=meta.get("tokenizer.ggml.pre"),
        bos_id=llm.token_bos(),
        eos_id=llm.token_eos(),
    )
    answer["tokens"] = [
        llm.tokenize(text.encode("utf-8"), add_bos=False, special=False)
        for text in request.get("tokenize", [])
    ]
    answer["tokens_special"] = [
        llm.tokenize(text.encode("utf-8"), add_bos=False, special=True)
        for text in request.get("tokenize", [])
    ]
    greedy, margins = [], []
    for prompt in request.get("prompts", []):
        llm.reset()
        llm.eval(list(prompt))
        out, gaps = [], []
        for _ in range(int(request.get("n_predict", 16))):
            logits = np.asarray(llm.scores[llm.n_tokens - 1], dtype=np.float64)
            top = np.argsort(logits)[-2:]
            token = int(top[-1])
            out.append(token)
            gaps.append(float(logits[top[-1]] - logits[top[-2]]))
            llm.eval([token])
        greedy.append(out)
        margins.append(gaps)
    answer["greedy"] = greedy
    answer["margins"] = margins
    json.dump(answer, sys.stdout)


if __name__ == "__main__":
    main()
