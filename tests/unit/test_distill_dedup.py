"""Exact and near-duplicate removal (MinHash + LSH candidates, confirmed with exact Jaccard)."""

from __future__ import annotations

from alloylm.distill.dedup import dedup, jaccard, minhash_signature, shingles


def test_jaccard_and_shingles_hand_computed() -> None:
    assert shingles("A b, c d", size=2) == {"a b", "b c", "c d"}
    assert shingles("one two", size=5) == {"one two"}
    assert jaccard({"a", "b", "c"}, {"b", "c", "d"}) == 2 / 4


def test_minhash_estimates_jaccard() -> None:
    a = {f"w{i}" for i in range(100)}
    b = {f"w{i}" for i in range(50, 150)}  # true Jaccard = 50 / 150
    sig_a, sig_b = minhash_signature(a, 256), minhash_signature(b, 256)
    estimate = sum(x == y for x, y in zip(sig_a, sig_b, strict=True)) / 256
    assert abs(estimate - 1 / 3) < 0.1


def test_dedup_removes_exact_and_near_duplicates_keeps_first_and_order() -> None:
    words = [f"word{i}" for i in range(60)]
    base = " ".join(words)
    near = " ".join(words[:30] + ["changed"] + words[31:])  # one word of 60 differs
    other = " ".join(f"other{i}" for i in range(60))
    items = [base, other, base.upper(), near]
    kept, removed = dedup(items, lambda t: t, threshold=0.8)
    assert kept == [base, other]
    assert removed == {"exact": 1, "near": 1}


def test_dedup_keeps_texts_below_threshold() -> None:
    words = [f"word{i}" for i in range(20)]
    half = " ".join(words[:10] + [f"x{i}" for i in range(10)])
    kept, removed = dedup([" ".join(words), half], lambda t: t, threshold=0.8)
    assert len(kept) == 2 and removed == {"exact": 0, "near": 0}
