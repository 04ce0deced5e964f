"""What the Locust users send: the payload files in load/payloads/, read once (no numpy, no scikit-learn)."""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

PAYLOAD_DIR = Path(__file__).resolve().parent / "payloads"
# RECAP_LOAD_PAYLOADS points the Locust users at another payload folder (same file format).
PAYLOADS = Path(os.environ.get("RECAP_LOAD_PAYLOADS") or PAYLOAD_DIR)
PROMPTS_FILE = "prompts.json"  # hand-written: the text models' prompts (and greedy answers)
VOCABULARIES_FILE = "vocabularies.json"  # written by make_payloads: what each text model can write
SOFTMAX_TASKS = {"multiclass_classification", "sequence_classification"}
SIGMOID_TASKS = {"binary_classification", "discriminator"}


@dataclass(frozen=True)
class TabularModel:
    """A model fed dataset rows: the classifiers, the sequence classifiers and the regression."""

    name: str
    task: str
    labels: list[str]
    input_name: str
    row_shape: list[int]
    output: str  # the output the checks read: probabilities, or prediction for regression
    rows: list[Any] = field(repr=False)

    @property
    def is_classifier(self) -> bool:
        return self.task in SOFTMAX_TASKS or self.task in SIGMOID_TASKS

    @property
    def softmax(self) -> bool:
        return self.task in SOFTMAX_TASKS

    @property
    def width(self) -> int:
        """Values per row in the checked output: classes for softmax, 1 for sigmoid and regression."""
        return len(self.labels) if self.softmax else 1

    def sample(self, rng: random.Random, max_rows: int) -> list[Any]:
        return rng.sample(self.rows, rng.randint(1, min(max_rows, len(self.rows))))

    def flat(self, rows: list[Any]) -> list[float]:
        """Row-major flattening for a V2 `data` field."""
        out: list[float] = []

        def walk(value: Any) -> None:
            if isinstance(value, list):
                for item in value:
                    walk(item)
            else:
                out.append(value)

        walk(rows)
        return out


@dataclass(frozen=True)
class TextScenario:
    """What the generation scenarios send a text model, and what they accept back.

    With `temperature` 0 (greedy) every prompt has its one right answer in `expected`; sampled text is
    checked for its characters (those the model can write, from model.json) and its length.
    """

    model: str
    prompts: list[str]
    temperature: float
    expected: dict[str, str]  # prompt -> the exact answer (greedy scenarios)
    characters: frozenset[str]  # every character the model can write
    max_tokens: int


def load_models(folder: Path = PAYLOADS) -> list[TabularModel]:
    models = []
    for path in sorted(folder.glob("*.json")):
        if path.name in (PROMPTS_FILE, VOCABULARIES_FILE):
            continue
        raw = json.loads(path.read_text())
        models.append(
            TabularModel(
                name=raw["model"],
                task=raw["task"],
                labels=list(raw["labels"]),
                input_name=raw["input"]["name"],
                row_shape=list(raw["input"]["row_shape"]),
                output=raw["check_output"],
                rows=raw["rows"],
            )
        )
    return models


def load_text_scenarios(folder: Path = PAYLOADS) -> list[TextScenario]:
    raw = json.loads((folder / PROMPTS_FILE).read_text())
    characters = json.loads((folder / VOCABULARIES_FILE).read_text())
    scenarios = []
    for model, spec in sorted(raw["models"].items()):
        prompts = spec["prompts"]
        expected = dict(prompts) if isinstance(prompts, dict) else {}
        scenarios.append(
            TextScenario(
                model=model,
                prompts=list(prompts),
                temperature=float(spec["temperature"]),
                expected=expected,
                characters=frozenset(characters[model]),
                max_tokens=int(raw["max_tokens"]),
            )
        )
    return scenarios
