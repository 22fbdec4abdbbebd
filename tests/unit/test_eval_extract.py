"""The extract task's scoring (evals/extract.py) on hand-computed numbers, and the shipped gold set."""

from __future__ import annotations

import json

import pytest

from alloylm.errors import DataError
from alloylm.evals.extract import (
    ExtractItem,
    extract_record,
    load_extract,
    match_field,
    normalise_item,
    score_answer,
)

FIELDS = ("materials", "properties", "methods")


def test_normalisation_folds_spellings_of_one_item():
    assert normalise_item("The Collagen Fibres.") == "collagen fiber"
    assert normalise_item("collagen fiber") == "collagen fiber"
    assert normalise_item("  tensile   strength ") == "tensile strength"
    assert normalise_item("an osteons") == "osteon"
    assert normalise_item("glass") == "glass" and normalise_item("mucus") == "mucus"


def test_match_field_counts_each_gold_item_once():
    gold = [["collagen fibers", "collagen"], ["elastin"], ["hydroxyapatite"]]
    # "collagen" and "collagen fibres" are the same gold item: one hit; "keratin" is wrong;
    # "Elastin" twice is one predicted item
    assert match_field(["collagen", "collagen fibres", "keratin", "Elastin", "elastin"], gold) == (
        2,
        4,
        3,
    )
    assert match_field([], gold) == (0, 0, 3)


def test_record_micro_precision_recall_f1():
    item_one = ExtractItem(
        "1",
        "t",
        {"materials": [["bone"], ["collagen"]], "properties": [["hardness"]], "methods": []},
        2,
    )
    item_two = ExtractItem(
        "2", "t", {"materials": [["enamel"]], "properties": [], "methods": [["x-ray"]]}, 3
    )
    schema = {"type": "object", "required": list(FIELDS)}
    one = score_answer(
        '```json\n{"materials": ["Bone", "water"], "properties": ["hardness"], "methods": []}\n```',
        item_one, FIELDS, schema,
    )  # fmt: skip
    two = score_answer("I think it is enamel.", item_two, FIELDS, schema)
    assert one["valid_json"] and one["schema_ok"] and not two["valid_json"]
    record = extract_record([one, two], FIELDS, resamples=100, seed=0)
    # TP = bone + hardness = 2; predicted = 3; gold = 2 + 1 + 1 + 1 = 5
    assert record["precision"] == pytest.approx(2 / 3)
    assert record["recall"] == pytest.approx(2 / 5)
    assert record["score"] == pytest.approx(2 * 2 / (3 + 5))  # micro F1 = 0.5
    assert record["valid_json"] == 0.5 and record["unparseable"] == 1
    assert record["per_field"]["materials"] == {
        "precision": 0.5, "recall": 1 / 3, "f1": 2 / 5, "tp": 1, "predicted": 2, "gold": 3,
    }  # fmt: skip
    assert record["per_field"]["methods"]["recall"] == 0.0
    assert record["ci95"][0] <= record["score"] <= record["ci95"][1]


def test_a_field_that_is_not_a_list_predicts_nothing():
    item = ExtractItem("1", "t", {"materials": [["bone"]], "properties": [], "methods": []}, 1)
    schema = {"type": "object", "properties": {"materials": {"type": "array"}}}
    scored = score_answer('{"materials": "bone"}', item, FIELDS, schema)
    assert scored["valid_json"] and not scored["schema_ok"]
    assert scored["fields"]["materials"] == {"tp": 0, "predicted": 0, "gold": 1}


def test_shipped_gold_set(data_root):
    task = load_extract(data_root / "openstax_extract" / "anatomy_physiology_2e_extract.jsonl")
    assert task.fields == FIELDS and len(task.items) >= 20
    assert len({item.id for item in task.items}) == len(task.items)
    corpus = "\n".join(
        json.loads(line)["text"]
        for line in (data_root / "openstax_corpus" / "anatomy_physiology_2e.jsonl").open()
    )
    for item in task.items:
        assert item.text in corpus  # every passage is the book's own words
        assert set(item.gold) == set(FIELDS) and any(item.gold.values())
    assert sum(len(i.gold["methods"]) for i in task.items) >= 20


def test_bad_files_name_the_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text('{"text": "a", "gold": {"m": ["x"]}}\n{"text": "b"}\n')
    with pytest.raises(DataError, match="x.jsonl:2"):
        load_extract(path)
    path.write_text('{"schema": {"type": "object", "required": ["m"]}}\n')
    with pytest.raises(DataError, match="no passages"):
        load_extract(path)
