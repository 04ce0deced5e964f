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
PROMPTS_FILE = "prompts.json"
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
class Prompts:
    """Prompts per text model; `max_tokens` keeps each generation short and bounded."""

    by_model: dict[str, list[str]]
    max_tokens: int


def load_models(folder: Path = PAYLOADS) -> list[TabularModel]:
    models = []
    for path in sorted(folder.glob("*.json")):
        if path.name == PROMPTS_FILE:
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


def load_prompts(folder: Path = PAYLOADS) -> Prompts:
    raw = json.loads((folder / PROMPTS_FILE).read_text())
    return Prompts(
        by_model={k: list(v) for k, v in raw["prompts"].items()}, max_tokens=int(raw["max_tokens"])
    )
