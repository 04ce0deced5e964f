"""Write load/payloads/<model>.json: real dataset rows for each tabular/image model the load test hits.

    python -m load.make_payloads [--models models] [--output load/payloads]

Rows are drawn (fixed seed) from the scikit-learn datasets the models were trained on, as raw features:
the models standardise inside the graph. Task, tensor names and labels come from the model's
`model.json` when the repository has it, so the Locust image needs neither scikit-learn nor models/.
Text prompts live in the hand-written `prompts.json` next to them; `vocabularies.json` lists the
characters each text model can write (from its model.json), for the generation checks.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn import datasets

ROWS_PER_MODEL = 32
SEED = 0
HERE = Path(__file__).resolve().parent
REPO = HERE.parent


@dataclass(frozen=True)
class Source:
    loader: str  # sklearn.datasets function
    task: str  # design.md task name, used when model.json is absent
    row_shape: tuple[int, ...]  # one instance's shape, after the batch axis
    output: str  # the output the check reads
    labels: tuple[str, ...] = ()  # used when model.json is absent and the dataset has no class names


SOURCES: dict[str, Source] = {
    "diabetes-linreg": Source("load_diabetes", "regression", (10,), "prediction"),
    "breast-cancer-mlp": Source("load_breast_cancer", "binary_classification", (30,), "probabilities"),
    "iris-mlp": Source("load_iris", "multiclass_classification", (4,), "probabilities"),
    "digits-mlp": Source("load_digits", "multiclass_classification", (64,), "probabilities"),
    "digits-rnn": Source("load_digits", "sequence_classification", (8, 8), "probabilities"),
    "digits-lstm": Source("load_digits", "sequence_classification", (8, 8), "probabilities"),
    "digits-gru": Source("load_digits", "sequence_classification", (8, 8), "probabilities"),
    "digits-transformer": Source("load_digits", "sequence_classification", (8, 8), "probabilities"),
    # P is of labels[1]: a real digit (training/recipes/gan.py writes these labels).
    "digits-gan-discriminator": Source(
        "load_digits", "discriminator", (64,), "probabilities", labels=("generated", "real")
    ),
}


def _dataset(loader: str) -> tuple[np.ndarray, list[str]]:
    # load_diabetes defaults to pre-scaled columns; the models take the raw ones.
    kwargs: dict[str, Any] = {"scaled": False} if loader == "load_diabetes" else {}
    bunch = getattr(datasets, loader)(**kwargs)
    names = [str(n) for n in getattr(bunch, "target_names", [])]
    return np.asarray(bunch.data, dtype=np.float64), names


def _manifest(models: Path, name: str) -> dict[str, Any] | None:
    versions = sorted(
        (int(p.name) for p in (models / name).glob("*") if p.name.isdigit() and (p / "model.json").is_file()),
        reverse=True,
    )
    if not versions:
        return None
    data: dict[str, Any] = json.loads((models / name / str(versions[0]) / "model.json").read_text())
    return data


def build(name: str, source: Source, models: Path) -> dict[str, Any]:
    data, target_names = _dataset(source.loader)
    rng = np.random.default_rng(SEED)
    picked = rng.choice(len(data), size=ROWS_PER_MODEL, replace=False)
    rows = data[np.sort(picked)].reshape((ROWS_PER_MODEL, *source.row_shape))
    manifest = _manifest(models, name)
    labels: list[str] = []
    task, input_name = source.task, "input"
    if manifest is not None:
        task = manifest.get("task", task)
        labels = [str(label) for label in manifest.get("labels") or []]
        input_name = manifest["inputs"][0]["name"]
    elif source.labels:
        labels = list(source.labels)
    elif "classification" in task:
        labels = target_names
    return {
        "model": name,
        "task": task,
        "source": f"sklearn.datasets.{source.loader}()" + (" (scaled=False)" if "diabetes" in name else ""),
        "labels": labels,
        "input": {"name": input_name, "datatype": "FP32", "row_shape": list(source.row_shape)},
        "check_output": source.output,
        "rows": rows.tolist(),
    }


TEXT_MODELS = ("dates-seq2seq", "pydoc-gpt")


def vocabularies(models: Path) -> dict[str, str]:
    """The characters each text model can write: its vocabulary less the special tokens."""
    written = {}
    for name in TEXT_MODELS:
        manifest = _manifest(models, name)
        if manifest is None:
            continue
        tokenizer = manifest["tokenizer"]
        specials = set(tokenizer.get("special_tokens", {}).values())
        written[name] = "".join(sorted(t for i, t in enumerate(tokenizer["vocab"]) if i not in specials))
    return written


def write_all(models: Path, output: Path) -> list[Path]:
    output.mkdir(parents=True, exist_ok=True)
    written = []
    for name, source in SOURCES.items():
        path = output / f"{name}.json"
        path.write_text(json.dumps(build(name, source, models), sort_keys=True) + "\n")
        written.append(path)
    path = output / "vocabularies.json"
    path.write_text(json.dumps(vocabularies(models), indent=2, sort_keys=True, ensure_ascii=False) + "\n")
    written.append(path)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--models", type=Path, default=REPO / "models", help="model repository to read labels from"
    )
    parser.add_argument("--output", type=Path, default=HERE / "payloads", help="folder for the payload files")
    args = parser.parse_args(argv)
    for path in write_all(args.models, args.output):
        print(path)


if __name__ == "__main__":
    main()
