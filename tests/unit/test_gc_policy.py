"""freeze_what_imports_built: objects alive at the call are skipped by later collections; cycles
made afterwards are still collected."""

from __future__ import annotations

import gc
import weakref

from alloylm.gc_policy import freeze_what_imports_built


class _Node:
    pass


def _cycle() -> weakref.ref:
    node = _Node()
    node.self = node
    return weakref.ref(node)


def test_objects_alive_at_the_call_are_frozen_and_new_cycles_still_collected():
    gc.disable()  # no collection between making the cycle and freezing it
    try:
        before = _cycle()  # unreachable but uncollected: a freeze keeps it
        frozen_before = gc.get_freeze_count()
        freeze_what_imports_built(["json.decoder"])
        assert gc.isenabled() is False  # the caller's setting is left as it was
        gc.enable()
        assert gc.get_freeze_count() > frozen_before
        gc.collect()
        assert before() is not None
        after = _cycle()
        gc.collect()
        assert after() is None
    finally:
        gc.enable()
        gc.unfreeze()
        gc.collect()
