"""Stage kinds: one module per kind, listed in alloylm.registry.STAGE_KINDS.

Each module defines:

- ``Config``: a subclass of :class:`alloylm.stages.base.StageConfig` with ``kind: Literal[...]``;
- ``PRODUCES``: what the artifact is (see :data:`alloylm.stages.base.ArtifactKind`);
- ``inputs(cfg) -> list[InputSpec]``: the models and data files the stage reads (for the DAG,
  for validation of input kinds and for the content hash);
- ``run(ctx, cfg) -> StageResult``: setup, delegate to the engine, save into ``ctx.work_dir``.
"""
