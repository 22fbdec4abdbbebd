"""Held-out split by hashing a key with a seed: deterministic, grouped, order-independent."""

import hashlib

from alloylm.data.split import is_heldout, split_by_key, unit_hash


def test_unit_hash_is_the_documented_formula():
    digest = hashlib.sha256(b"3:m68663").digest()
    assert unit_hash("m68663", 3) == int.from_bytes(digest[:8], "big") / 2**64
    assert 0.0 <= unit_hash("anything", 0) < 1.0


def test_split_is_deterministic_and_order_independent():
    items = [{"module": f"m{i // 3}", "n": i} for i in range(300)]  # 100 groups of 3
    kept, held = split_by_key(items, lambda r: r["module"], 0.2, seed=5)
    kept2, held2 = split_by_key(items[::-1], lambda r: r["module"], 0.2, seed=5)
    assert {r["n"] for r in held} == {r["n"] for r in held2}
    assert len(kept) + len(held) == 300 and {r["n"] for r in kept} == {r["n"] for r in kept2}


def test_groups_stay_on_one_side_and_fraction_is_close():
    keys = [f"m{i}" for i in range(2000)]
    held = [k for k in keys if is_heldout(k, 0.1, seed=0)]
    assert 0.08 < len(held) / len(keys) < 0.12
    items = [(k, j) for k in keys[:50] for j in range(4)]
    _, held_items = split_by_key(items, lambda it: it[0], 0.3, seed=1)
    groups = {k for k, _ in held_items}
    assert len(held_items) == 4 * len(groups)  # whole groups only


def test_seed_changes_the_split():
    keys = [f"k{i}" for i in range(200)]
    a = {k for k in keys if is_heldout(k, 0.25, seed=0)}
    b = {k for k in keys if is_heldout(k, 0.25, seed=1)}
    assert a != b
