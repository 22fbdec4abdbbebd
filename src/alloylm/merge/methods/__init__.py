"""One module per merge method: a pure function of tensors with its paper link, and its `METHOD`
declaration (parameters, defaults, needs_base; see `spec.py`) that `registry.MERGE_METHODS` names.

The planner (`alloylm.merge.plan`), not the methods, resolves per-layer parameter values; the
engine (`alloylm.merge.engine`) calls a method's `apply` once per tensor.
"""
