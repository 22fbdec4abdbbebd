"""Stage kinds: one module per kind, listed in alloylm.registry.STAGE_KINDS.

Each module defines:

- ``Config``: a subclass of :class:`alloylm.config.strict.StageConfig` with ``kind: Literal[...]``;
- ``PRODUCES``: what the artifact is (see :data:`alloylm.contract.ArtifactKind`);
- ``inputs(cfg) -> list[InputSpec]``: the models and data files the stage reads (for the DAG,
  for validation of input kinds and for the content hash);
- ``DISTRIBUTED = True`` (optional): the stage runs on every process of a launcher
  (``run.launcher``: accelerate, torchrun); without it the stage runs once, in the runner;
- ``run(ctx, cfg) -> StageResult``: setup, delegate to the engine, save into ``ctx.work_dir``.
"""
