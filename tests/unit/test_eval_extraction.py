"""Answer extraction (the paper protocol's answer check) on real-looking responses."""

from __future__ import annotations

import pytest

from alloylm.evals.protocol import (
    extract_answer,
    extract_choice,
    extract_number,
    extract_true_false,
    is_correct,
)
from alloylm.evals.tasks import Item, true_false_item

MCQ = Item(
    id="q",
    kind="mcq",
    question="Which?",
    choices=("collagen", "keratin", "elastin", "fibrin"),
    answer_index=2,
)


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("B", 1),
        ("b)", 1),
        (" C.", 2),
        ("The answer is C.", 2),
        ("Answer: (A)", 0),
        ("I think it's (D) because fibrin forms clots", 3),
        ("D) fibrin", 3),
        ("keratin", 1),  # the option's text, named alone
        ("Elastin is the protein that...", 2),
        ("Banana smoothie with extra ice", None),
        ("", None),
        ("I don't know", None),  # "I" is a word, not option I
        ("A protein.", None),  # "A" as an article, no option text named
        ("F", None),  # a letter outside the four options
        ("a", 0),  # a small letter that is the whole reply
        ("The answer is b.", 1),  # a small letter followed by "."
        ("answer: d)", 3),
        ("(b) keratin", 1),
        ("e.g. keratin", 1),  # "e." inside "e.g." is no letter; the option text decides
        ("Both A and B", None),  # two letters: no single option
        ("A or B", None),
        ("C, D", None),
        ("(A) and (B)", None),
        ("The answer is A and B", None),
        ("A and B are wrong; the answer is C", 2),  # an explicit answer outweighs a list
        ("Not true", None),
    ],
)
def test_choice_extraction_table(response, expected):
    assert extract_choice(response, 4, MCQ.choices) == expected


BIOMOLECULES = ("starch", "lipid", "protein", "nucleic acid")


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("The answer is a lipid.", 1),  # the article "a", then option B's text
        ("The answer is a type of sugar", None),  # an article and no option: unparseable
        ("the answer is a protein", 2),
        ("The answer is A.", 0),  # a capital is a letter
        ("The answer is a.", 0),  # a small letter ending the sentence is a letter
        ("The answer is a", 0),  # ... and one ending the reply
        ("Both A and B", None),
        ("Not true", None),
    ],
)
def test_article_a_is_not_option_a(response, expected):
    assert extract_choice(response, 4, BIOMOLECULES) == expected


@pytest.mark.parametrize(
    ("response", "expected"),
    [
        ("True", 0),
        ("false.", 1),
        ("T", 0),
        ("The statement is false", 1),
        ("True or false?", None),
        ("maybe", None),
        ("Not true", 1),  # a negated word is its opposite
        ("not false.", 0),
        ("It isn't true", 1),
        ("True, not false", 0),
    ],
)
def test_true_false_extraction(response, expected):
    assert extract_true_false(response) == expected


def test_numbers_and_ranges():
    numeric = Item(id="n", kind="numeric", question="?", answer_ranges=((0.85, 0.89),))
    assert extract_number("about 0.87 um") == pytest.approx(0.87)
    assert extract_number("1,250 MPa") == pytest.approx(1250)
    assert is_correct(numeric, extract_answer("0.86", numeric))
    assert not is_correct(numeric, extract_answer("0.9", numeric))
    assert not is_correct(numeric, extract_answer("no idea", numeric))


def test_unparseable_counts_as_wrong():
    statement = true_false_item(id="t", question="Silk is a protein.", truth=True)
    assert extract_answer("yes", statement) is None
    assert not is_correct(statement, None)
    assert is_correct(statement, extract_answer("True.", statement))
    assert is_correct(MCQ, extract_answer("The correct answer is C", MCQ))
