"""`python -m training` and the README table it generates."""

from __future__ import annotations

from pathlib import Path

import pytest

from training import readme, zoo
from training.__main__ import main

ROOT = Path(__file__).resolve().parents[2]


def test_list_names_every_zoo_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(e.name in out for e in zoo.ZOO)
    assert len(zoo.ZOO) == 12


def test_the_build_order_puts_every_model_after_what_it_needs() -> None:
    every = [e.name for e in zoo.ZOO]
    order = zoo.build_order(list(reversed(every)))
    assert sorted(order) == sorted(every)
    for entry in zoo.ZOO:
        for need in entry.needs:
            assert order.index(need) < order.index(entry.name), (need, entry.name)
    assert zoo.entries()["digits-gan-discriminator"].needs == ("digits-mlp", "digits-gan-generator")
    # Asked alone, a model comes alone: what it needs must already be in the output repository.
    assert zoo.build_order(["digits-gan-discriminator"]) == ["digits-gan-discriminator"]
    with pytest.raises(KeyError, match="unknown model"):
        zoo.build_order(["nope"])


def test_a_model_whose_needs_are_missing_is_refused_before_training(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError, match="digits-gan-discriminator needs digits-mlp, digits-gan-generator"
    ):
        zoo.build("digits-gan-discriminator", tmp_path, quick=True)
    assert not any(tmp_path.iterdir()), "nothing was trained or written"


def test_unknown_model_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "no-such-model", "--output", str(tmp_path)]) == 2
    assert "no-such-model" in capsys.readouterr().err


def test_readme_zoo_table_is_generated_from_the_committed_manifests() -> None:
    section = readme.zoo_section(ROOT / "models")
    assert section in (ROOT / "README.md").read_text(), "run: python -m training readme --write README.md"
    for e in zoo.ZOO:
        assert f"`{e.name}`" in section


def test_write_section_replaces_only_the_marked_block(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{readme.START}\nold\n{readme.END}\noutro\n")
    readme.write_section(doc, f"{readme.START}\nnew\n{readme.END}")
    assert doc.read_text() == f"intro\n{readme.START}\nnew\n{readme.END}\noutro\n"
