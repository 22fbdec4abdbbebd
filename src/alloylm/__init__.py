"""alloylm: adapt large language models to a technical domain.

Distill raw text into training data, continue pretraining, fine-tune (SFT, DPO, ORPO), merge the
result with a general model (SLERP and friends), and evaluate every model with one protocol.
Everything is driven by one YAML pipeline (`alloy run pipeline.yaml`).
"""

__version__ = "0.1.0"
