"""CPO and SimPO through TRL: the only module that imports `trl.experimental.cpo`.

TRL keeps CPOTrainer (Xu et al. 2024, "Contrastive preference optimization",
https://arxiv.org/abs/2401.08417) in `trl.experimental`, which a release may move or drop; when
that happens only this module breaks, and the error says which TRL versions work. With
`loss_type="simpo"` and `cpo_alpha=0` it is SimPO (Meng, Xia & Chen 2024, "SimPO: simple
preference optimization with a reference-free reward", https://arxiv.org/abs/2405.14734). The
objectives are `alloylm.train.losses.simpo_loss` and `cpo_loss`
(tests/component/test_pref_objectives.py checks them on a toy batch).
"""

from __future__ import annotations

from typing import Any

from alloylm.errors import AlloyError
from alloylm.train._trl import check_leading_bos

try:
    from trl.experimental.cpo import CPOConfig, CPOTrainer
except ImportError as error:  # pragma: no cover - depends on the installed TRL
    raise AlloyError(
        f"this TRL has no trl.experimental.cpo ({error})",
        hint="install a TRL release that ships CPO (tested: trl 1.16), e.g. pip install 'trl>=1.0,<2'",
    ) from error

__all__ = ["CPOConfig", "CPOTrainer", "make_cpo_trainer"]


def make_cpo_trainer(
    model: Any,
    tokenizer: Any,
    train_dataset: Any,
    args: Any,
    *,
    callbacks: list[Any] | None = None,
) -> Any:
    """CPOTrainer on {prompt, chosen, rejected} texts already rendered by our chat template."""
    from transformers.trainer_callback import PrinterCallback

    trainer = CPOTrainer(
        model=model,
        args=args,
        train_dataset=train_dataset,
        processing_class=tokenizer,
        callbacks=list(callbacks or []),
    )
    trainer.remove_callback(PrinterCallback)  # our callback reports
    first = next(iter(trainer.train_dataset))
    check_leading_bos(tokenizer, first["prompt_input_ids"], "CPOTrainer")
    return trainer
