"""Character tokenizer for the zoo's text models, built from model.json's `tokenizer` dict.

The vocabulary is a list of strings whose index is the token id. Single-character entries are the
characters the model can read and write; multi-character entries (``<pad>``, ``<bos>``, ...) are special
tokens named in ``special_tokens``. Text is never parsed for special tokens: ``"<eos>"`` in a prompt is
five characters. A character outside the vocabulary is a domain error naming it and its position (a
clear 400 beats a silently changed prompt).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from service.errors import InvalidInputError

# How many unknown characters an error message names before it truncates.
_MAX_NAMED_UNKNOWN = 5


@dataclass(frozen=True)
class CharTokenizer:
    """Maps text to token ids and back, one character per token."""

    vocab: tuple[str, ...]
    special_tokens: Mapping[str, int] = field(default_factory=dict)
    _index: Mapping[str, int] = field(init=False, repr=False, compare=False)
    _texts: tuple[str, ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.vocab:
            raise ValueError("tokenizer vocabulary is empty")
        specials = set(self.special_tokens.values())
        for name, token_id in self.special_tokens.items():
            if not 0 <= token_id < len(self.vocab):
                raise ValueError(f"special token {name!r} has id {token_id}, outside the vocabulary")
        index: dict[str, int] = {}
        for token_id, token in enumerate(self.vocab):
            # Only ordinary single characters are reachable from text.
            if token_id not in specials and len(token) == 1 and token not in index:
                index[token] = token_id
        object.__setattr__(self, "_index", index)
        # What each token adds to the output text: special tokens add nothing.
        texts = tuple("" if i in specials else token for i, token in enumerate(self.vocab))
        object.__setattr__(self, "_texts", texts)

    @classmethod
    def from_manifest(cls, tokenizer: Mapping[str, Any]) -> CharTokenizer:
        """Build from model.json's ``tokenizer`` dict (``type`` must be ``char``)."""
        kind = tokenizer.get("type", "char")
        if kind != "char":
            raise ValueError(f"unsupported tokenizer type {kind!r}; expected 'char'")
        vocab = tokenizer.get("vocab")
        if not isinstance(vocab, list) or not all(isinstance(t, str) for t in vocab):
            raise ValueError("tokenizer.vocab must be a list of strings")
        specials = tokenizer.get("special_tokens") or {}
        if not isinstance(specials, Mapping) or not all(isinstance(v, int) for v in specials.values()):
            raise ValueError("tokenizer.special_tokens must map names to integer ids")
        return cls(vocab=tuple(vocab), special_tokens=dict(specials))

    def special_id(self, name: str) -> int | None:
        """The id of special token ``name`` (``pad``, ``bos``, ``eos``, ``unk``), or None if absent."""
        return self.special_tokens.get(name)

    @property
    def bos_id(self) -> int | None:
        return self.special_id("bos")

    @property
    def eos_id(self) -> int | None:
        return self.special_id("eos")

    def encode(self, text: str, *, what: str = "text_input") -> list[int]:
        """Token ids for ``text``; unknown characters raise InvalidInputError naming them."""
        index = self._index
        ids: list[int] = []
        unknown: list[tuple[int, str]] = []
        for position, char in enumerate(text):
            token_id = index.get(char)
            if token_id is None:
                unknown.append((position, char))
            else:
                ids.append(token_id)
        if unknown:
            raise InvalidInputError(self._unknown_message(unknown, what))
        return ids

    def token_text(self, token_id: int) -> str:
        """The text one token adds to the output ("" for a special token)."""
        return self._texts[token_id]

    def _unknown_message(self, unknown: list[tuple[int, str]], what: str) -> str:
        shown = ", ".join(f"{char!r} at position {pos}" for pos, char in unknown[:_MAX_NAMED_UNKNOWN])
        more = len(unknown) - _MAX_NAMED_UNKNOWN
        if more > 0:
            shown += f" (and {more} more)"
        known = "".join(sorted(self._index))
        if len(known) > 80:
            known = known[:80] + "..."
        return (
            f"{what} has {len(unknown)} character(s) this model's vocabulary does not contain: {shown}; "
            f"expected only these characters: {known!r}"
        )
