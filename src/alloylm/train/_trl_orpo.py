"""ORPO through TRL: the only module that imports `trl.experimental`.

TRL keeps ORPOTrainer (Hong et al. 2024, https://arxiv.org/abs/2403.07691) in `trl.experimental`,
which a release may move or drop; when that happens only this module breaks, and the error says
which TRL versions work. The objective it optimises is `alloylm.train.losses.orpo_loss`
(tests/component/test_pref_orpo_objective.py checks it on a toy batch).
"""

from __future__ import annotations

from typing import Any

from alloylm.errors import AlloyError
from alloylm.train._trl import check_leading_bos

try:
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer
except ImportError as error:  # pragma: no cover - depends on the installed TRL
    raise AlloyError(
        f"this TRL has no trl.experimental.orpo ({error})",
        hint="install a TRL release that ships ORPO (tested: trl 1.16), e.g. pip install 'trl>=1.0,<2'",
    ) from error

__all__ = ["ORPOConfig", "ORPOTrainer", "make_orpo_trainer"]


def make_orpo_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    args: Any,
    *,
    callbacks: list[Any] | None = None,
) -> Any:
    """ORPOTrainer on {prompt, chosen, rejected} texts already rendered by our chat template."""
    from transformers.trainer_callback import PrinterCallback

    trainer = ORPOTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks or []),
    )
    trainer.remove_callback(PrinterCallback)  # our callback reports
    first = next(iter(trainer.train_dataset))
    check_leading_bos(tokenizer, first["prompt_input_ids"], "ORPOTrainer")
    return trainer
