"""Distillation: raw domain text to CPT text, Q&A, summaries, structured records and preference pairs.

The study (Lu, Luu & Buehler, arXiv 2409.03444) had a general LLM read every paper and write
question-answer pairs, summaries, a structured record per paper and preference triples whose
rejected answer is scientifically wrong. This package does the same with any teacher
(an OpenAI-compatible endpoint or a local model), plus deterministic builders that need none.
"""
