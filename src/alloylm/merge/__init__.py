"""The merge engine: pure per-tensor methods, mergekit-compatible parameter plans, streaming I/O.

Entry points: `alloylm.merge.engine.run_merge` (library), the `merge` stage kind
(`alloylm.stages.merge`) and `alloy merge CONFIG OUTPUT_DIR` (`alloylm.cli.merge`).
"""
