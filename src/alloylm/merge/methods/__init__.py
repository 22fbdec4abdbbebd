"""One pure function per merge method, each a function of tensors with its paper link.

The planner (`alloylm.merge.plan`), not the methods, resolves per-layer parameter values; the
engine (`alloylm.merge.engine`) calls these functions once per tensor.
"""
