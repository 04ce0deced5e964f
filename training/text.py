"""Character tokenizer and the pydoc help-text corpus for the language model (no torch here)."""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, field
from pydoc_data.topics import topics
from typing import Any

import numpy as np

SPECIALS = ("<pad>", "<bos>", "<eos>", "<unk>")
# Printable ASCII (space..~) plus newline: what ordinary prompts contain.
PRINTABLE = ["\n", *[chr(c) for c in range(32, 127)]]
# Typographic characters in the pydoc text, folded to ASCII before tokenizing.
_FOLD = {"\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'", "\u2014": "--", "\u2013": "-",
         "\u2026": "...", "\u00a0": " ", "\t": "    "}  # fmt: skip


@dataclass(frozen=True)
class CharTokenizer:
    """One token per character; token id = index in `vocab`; specials first."""

    vocab: tuple[str, ...]
    special_tokens: dict[str, int]
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {t: i for i, t in enumerate(self.vocab) if i not in self.special_tokens.values()}
        object.__setattr__(self, "_index", index)

    @classmethod
    def with_chars(cls, chars: list[str], specials: tuple[str, ...] = SPECIALS) -> CharTokenizer:
        vocab = (*specials, *chars)
        return cls(vocab, {s.strip("<>"): i for i, s in enumerate(specials)})

    @classmethod
    def from_manifest(cls, spec: dict[str, Any]) -> CharTokenizer:
        return cls(tuple(spec["vocab"]), dict(spec["special_tokens"]))

    def manifest(self) -> dict[str, Any]:
        return {"type": "char", "vocab": list(self.vocab), "special_tokens": dict(self.special_tokens)}

    def __len__(self) -> int:
        return len(self.vocab)

    def id(self, special: str) -> int:
        return self.special_tokens[special]

    def encode(self, text: str) -> list[int]:
        unk = self.special_tokens.get("unk")
        out = []
        for ch in text:
            i = self._index.get(ch, unk)
            if i is None:
                raise ValueError(f"character {ch!r} is not in the vocabulary and there is no unk token")
            out.append(i)
        return out

    def decode(self, ids: list[int] | np.ndarray) -> str:
        specials = set(self.special_tokens.values())
        return "".join(self.vocab[int(i)] for i in ids if int(i) not in specials)


def gpt_tokenizer() -> CharTokenizer:
    return CharTokenizer.with_chars(PRINTABLE)


def normalize(text: str) -> str:
    """Fold typographic punctuation to ASCII and strip accents; other non-ASCII characters are dropped."""
    text = "".join(_FOLD.get(ch, ch) for ch in text)
    return (
        unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
        if not text.isascii()
        else text
    )


@dataclass(frozen=True)
class Corpus:
    train: str
    val: str
    test: str
    val_topics: list[str]
    test_topics: list[str]


def pydoc_corpus(every: int = 10) -> Corpus:
    """The stdlib's pydoc help topics, split by whole topics (sorted keys; every `every`-th is held out).

    Topic k (0-based, in sorted key order) goes to test when k % every == 0, to validation when
    k % every == 5, else to training. Topics are joined with a blank line.
    """
    keys = sorted(topics)
    parts: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    names: dict[str, list[str]] = {"val": [], "test": []}
    for k, key in enumerate(keys):
        part = "test" if k % every == 0 else "val" if k % every == every // 2 else "train"
        parts[part].append(normalize(topics[key]))
        if part != "train":
            names[part].append(key)
    joined = {p: "\n\n".join(texts) for p, texts in parts.items()}
    return Corpus(joined["train"], joined["val"], joined["test"], names["val"], names["test"])


def corpus_from_topics(keys: list[str]) -> str:
    """Re-create a held-out text from its recorded topic keys (what tests use)."""
    return "\n\n".join(normalize(topics[k]) for k in keys)
