"""token_id_from_json answers as tokenizers' Tokenizer.token_to_id does, for every model kind it
reads itself (BPE, WordPiece, WordLevel, Unigram) and, through tokenizers, for the others."""

from __future__ import annotations

import json

import pytest
from tokenizers import AddedToken, Tokenizer, models

from alloylm.models.saving import token_id_from_json

VOCAB = {"<unk>": 0, "a": 1, "b": 2, "ab": 3, "<pad>": 4}


def _tokenizers() -> dict[str, Tokenizer]:
    made = {
        "BPE": Tokenizer(models.BPE(vocab=dict(VOCAB), merges=[("a", "b")], unk_token="<unk>")),
        "WordPiece": Tokenizer(models.WordPiece(vocab=dict(VOCAB), unk_token="<unk>")),
        "WordLevel": Tokenizer(models.WordLevel(vocab=dict(VOCAB), unk_token="<unk>")),
        "Unigram": Tokenizer(
            models.Unigram([("<unk>", 0.0), ("a", -1.0), ("b", -2.0), ("ab", -0.5)], 0)
        ),
    }
    for tokenizer in made.values():
        # an added token that is also in the vocabulary keeps its vocabulary id; a new one gets
        # the next id
        tokenizer.add_special_tokens([AddedToken("<pad>", special=True), "<|im_end|>"])
    return made


@pytest.mark.parametrize("kind", ["BPE", "WordPiece", "WordLevel", "Unigram"])
def test_ids_are_those_of_tokenizers(kind, monkeypatch):
    tokenizer = _tokenizers()[kind]
    text = tokenizer.to_str()
    assert json.loads(text)["model"]["type"] == kind
    monkeypatch.setattr(Tokenizer, "from_str", None)  # read from the JSON, never built
    for token in ["<unk>", "a", "ab", "<pad>", "<|im_end|>", "absent", ""]:
        assert token_id_from_json(text, token) == tokenizer.token_to_id(token), token


def test_an_added_token_comes_before_the_vocabulary():
    text = json.dumps(
        {"added_tokens": [{"id": 9, "content": "a"}], "model": {"type": "BPE", "vocab": VOCAB}}
    )
    assert token_id_from_json(text, "a") == 9
    assert token_id_from_json(text, "b") == 2


def test_another_model_kind_is_left_to_tokenizers(monkeypatch):
    text = json.dumps({"added_tokens": [], "model": {"type": "Future", "vocab": VOCAB}})
    asked = []

    class Built:
        def token_to_id(self, token):
            asked.append(token)
            return 7

    monkeypatch.setattr(Tokenizer, "from_str", staticmethod(lambda text: Built()))
    assert token_id_from_json(text, "a") == 7
    assert asked == ["a"]
