import pytest

from service.errors import InvalidInputError
from service.runtime.tokenizer import CharTokenizer

VOCAB = ["<pad>", "<bos>", "<eos>", "a", "b", "c", " ", "-"]
SPECIALS = {"pad": 0, "bos": 1, "eos": 2}


@pytest.fixture
def tok() -> CharTokenizer:
    return CharTokenizer.from_manifest({"type": "char", "vocab": VOCAB, "special_tokens": SPECIALS})


def test_encode_and_token_text_round_trip(tok: CharTokenizer) -> None:
    ids = tok.encode("ab c-a")
    assert ids == [3, 4, 6, 5, 7, 3]
    assert "".join(tok.token_text(i) for i in ids) == "ab c-a"


def test_special_ids(tok: CharTokenizer) -> None:
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.special_id("pad") == 0
    assert tok.special_id("unk") is None


def test_special_tokens_add_no_text(tok: CharTokenizer) -> None:
    assert "".join(tok.token_text(i) for i in [1, 3, 4, 2, 0]) == "ab"


def test_special_token_text_is_plain_characters(tok: CharTokenizer) -> None:
    # "<eos>" typed by a user is five characters, and '<', 'e', ... are not in this vocabulary.
    with pytest.raises(InvalidInputError, match="'<' at position 0"):
        tok.encode("<eos>")


def test_unknown_characters_name_character_and_position(tok: CharTokenizer) -> None:
    with pytest.raises(InvalidInputError) as info:
        tok.encode("abZ c!")
    message = str(info.value)
    assert "2 character(s)" in message
    assert "'Z' at position 2" in message
    assert "'!' at position 5" in message
    assert "expected only these characters" in message


def test_unknown_character_list_is_truncated(tok: CharTokenizer) -> None:
    with pytest.raises(InvalidInputError) as info:
        tok.encode("a" + "X" * 500)
    message = str(info.value)
    assert "(and 495 more)" in message
    assert len(message) < 400  # never echoes a huge payload


def test_an_unk_token_never_replaces_an_unknown_character() -> None:
    tok = CharTokenizer.from_manifest(
        {"type": "char", "vocab": ["<unk>", "a", "b"], "special_tokens": {"unk": 0}}
    )
    with pytest.raises(InvalidInputError, match="'Z' at position 1"):
        tok.encode("aZb")


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"type": "bpe", "vocab": ["a"]}, "unsupported tokenizer type"),
        ({"type": "char", "vocab": "abc"}, "list of strings"),
        ({"type": "char", "vocab": []}, "empty"),
        ({"type": "char", "vocab": ["a"], "special_tokens": {"eos": 5}}, "outside the vocabulary"),
        ({"type": "char", "vocab": ["a"], "special_tokens": {"eos": "x"}}, "integer ids"),
    ],
)
def test_bad_manifests_are_rejected(manifest: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        CharTokenizer.from_manifest(manifest)
