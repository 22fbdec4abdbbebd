"""Training glue shared by the training stages.

- `config.py`: `TrainConfig` / `LoraConfig`, the `train:` block of cpt, sft, dpo, orpo (no torch).
- `_trl.py`: the only module importing trl: `build_training_args`, `make_sft_trainer`,
  `train_resumable`, `save_trained_model`, `precision_flags`, `is_main_process`.
- `callbacks.py`: `ProgressCallback` (live progress) and the loss record (`summarise_training`).
- `checkpoints.py`: `latest_checkpoint` (resume after interruption).
- `lora.py`: peft LoRA config, wrapping, merging.
"""
