"""Splits are reproducible, held-out data never leaks into training, tokenizers round-trip."""

from __future__ import annotations

import datetime as dt

import numpy as np

from training import dates
from training.datasets import load_tabular, split_indices
from training.text import gpt_tokenizer, normalize, pydoc_corpus


def test_split_is_deterministic_disjoint_and_stratified() -> None:
    data = load_tabular("digits")
    a, b = split_indices(len(data.y), data.y, seed=0), split_indices(len(data.y), data.y, seed=0)
    assert np.array_equal(a.test, b.test) and np.array_equal(a.train, b.train)
    assert not set(a.train) & set(a.test) and not set(a.val) & set(a.test) and not set(a.train) & set(a.val)
    assert len(a.train) + len(a.val) + len(a.test) == len(data.y)
    assert abs(len(a.test) / len(data.y) - 0.2) < 0.01
    assert np.bincount(data.y[a.test]).min() >= 30  # every digit is in the test split
    assert not np.array_equal(split_indices(len(data.y), data.y, seed=1).test, a.test)


def test_tabular_features_are_raw() -> None:
    assert load_tabular("digits").x.max() == 16.0
    assert load_tabular("diabetes").x[:, 0].max() > 50  # age in years, not scikit-learn's scaled version


def test_held_out_dates_never_occur_in_training() -> None:
    days = dates.split_days(seed=0)
    assert not set(days.test) & set(days.train) and not set(days.val) & set(days.train)
    train = dates.examples(days.train, 3000, seed=0)
    test = dates.examples(days.test, 500, seed=2)
    assert not {t for _, t in train} & {t for _, t in test}
    assert dates.examples(days.test, 500, seed=2) == test  # the recorded seed re-creates the same pairs


def test_every_format_is_unambiguous_and_fits_the_tables() -> None:
    tok = dates.tokenizer()
    for day in (dt.date(1950, 1, 1), dt.date(2049, 9, 30), dt.date(2003, 11, 12)):
        rendered = {name: fmt(day) for name, fmt in dates.FORMATS.items()}
        for text in rendered.values():
            assert len(text) <= dates.MAX_SOURCE
            assert tok.decode(tok.encode(text)) == text
    # Day-first and year-first numeric formats are fixed by the format, so 3 May and 5 March differ.
    may3, mar5 = dt.date(2021, 5, 3), dt.date(2021, 3, 5)
    for fmt in dates.FORMATS.values():
        assert fmt(may3) != fmt(mar5)


def test_gpt_vocabulary_covers_printable_ascii_and_newline() -> None:
    tok = gpt_tokenizer()
    text = "".join(chr(c) for c in range(32, 127)) + "\n"
    assert tok.decode(tok.encode(text)) == text
    assert tok.id("unk") not in tok.encode(text)
    assert normalize("\u201cquoted\u201d \u2014 caf\u00e9") == '"quoted" -- cafe'


def test_pydoc_split_holds_out_whole_topics() -> None:
    corpus = pydoc_corpus()
    assert corpus.test_topics and corpus.val_topics
    assert not set(corpus.test_topics) & set(corpus.val_topics)
    assert len(corpus.train) > 5 * (len(corpus.val) + len(corpus.test))
    assert corpus.test[:200] not in corpus.train
