"""The one generation loop: chat template, stop rule, sampling, streaming and batching.

`sampling.py` holds the pure parts (parameters, presets, the stop rule, the token choice, the JSON
object scanner); `batching.py` the loop (sequences, the decode batch, `ModelGenerator`).

Serving, the `paper` eval protocol, chat, conversations, the judge and the local distillation
teacher all generate through this module, so a served answer, an evaluated answer and a chatted
answer are made the same way:

- prompts go through `data/chat_template.format_prompt` (the one template function);
- one stop rule (`stop_token_ids`): the model's generation_config EOS ids and the tokenizer's EOS,
  plus the request's stop strings (cut from the text, never returned);
- sampling in transformers' order: repetition penalty, temperature, top-k, top-p. Each sequence
  has its own `torch.Generator`, so a seeded request draws the same tokens alone or in a batch;
- text is detokenized incrementally and streamed as deltas; a delta never ends inside a multi-byte
  character and never shows text that may still turn out to be the start of a stop string, so the
  deltas always concatenate to the final text;
- batching is step-level (continuous batching): a finished sequence leaves the batch at once and a
  waiting request joins at the next step, so a 1-token request never waits for a 150-token one.
  A joining request's prompt runs alone (batched with the others joining) and its KV cache is
  appended to the batch's, both left-padded to one width; positions are explicit, so only the
  attention mask sees the padding. (A model whose cache is not transformers' plain DynamicLayer,
  e.g. sliding-window layers, re-runs every prompt of the batch at a join instead.)
  Prompts joining together that begin with the same tokens (system prompt, instruction) run them
  once; the batch keeps that prefix's keys and values for the next join that begins with it.
"""
